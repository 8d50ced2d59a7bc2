"""Fingers: an SMPL-X source (55 bones, the body as SMPL's) onto rigs with
fingers (a Mixamo BVH rig, Blender's metarig with curled fingers at rest),
and the retargeted fingers through FBX, GLB and BVH.

Checked per frame as Blender evaluates the rigs: every finger segment (joint
to joint) points where the source's does, the palm faces where the source's
does, and the body passes the same anatomy checks as test_retarget_rigs.py.
"""
import bpy
import numpy as np
import pytest

from hybrik_blender.blender.export import export_bvh, export_fbx, export_glb
from hybrik_blender.blender.retarget import retarget, source_kind
from hybrik_blender.core.body.skeleton import FINGERS
from tests.blender import rigs
from tests.blender.test_export import bone_world, deform, max_error
from tests.blender.test_retarget import assert_directions_follow, world_heads

N = 24


def finger_segments(mapping):
    segs = []
    for side in ("left", "right"):
        for f in FINGERS:
            chain = [f"{side}_wrist"] + [f"{side}_{f}{k}" for k in (1, 2, 3)]
            segs += [(a, b) for a, b in zip(chain[1:-1], chain[2:])
                     if a in mapping and b in mapping]
    return segs


def segment_errors(src, tgt, mapping, segs, frames, subframe=0.0):
    names = sorted({n for s in segs for n in s})
    ws = world_heads(src, names, frames, subframe)
    wt = world_heads(tgt, [mapping[n] for n in names], frames, subframe)
    ia = [names.index(a) for a, _ in segs]
    ib = [names.index(b) for _, b in segs]
    ds, dt = ws[:, ib] - ws[:, ia], wt[:, ib] - wt[:, ia]
    return rigs.angle_deg(ds, dt)


def palm_normals(rig, names, frames):
    """Left and right palm normals from wrist, index and little finger bases."""
    out = []
    for side in ("left", "right"):
        h = world_heads(rig, [names[f"{side}_{j}"] for j in ("wrist", "index1", "pinky1")],
                        frames)
        out.append(np.cross(h[:, 1] - h[:, 0], h[:, 2] - h[:, 0]))
    return out


@pytest.fixture
def source(empty_scene):
    rot, root = rigs.smplx_motion(N, seed=4)
    return rigs.smplx_source(rot, root)


@pytest.mark.parametrize("target", ["mixamo", "metarig"])
def test_smplx_fingers_follow(source, target):
    assert source_kind(source) == 'smplx'
    if target == "mixamo":
        tgt, an = rigs.import_bvh("MIXAMO")
        preset = "MIXAMO"
    else:
        tgt, an = rigs.metarig()
        preset = "METARIG"
    rep = retarget(source, tgt)
    assert rep.preset == preset
    segs = finger_segments(rep.mapping)
    assert len(segs) == 20  # 5 fingers x 2 segments x 2 hands
    frames = np.arange(1, N + 1)
    err = segment_errors(source, tgt, rep.mapping, segs, frames)
    assert err.max() < 0.01, f"finger segment off by {err.max():.3f} deg"
    half = segment_errors(source, tgt, rep.mapping, segs, frames[:-1], subframe=0.5)
    assert half.max() < 1.0
    names = {n: n for n in rep.mapping}
    for ps, pt in zip(palm_normals(source, names, frames), palm_normals(tgt, rep.mapping, frames)):
        # palms of other shapes: the normal follows within a few degrees
        assert np.median(rigs.angle_deg(ps, pt)) < 5.0
    assert_directions_follow(source, tgt, rep.mapping, frames, tol=0.01)
    src_an = rigs.Anatomy(hips=("left_hip", "right_hip"),
                          shoulders=("left_shoulder", "right_shoulder"), head="head",
                          face_rest=(0.0, -1.0, 0.0),
                          feet={k: k for k in an.feet}, knees=("left_knee", "right_knee"),
                          standing_height=0.0)
    at = rigs.compare(source, src_an, tgt, an, frames, scale=rep.scale)
    for key in ("hip", "shoulder", "up", "face"):
        assert np.median(at[key]) < 2.0 and at[key].max() < 5.0, key


def test_retargeted_fingers_survive_fbx_glb_bvh(source, tmp_path):
    tgt, _ = rigs.import_bvh("MIXAMO")
    retarget(source, tgt, rotation_mode='QUATERNION')
    sampled = (1, 9, N)
    fingers = [pb.name for pb in tgt.pose.bones if "Hand" in pb.name and pb.name[-1].isdigit()]
    ref = bone_world(tgt, sampled)
    ref_deform = deform(tgt, ref)
    moved = max(float(np.abs(ref[n][1] - ref[n][0]).max()) for n in fingers)
    assert moved > 1.0  # the fingers do move (cm rig)
    fbx = export_fbx(tmp_path / "hands.fbx", tgt, 'GENERIC')
    glb = export_glb(tmp_path / "hands.glb", tgt)
    bvh = export_bvh(tmp_path / "hands.bvh", tgt)
    scale = float(np.linalg.norm(np.array(tgt.matrix_world)[:3, 0]))
    for kind, path in (("FBX", fbx), ("GLB", glb), ("BVH", bvh)):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        if kind == "FBX":
            bpy.ops.import_scene.fbx(filepath=str(path), anim_offset=0.0)
        elif kind == "GLB":
            bpy.ops.import_scene.gltf(filepath=str(path))
        else:
            bpy.ops.import_anim.bvh(filepath=str(path), update_scene_fps=True,
                                    axis_forward='Y', axis_up='Z')
        rig = next(o for o in bpy.context.scene.objects if o.type == 'ARMATURE')
        got = bone_world(rig, sampled)
        names = [n for n in fingers if n in got]
        assert len(names) == len(fingers), kind
        if kind == "BVH":  # BVH keeps joints, not bone axes: compare deform transforms
            got = deform(rig, got)
            rot = max(float(np.abs(ref_deform[n][:, :3, :3] - got[n][:, :3, :3]).max())
                      for n in names)
            pos = max(float(np.abs(ref_deform[n][:, :3, 3] - got[n][:, :3, 3]).max())
                      for n in names)
            assert rot < 1e-3 and pos < 1e-3 * 100 * scale, (kind, rot, pos)
            err = rot
        else:
            err = max_error(ref, got, names)
            assert err < 1e-3, (kind, err)
        print(f"{kind}: finger bones within {err:.2e}")


@pytest.mark.parametrize("target", ["mixamo", "metarig"])
def test_real_smplx_character_onto_finger_rigs(empty_scene, smplx_model, target):
    """The add-on's own SMPL-X character (an SMPL-X take with hands, jaw,
    eyes and expressions) as the source."""
    from hybrik_blender.blender.animation import import_result
    from hybrik_blender.core.rotations import axis_angle_to_matrix
    from tests.helpers import make_smplx_result
    rot, _ = rigs.smplx_motion(N, seed=6)  # lively: limbs 0.5 rad, spine/collars 0.15
    rot[:, 0] = axis_angle_to_matrix(np.array([np.pi, 0.0, 0.0])) @ rot[:, 0]  # upright
    take = import_result(make_smplx_result(rot, seed=2), smplx_model, pose_correctives=False,
                         camera=False)
    assert source_kind(take.rig) == 'smplx'
    tgt, an = rigs.import_bvh("MIXAMO") if target == "mixamo" else rigs.metarig()
    rep = retarget(take.rig, tgt)
    frames = np.arange(rep.frame_start, rep.frame_end + 1)
    segs = finger_segments(rep.mapping)
    assert len(segs) == 20
    err = segment_errors(take.rig, tgt, rep.mapping, segs, frames)
    assert err.max() < 0.01, err.max()
    assert_directions_follow(take.rig, tgt, rep.mapping, frames, tol=0.01)
    src_an = rigs.smpl_anatomy(take.rig, take.mesh, feet=list(an.feet))
    if an.standing_height is None:
        mw = np.array(tgt.matrix_world)
        stand = min((mw @ np.append(tgt.data.bones[b].head_local, 1.0))[2]
                    for b in an.feet.values()) - mw[2, 3]
    else:
        stand = an.foot_height_world(tgt)
    at = rigs.compare(take.rig, src_an, tgt, an, frames, scale=rep.scale,
                      src_stand=src_an.standing_height, tgt_stand=stand)
    for key in ("hip", "shoulder", "up", "face"):
        assert np.median(at[key]) < 2.0 and at[key].max() < 5.0, key
    assert at["foot"].max() < 0.02
