"""Bone maps, detection, JSON maps and the numpy retarget solve (no Blender)."""
import json

import numpy as np
import pytest

from hybrik_blender.core.retarget import solve as rt
from hybrik_blender.core.blender_space import homogeneous
from hybrik_blender.core.rotations import axis_angle_to_matrix, rotation_angle
from hybrik_blender.core.body.skeleton import JOINT_NAMES, PARENTS

MIXAMO_BONES = ["Hips", "Spine", "Spine1", "Spine2", "Neck", "Head", "HeadTop_End"] + [
    f"{s}{b}" for s in ("Left", "Right") for b in
    ("Shoulder", "Arm", "ForeArm", "Hand", "HandIndex1", "UpLeg", "Leg", "Foot", "ToeBase")]
UE5_BONES = ["root", "pelvis", "spine_01", "spine_02", "spine_03", "spine_04", "spine_05",
             "neck_01", "neck_02", "head"] + [
    f"{b}_{s}" for s in "lr" for b in ("clavicle", "upperarm", "lowerarm", "hand", "thigh",
                                       "calf", "foot", "ball", "upperarm_twist_01")]
UE4_BONES = [b for b in UE5_BONES if b not in ("spine_04", "spine_05", "neck_02")]
METARIG_BONES = ["spine", "spine.001", "spine.002", "spine.003", "spine.004", "spine.005",
                 "spine.006", "pelvis.L", "pelvis.R"] + [
    f"{b}.{s}" for s in "LR" for b in ("shoulder", "upper_arm", "forearm", "hand", "thigh",
                                       "shin", "foot", "toe", "heel.02")]
RIGIFY_BONES = (["root", "torso", "hips", "chest", "neck", "head", "spine_fk", "spine_fk.001",
                 "spine_fk.002", "spine_fk.003", "MCH-spine", "ORG-spine"]
                + ["DEF-" + b for b in METARIG_BONES if not b.startswith("spine.00")]
                + ["DEF-spine"] + [f"DEF-spine.00{i}" for i in range(1, 7)]
                + [f"{b}.{s}" for s in "LR" for b in ("shoulder", "upper_arm_fk", "forearm_fk",
                                                      "hand_fk", "thigh_fk", "shin_fk",
                                                      "foot_fk", "toe_fk", "upper_arm_ik",
                                                      "hand_ik", "foot_ik", "upper_arm_tweak")])
VROID_BONES = ["Root", "J_Bip_C_Hips", "J_Bip_C_Spine", "J_Bip_C_Chest", "J_Bip_C_UpperChest",
               "J_Bip_C_Neck", "J_Bip_C_Head"] + [
    f"J_Bip_{s}_{b}" for s in "LR" for b in ("Shoulder", "UpperArm", "LowerArm", "Hand",
                                            "UpperLeg", "LowerLeg", "Foot", "ToeBase")]


@pytest.mark.parametrize("prefix", ["", "mixamorig:", "mixamorig1:", "mixamorig12:"])
def test_mixamo_any_prefix(prefix):
    names = [prefix + n for n in MIXAMO_BONES]
    preset, mapping = rt.detect_preset(names)
    assert preset == "MIXAMO"
    assert mapping["pelvis"] == prefix + "Hips" and mapping["left_foot"] == prefix + "LeftToeBase"
    assert mapping["spine3"] == prefix + "Spine2" and len(mapping) == 22


@pytest.mark.parametrize("names, preset, spine", [
    (UE5_BONES, "UE5", ("spine_01", "spine_03", "spine_05")),
    (UE4_BONES, "UE4", ("spine_01", "spine_02", "spine_03")),
    (METARIG_BONES, "METARIG", ("spine.001", "spine.002", "spine.003")),
    (VROID_BONES, "VRM", ("J_Bip_C_Spine", "J_Bip_C_Chest", "J_Bip_C_UpperChest")),
    (list(JOINT_NAMES), "SMPL", ("spine1", "spine2", "spine3")),
])
def test_detection_and_spine_skipping(names, preset, spine):
    found, mapping = rt.detect_preset(names)
    assert found == preset
    assert tuple(mapping[k] for k in ("spine1", "spine2", "spine3")) == spine
    assert all(b in mapping for b in rt.CORE_BONES)
    assert len(set(mapping.values())) == len(mapping)


def test_rigify_deform_and_fk_presets():
    deform = rt.resolve_preset("RIGIFY_DEF", RIGIFY_BONES)
    assert deform["left_shoulder"] == "DEF-upper_arm.L" and deform["pelvis"] == "DEF-spine"
    assert deform["head"] == "DEF-spine.006" and len(deform) == 22
    fk = rt.resolve_preset("RIGIFY_FK", RIGIFY_BONES)
    assert fk["left_shoulder"] == "upper_arm_fk.L" and fk["pelvis"] == "torso"
    assert fk["right_foot"] == "toe_fk.R" and "spine1" not in fk  # skipped spine bone
    old = [n.replace("toe_fk", "toe") for n in RIGIFY_BONES]
    assert rt.resolve_preset("RIGIFY_FK", old)["left_foot"] == "toe.L"
    # a generated Rigify rig carries both: auto-detection takes a complete map
    preset, mapping = rt.detect_preset(RIGIFY_BONES)
    assert preset in ("RIGIFY_DEF", "RIGIFY_FK") and len(mapping) >= 21


def test_unknown_rig_is_not_guessed():
    assert rt.detect_preset(["Bone", "Bone.001", "Hips"]) == (None, {})
    with pytest.raises(rt.BoneMapError, match="unknown"):
        rt.resolve_preset("BLENDER2", MIXAMO_BONES)


def test_vrm_humanoid_data_beats_names():
    humanoid = {vid: f"node{i}" for i, (vid,) in enumerate(rt.VRM_HUMAN_BONES.values())}
    preset, mapping = rt.detect_preset(MIXAMO_BONES, humanoid)
    assert preset == "VRM"
    assert mapping["pelvis"] == humanoid["hips"]
    assert mapping["left_foot"] == humanoid["left_toes"]
    partial = {"hips": "a", "spine": "b"}
    assert rt.detect_preset(MIXAMO_BONES, partial)[0] == "MIXAMO"


def test_json_round_trip_and_errors(tmp_path):
    mapping = rt.resolve_preset("MIXAMO", ["mixamorig:" + n for n in MIXAMO_BONES])
    path = tmp_path / "map.json"
    rt.save_map(path, mapping, name="my rig")
    doc = json.loads(path.read_text())
    assert doc["format"] == rt.MAP_FORMAT and doc["version"] == 1
    assert list(doc["bones"]) == [n for n in JOINT_NAMES if n in mapping]
    assert rt.load_map(path) == ("my rig", mapping)
    # a plain object is accepted; empty targets mean "not mapped"
    assert rt.map_from_json('{"pelvis": "Hips", "head": ""}') == ("custom", {"pelvis": "Hips"})
    for text, msg in [("{", "not valid JSON"), ('["Hips"]', "JSON object"),
                      ('{"hip": "Hips"}', "not an SMPL bone"),
                      ('{"pelvis": 3}', "must be a bone name"),
                      ('{"pelvis": "Hips", "spine1": "Hips"}', "mapped twice"),
                      ('{"format": "other", "bones": {}}', "not a bone map"),
                      ('{"version": 9, "bones": {}}', "newer")]:
        with pytest.raises(rt.BoneMapError, match=msg):
            rt.map_from_json(text)
    with pytest.raises(rt.BoneMapError, match="no bone named"):
        rt.check_map({"pelvis": "Hips"}, ["hips"])


def test_euler_orders_round_trip():
    rng = np.random.default_rng(0)
    for order in rt.EULER_ORDERS:
        angles = rng.uniform(-1.3, 1.3, (50, 3))
        m = rt.euler_to_matrix(angles, order)
        assert np.allclose(rt.euler_to_matrix(rt.matrix_to_euler(m, order), order), m,
                           atol=1e-12)
        # X applied first for 'XYZ'-style orders: R = R_last @ R_mid @ R_first
        axis = "XYZ".index(order[0])
        first = rt.euler_to_matrix(angles * (np.arange(3) == axis), order)
        assert np.allclose(first[:, axis, axis], 1.0)
    spin = axis_angle_to_matrix(np.linspace(0, 6 * np.pi, 200)[:, None] * [0, 0, 1.0])
    e = rt.continuous_euler(spin, "XYZ")
    assert np.abs(np.diff(e, axis=0)).max() < 0.2


def test_swing_is_minimal_and_handles_opposites():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(100, 3))
    b = rng.normal(size=(100, 3))
    a[0], b[0] = [0, 0, 1], [0, 0, -1]
    a[1], b[1] = [1, 0, 0], [1, 0, 0]
    r = rt.swing(a, b)
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    assert np.allclose(np.einsum("nij,nj->ni", r, an), bn, atol=1e-9)
    assert np.allclose(np.linalg.det(r), 1.0)
    assert np.allclose(rotation_angle(r), np.degrees(0) + rt.angle_between(an, bn), atol=1e-7)


def _chain_skeleton(names, heads, tails, parents, roll_axis, world=None):
    """Rest matrices for bones along head->tail with the bone's X axis set
    from roll_axis (any roll)."""
    rest = []
    for h, t, r in zip(heads, tails, roll_axis):
        y = (t - h) / np.linalg.norm(t - h)
        x = r - (r @ y) * y
        x /= np.linalg.norm(x)
        rest.append(homogeneous(np.stack([x, y, np.cross(x, y)], 1), h))
    return rt.Skeleton(names, parents, np.array(rest), world)


def _smpl_like(rng, apose=0.0, scale=1.0, world=None, roll_seed=None, names=JOINT_NAMES):
    base = rng.normal(0, 0.3, (24, 3)) * scale
    heads = np.zeros((24, 3))
    for i in range(1, 24):
        heads[i] = heads[PARENTS[i]] + base[i]
    tails = heads + rng.normal(0, 0.2, (24, 3))
    rolls = np.random.default_rng(roll_seed).normal(size=(24, 3))
    return _chain_skeleton(names, heads, tails, PARENTS, rolls, world)


def test_solve_follows_directions_for_any_roll_and_rest():
    rng = np.random.default_rng(3)
    src = _smpl_like(rng, roll_seed=1)
    tgt_world = homogeneous(0.01 * axis_angle_to_matrix(np.array([np.pi / 2, 0, 0])),
                            [1.0, 2.0, 0.0])
    target_names = [f"T_{n}" for n in JOINT_NAMES]
    tgt = _smpl_like(np.random.default_rng(4), world=tgt_world, roll_seed=2,
                     names=target_names)
    n = 30
    aa = np.random.default_rng(5).normal(0, 0.6, (n, 24, 3))
    basis = homogeneous(axis_angle_to_matrix(aa))
    basis[:, 0, :3, 3] = np.random.default_rng(6).normal(0, 0.5, (n, 3))
    mapping = {s: f"T_{s}" for s in JOINT_NAMES if s not in ("spine2", "left_hand")}
    sol = rt.solve(src, basis, tgt, mapping)
    # evaluate the target with the solved channels, unmapped bones at rest
    tb = np.broadcast_to(np.eye(4), (n, 24, 4, 4)).copy()
    for k, name in enumerate(sol.bones):
        tb[:, tgt.index[name], :3, :3] = sol.rotations[:, k]
    tb[:, tgt.index[sol.root_bone], :3, 3] = sol.root_location
    tw = tgt.world @ rt.forward_pose(tgt.rest, tgt.parents, tb)
    sw = src.world @ rt.forward_pose(src.rest, src.parents, basis)
    for s, t in mapping.items():
        err = rt.angle_between(rt.bone_directions(sw[:, src.index[s]]),
                               rt.bone_directions(tw[:, tgt.index[t]]))
        assert np.degrees(err).max() < 1e-6, s
    # quaternions match the rotations and never flip
    q = sol.quaternions
    assert np.all(np.sum(q[1:] * q[:-1], -1) > 0)
    # root: displacement from rest scaled by the leg-length ratio
    ratio = rt.leg_length(tgt, mapping) / rt.leg_length(src, {k: k for k in mapping})
    assert sol.scale == pytest.approx(ratio)
    p_t = tw[:, tgt.index["T_pelvis"], :3, 3]
    p_s = sw[:, 0, :3, 3]
    assert np.allclose(p_t - (tgt.world @ tgt.rest[tgt.index["T_pelvis"]])[:3, 3],
                       ratio * (p_s - src.rest[0, :3, 3]), atol=1e-9)


def test_solve_with_no_common_bones_fails():
    rng = np.random.default_rng(0)
    src = _smpl_like(rng)
    with pytest.raises(rt.BoneMapError, match="no bone"):
        rt.solve(src, np.broadcast_to(np.eye(4), (2, 24, 4, 4)), src, {"pelvis": "nope"})


def test_topological_order_puts_parents_first():
    parents = np.array([2, -1, 1, 0])
    order = list(rt.topological_order(parents))
    assert all(order.index(p) < order.index(i) for i, p in enumerate(parents) if p >= 0)
    with pytest.raises(ValueError, match="cycle"):
        rt.topological_order(np.array([1, 0]))
