"""Retargeting onto rigs that were not built from SMPL, checked by anatomy.

Rigs: BVH text in the layouts big libraries write (Mixamo with fingers,
LaFAN1 with every bone along +X, Hips/Chest/LeftCollar, Rigify names in
metres), in centimetres and metres, imported with Blender's own BVH
importer; the same with random bone rolls and an object transform;
Blender's human metarig, and the rig Rigify generates from it (its FK
controls driven, the result read on its ORG and on its DEF bones); rigs.py
says how each is made.

Per frame, on source and target as Blender evaluates them: hip line,
shoulder line, torso up (mid-hips to mid-shoulders) and head facing within
2 degrees median and 5 degrees max, and the lowest foot point within 2% of
the target's leg length of the scaled source (each above its own standing
height). Halfway between frames the limbs point where the source's do
within 1 degree, and the anatomy errors stay within 1 degree of those at the
frames around. The source motions: the synthetic walk of the clean-up tests
and a lively random motion (limbs swinging 0.7 rad, spine and collars
0.15). ``-s`` prints the per-rig table.
"""
import dataclasses

import bpy
import numpy as np
import pytest

from hybrik_blender.blender.animation import import_result
from hybrik_blender.blender.retarget import retarget
from hybrik_blender.core import rotations
from hybrik_blender.core.motion.synthetic import walk_cycle
from tests.blender import rigs
from tests.blender.test_retarget import assert_directions_follow
from tests.helpers import make_result

MEDIAN_DEG, MAX_DEG, FOOT_FRACTION, HALF_DEG = 2.0, 5.0, 0.02, 1.0
MIXAMO_FBX_WORLD = np.array([[0.01, 0, 0, 0.4], [0, 0, -0.01, -0.3], [0, 0.01, 0, 0.0],
                             [0, 0, 0, 1.0]])

RIGS = {
    "mixamo_cm": dict(layout="MIXAMO", preset="MIXAMO"),
    "mixamo_m_rolls_object": dict(layout="MIXAMO", units="m", preset="MIXAMO", rolls=5,
                                  world=MIXAMO_FBX_WORLD * [[100], [100], [100], [1]]),
    "mixamo_cm_fbx_object": dict(layout="MIXAMO", preset="MIXAMO", rolls=6,
                                 world=MIXAMO_FBX_WORLD),
    "lafan1_cm": dict(layout="LAFAN1", preset="LAFAN1"),
    "lafan1_m": dict(layout="LAFAN1", units="m", preset="LAFAN1"),
    "mocap_cm": dict(layout="MOCAP", preset="BVH_MOCAP"),
    "mocap_m": dict(layout="MOCAP", units="m", preset="BVH_MOCAP"),
    "rigify_names_m": dict(layout="RIGIFY_BVH", preset="METARIG"),
    "metarig": dict(layout=None, preset="METARIG"),
}
TABLE = {}


def lively_result(n=40, seed=3):
    """A lively random clip: limbs swinging 0.7 rad, spine and collars 0.15."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)[:, None, None]
    spread = np.full(24, 0.7)
    spread[[3, 6, 9, 12, 13, 14]] = 0.15
    spread[15] = 0.3
    a, b = rng.normal(0, 1, (2, 1, 24, 3)) * spread[None, :, None]
    rot = rotations.axis_angle_to_matrix(a + (b - a) * t)
    rot[:, 0] = rotations.axis_angle_to_matrix(np.array([np.pi, 0.0, 0.0])) @ rot[:, 0]
    return make_result(rot, seed=2)


@pytest.fixture(scope="module")
def motions(body_model):
    walk = walk_cycle(body_model, num_frames=45)
    return {"walk": dataclasses.replace(walk.result, camera_to_world=walk.camera_to_world),
            "lively": lively_result()}


def build_target(spec):
    if spec["layout"] is None:
        rig, an = rigs.metarig()
        mw = np.array(rig.matrix_world)
        stand = min((mw @ np.append(rig.data.bones[n].head_local, 1.0))[2]
                    for n in an.feet.values()) - mw[2, 3]
        return rig, an, stand
    rig, an = rigs.import_bvh(spec["layout"], units=spec.get("units"))
    if spec.get("rolls") is not None:
        rigs.set_rolls(rig, seed=spec["rolls"])
    if spec.get("world") is not None:
        rigs.to_fbx_axes(rig, spec["world"])
    return rig, an, an.foot_height_world(rig)


def measure(src, src_an, tgt, tgt_an, rep, src_stand, tgt_stand):
    frames = np.arange(rep.frame_start, rep.frame_end + 1)
    kw = dict(scale=rep.scale, src_stand=src_stand, tgt_stand=tgt_stand)
    at = rigs.compare(src, src_an, tgt, tgt_an, frames, **kw)
    half = rigs.compare(src, src_an, tgt, tgt_an, frames[:-1], subframe=0.5, **kw)
    return at, half


@pytest.mark.parametrize("motion", ["walk", "lively"])
@pytest.mark.parametrize("name", sorted(RIGS))
def test_anatomy_follows_on_real_rigs(empty_scene, body_model, motions, name, motion):
    spec = RIGS[name]
    take = import_result(motions[motion], body_model, pose_correctives=False, camera=False)
    tgt, tgt_an, tgt_stand = build_target(spec)
    src_an = rigs.smpl_anatomy(take.rig, take.mesh, feet=list(tgt_an.feet))
    rep = retarget(take.rig, tgt)
    assert rep.preset == spec["preset"]
    at, half = measure(take.rig, src_an, tgt, tgt_an, rep, src_an.standing_height, tgt_stand)
    row = {}
    for key in ("hip", "shoulder", "up", "face"):
        med, mx = float(np.median(at[key])), float(np.max(at[key]))
        row[key] = (med, mx)
        assert med < MEDIAN_DEG and mx < MAX_DEG, f"{key}: median {med:.2f}, max {mx:.2f} deg"
        around = 0.5 * (at[key][:-1] + at[key][1:])
        drift = float(np.max(np.abs(half[key] - around)))
        assert drift < HALF_DEG, f"{key} halfway between frames: {drift:.2f} deg off"
        row[key + "_half"] = drift
    foot = float(np.max(at["foot"]))
    row["foot"] = foot
    assert foot < FOOT_FRACTION, f"lowest foot off by {100 * foot:.2f}% of the leg length"
    frames = np.arange(rep.frame_start, rep.frame_end + 1)
    assert_directions_follow(take.rig, tgt, rep.mapping, frames, tol=0.01)
    row["limbs_half"] = assert_directions_follow(take.rig, tgt, rep.mapping, frames[:-1],
                                                 subframe=0.5, tol=HALF_DEG)
    TABLE[(name, motion)] = row


def test_rigify_generated_rig(empty_scene, body_model):
    """The rig Rigify generates from the metarig: constraints and drivers
    everywhere, so the FK controls are keyed through Blender's own bake;
    the anatomy is read on the ORG bones (what the controls drive) and on
    the DEF bones (what deforms the mesh)."""
    take = import_result(lively_result(n=14), body_model, pose_correctives=False,
                         camera=False)
    tgt, _ = rigs.rigify_generated()
    if tgt is None:
        pytest.skip("this bpy cannot generate a Rigify rig")
    rep = retarget(take.rig, tgt)
    assert rep.preset == "RIGIFY_FK"
    assert all(not tgt.pose.bones[b].constraints for b in rep.mapping.values())
    # the limbs are switched to FK in the new action
    assert all(pb["IK_FK"] == 1.0 for pb in tgt.pose.bones if "IK_FK" in pb.keys())
    mw = np.array(tgt.matrix_world)
    for prefix in ("ORG-", "DEF-"):
        an = rigs.rigify_generated_anatomy(prefix)
        stand = min((mw @ np.append(tgt.data.bones[n].head_local, 1.0))[2]
                    for n in an.feet.values()) - mw[2, 3]
        src_an = rigs.smpl_anatomy(take.rig, take.mesh, feet=list(an.feet))
        at, half = measure(take.rig, src_an, tgt, an, rep, src_an.standing_height, stand)
        row = {}
        for key in ("hip", "shoulder", "up", "face"):
            med, mx = float(np.median(at[key])), float(np.max(at[key]))
            row[key] = (med, mx)
            assert med < MEDIAN_DEG and mx < MAX_DEG, f"{prefix}{key}: {med:.2f} / {mx:.2f}"
            around = 0.5 * (at[key][:-1] + at[key][1:])
            assert np.max(np.abs(half[key] - around)) < HALF_DEG, key
        row["foot"] = float(np.max(at["foot"]))
        assert row["foot"] < FOOT_FRACTION
        row["limbs_half"] = float("nan")
        TABLE[(f"rigify_generated ({prefix[:-1]} bones)", "lively")] = row


def test_print_anatomy_table():
    if not TABLE:
        pytest.skip("no rig measured")
    print("\n| rig | motion | hip line | shoulder line | torso up | head facing | "
          "lowest foot | limbs halfway |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, motion), r in sorted(TABLE.items()):
        cells = [f"{r[k][0]:.2f} / {r[k][1]:.2f}" for k in ("hip", "shoulder", "up", "face")]
        print(f"| {name} | {motion} | " + " | ".join(cells) +
              f" | {100 * r['foot']:.2f}% | {r['limbs_half']:.3f} |")
    print("(degrees, median / max per frame; lowest foot: max error in % of leg length; "
          "limbs halfway: max degrees at half frames)")


def test_unmapped_bones_keep_rest_whatever_the_pose(empty_scene, body_model, motions):
    """Fingers, eyes and the head-top joint of a Mixamo BVH rig left in a
    bent pose come back to their rest relation to their parents."""
    take = import_result(motions["walk"], body_model, pose_correctives=False, camera=False)
    tgt, _ = rigs.import_bvh("MIXAMO")  # left in the BVH's bent last frame
    bent = [pb.name for pb in tgt.pose.bones if "Hand" in pb.name and pb.name[-1].isdigit()]
    assert any(np.abs(np.array(tgt.pose.bones[n].rotation_euler)).max() > 0.05 for n in bent)
    rep = retarget(take.rig, tgt)
    for f in (rep.frame_start, rep.frame_end):
        bpy.context.scene.frame_set(f)
        for n in bent + ["mixamorig:HeadTop_End", "mixamorig:LeftEye"]:
            pb = tgt.pose.bones[n]
            rel = np.linalg.inv(np.array(pb.parent.matrix)) @ np.array(pb.matrix)
            rest = np.linalg.inv(np.array(pb.parent.bone.matrix_local)) @ np.array(
                pb.bone.matrix_local)
            assert np.allclose(rel, rest, atol=1e-4), n
