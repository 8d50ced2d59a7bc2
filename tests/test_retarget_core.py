"""Bone maps, detection, validation, JSON maps, map guessing, Euler curves and
the numpy retarget solve (no Blender)."""
import json
import os

import numpy as np
import pytest

from hybrik_blender.core.blender_space import SMPL_TO_BLENDER, homogeneous, rest_bones
from hybrik_blender.core.body.model import body_model_from_arrays, rest_joints_29
from hybrik_blender.core.body.skeleton import (JOINT_NAMES, PARENTS, SMPLX_JOINT_NAMES,
                                               SMPLX_PARENTS)
from hybrik_blender.core.retarget import euler, guess, maps
from hybrik_blender.core.retarget import solve as rt
from hybrik_blender.core.rotations import axis_angle_to_matrix, rotation_angle
from tests.conftest import DATA, synthetic_arrays

MIXAMO_BONES = ["Hips", "Spine", "Spine1", "Spine2", "Neck", "Head", "HeadTop_End"] + [
    f"{s}{b}" for s in ("Left", "Right") for b in
    ("Shoulder", "Arm", "ForeArm", "Hand", "UpLeg", "Leg", "Foot", "ToeBase")]
MIXAMO_FINGERS = [f"{s}Hand{f}{k}" for s in ("Left", "Right")
                  for f in ("Thumb", "Index", "Middle", "Ring", "Pinky") for k in (1, 2, 3)]
UE5_BONES = ["root", "pelvis", "spine_01", "spine_02", "spine_03", "spine_04", "spine_05",
             "neck_01", "neck_02", "head"] + [
    f"{b}_{s}" for s in "lr" for b in ("clavicle", "upperarm", "lowerarm", "hand", "thigh",
                                       "calf", "foot", "ball", "upperarm_twist_01")] + [
    f"{f}_0{k}_{s}" for s in "lr" for f in ("thumb", "index", "middle", "ring", "pinky")
    for k in (1, 2, 3)]
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
                                            "UpperLeg", "LowerLeg", "Foot", "ToeBase")] + [
    f"J_Bip_{s}_{f}{k}" for s in "LR" for f in ("Thumb", "Index", "Middle", "Ring", "Little")
    for k in (1, 2, 3)]
LAFAN1_BONES = ["Hips", "Spine", "Spine1", "Spine2", "Neck", "Head"] + [
    f"{s}{b}" for s in ("Left", "Right") for b in
    ("Shoulder", "Arm", "ForeArm", "Hand", "UpLeg", "Leg", "Foot", "Toe")]
MOCAP_BONES = ["Hips", "Chest", "Chest2", "Neck", "Head"] + [
    f"{s}{b}" for s in ("Left", "Right") for b in
    ("Collar", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle")]


# --- presets and detection --------------------------------------------------

@pytest.mark.parametrize("prefix", ["", "mixamorig:", "mixamorig1:", "mixamorig12:"])
def test_mixamo_any_prefix(prefix):
    names = [prefix + n for n in MIXAMO_BONES + MIXAMO_FINGERS]
    preset, mapping = maps.detect_preset(names)
    assert preset == "MIXAMO"
    assert mapping["pelvis"] == prefix + "Hips" and mapping["left_foot"] == prefix + "LeftToeBase"
    assert mapping["spine3"] == prefix + "Spine2" and len(mapping) == 22 + 30
    assert mapping["left_thumb1"] == prefix + "LeftHandThumb1"
    assert mapping["right_pinky3"] == prefix + "RightHandPinky3"


@pytest.mark.parametrize("names, preset, spine", [
    (UE5_BONES, "UE5", ("spine_01", "spine_03", "spine_05")),
    (UE4_BONES, "UE4", ("spine_01", "spine_02", "spine_03")),
    (METARIG_BONES, "METARIG", ("spine.001", "spine.002", "spine.003")),
    (VROID_BONES, "VRM", ("J_Bip_C_Spine", "J_Bip_C_Chest", "J_Bip_C_UpperChest")),
    (LAFAN1_BONES, "LAFAN1", ("Spine", "Spine1", "Spine2")),
    (list(JOINT_NAMES), "SMPL", ("spine1", "spine2", "spine3")),
    (list(SMPLX_JOINT_NAMES), "SMPL", ("spine1", "spine2", "spine3")),
])
def test_detection_and_spine_skipping(names, preset, spine):
    found, mapping = maps.detect_preset(names)
    assert found == preset
    assert tuple(mapping[k] for k in ("spine1", "spine2", "spine3")) == spine
    assert all(b in mapping for b in maps.CORE_BONES)
    assert len(set(mapping.values())) == len(mapping)


def test_finger_presets():
    ue = maps.resolve_preset("UE5", UE5_BONES)
    assert ue["left_index1"] == "index_01_l" and ue["right_thumb3"] == "thumb_03_r"
    vrm = maps.resolve_preset("VRM", VROID_BONES)
    assert vrm["left_pinky2"] == "J_Bip_L_Little2" and vrm["right_thumb1"] == "J_Bip_R_Thumb1"
    names = METARIG_BONES + [f"{f}.0{k}.{s}" for s in "LR" for k in (1, 2, 3)
                             for f in ("thumb", "f_index", "f_middle", "f_ring", "f_pinky")]
    meta = maps.resolve_preset("METARIG", names)
    assert meta["left_ring2"] == "f_ring.02.L" and meta["left_thumb1"] == "thumb.01.L"
    deform = maps.resolve_preset("RIGIFY_DEF", ["DEF-" + n for n in names])
    assert deform["right_middle3"] == "DEF-f_middle.03.R"
    assert {maps.VRM_HUMAN_BONES[f"left_{f}1"][0] for f in ("thumb", "pinky")} == {
        "left_thumb_metacarpal", "left_little_proximal"}


def test_lafan1_and_mocap_presets():
    preset, mapping = maps.detect_preset(LAFAN1_BONES)
    assert preset == "LAFAN1" and mapping["left_foot"] == "LeftToe"
    # Mixamo's preset takes LaFAN1's toes too when asked for
    assert maps.resolve_preset("MIXAMO", LAFAN1_BONES)["right_foot"] == "RightToe"
    preset, mapping = maps.detect_preset(MOCAP_BONES)
    assert preset == "BVH_MOCAP"
    assert mapping["left_shoulder"] == "LeftShoulder" and mapping["left_collar"] == "LeftCollar"
    assert mapping["left_hip"] == "LeftHip" and mapping["left_elbow"] == "LeftElbow"


def test_rigify_deform_and_fk_presets():
    deform = maps.resolve_preset("RIGIFY_DEF", RIGIFY_BONES)
    assert deform["left_shoulder"] == "DEF-upper_arm.L" and deform["pelvis"] == "DEF-spine"
    assert deform["head"] == "DEF-spine.006" and len(deform) == 22
    fk = maps.resolve_preset("RIGIFY_FK", RIGIFY_BONES)
    assert fk["left_shoulder"] == "upper_arm_fk.L" and fk["pelvis"] == "torso"
    assert fk["right_foot"] == "toe_fk.R" and "spine1" not in fk  # skipped spine bone
    old = [n.replace("toe_fk", "toe") for n in RIGIFY_BONES]
    assert maps.resolve_preset("RIGIFY_FK", old)["left_foot"] == "toe.L"
    preset, mapping = maps.detect_preset(RIGIFY_BONES)
    assert preset in ("RIGIFY_DEF", "RIGIFY_FK") and len(mapping) >= 21


def test_unknown_rig_is_not_guessed_by_name():
    assert maps.detect_preset(["Bone", "Bone.001", "Hips"]) == (None, {})
    with pytest.raises(maps.BoneMapError, match="unknown"):
        maps.resolve_preset("BLENDER2", MIXAMO_BONES)


def test_vrm_humanoid_data_beats_names():
    humanoid = {vid: f"node{i}" for i, (vid,) in enumerate(maps.VRM_HUMAN_BONES.values())}
    preset, mapping = maps.detect_preset(MIXAMO_BONES, humanoid)
    assert preset == "VRM"
    assert mapping["pelvis"] == humanoid["hips"]
    assert mapping["left_foot"] == humanoid["left_toes"]
    assert mapping["left_index3"] == humanoid["left_index_distal"]
    partial = {"hips": "a", "spine": "b"}
    assert maps.detect_preset(MIXAMO_BONES, partial)[0] == "MIXAMO"


# --- hierarchy rules --------------------------------------------------------

def _parents(pairs):
    names = [n for n, _ in pairs]
    return names, [names.index(p) if p else -1 for _, p in pairs]


# A Rigify-named BVH: the hips bone is "pelvis", "spine" is a child of it that
# does not carry the legs, and the chest ("spine.001") carries the arms.
RIGIFY_BVH = [("pelvis", None), ("spine", "pelvis"), ("spine.001", "spine"),
              ("neck", "spine.001"), ("face", "neck")] + [
    (f"{b}.{s}", p.format(s=s)) for s in "LR" for b, p in
    (("shoulder", "spine.001"), ("upper_arm", "shoulder.{s}"), ("forearm", "upper_arm.{s}"),
     ("hand", "forearm.{s}"), ("thigh", "pelvis"), ("shin", "thigh.{s}"),
     ("foot", "shin.{s}"), ("toe", "foot.{s}"))]


def test_pelvis_is_the_bone_that_carries_the_legs():
    names, parents = _parents(RIGIFY_BVH)
    # by name alone the metarig's "spine" would be the pelvis
    assert maps.resolve_preset("METARIG", names)["pelvis"] == "spine"
    preset, mapping = maps.detect_preset(names, parents=parents)
    assert preset == "METARIG" and mapping["pelvis"] == "pelvis"
    # the chest carries the arms: it is spine3, the bone below it spine1
    assert mapping["spine3"] == "spine.001" and mapping["spine1"] == "spine"
    assert "spine2" not in mapping and mapping["head"] == "face"
    maps.validate_hierarchy(mapping, names, parents)
    # no candidate carries the legs: the thighs' common ancestor does
    renamed = [n if n != "pelvis" else "Bone" for n in names]
    assert maps.resolve_preset("METARIG", renamed, parents)["pelvis"] == "Bone"


def test_bad_hierarchy_is_named():
    names, parents = _parents(RIGIFY_BVH)
    bad = maps.resolve_preset("METARIG", names)
    with pytest.raises(maps.BoneMapError, match=r"pelvis bone 'spine' does not carry the left "
                                                r"leg: 'thigh.L' \(left_hip\)"):
        maps.check_map(bad, names, parents)
    swapped = dict(bad, pelvis="pelvis", left_knee="foot.L", left_ankle="shin.L")
    with pytest.raises(maps.BoneMapError, match=r"left_ankle -> 'shin.L' is not below "
                                                r"left_knee -> 'foot.L'"):
        maps.check_map(swapped, names, parents)
    crossed = dict(bad, pelvis="pelvis", left_elbow="forearm.R", right_elbow="forearm.L")
    problems = maps.hierarchy_problems(crossed, names, parents)
    assert len(problems) >= 4 and all("elbow" in p or "wrist" in p for p in problems)
    with pytest.raises(maps.BoneMapError, match=r"\(and \d+ more\)"):
        maps.validate_hierarchy(crossed, names, parents)


def test_mocap_chest_goes_to_spine3():
    pairs = [("Hips", None), ("Chest", "Hips"), ("Chest2", "Chest"), ("Neck", "Chest2"),
             ("Head", "Neck")] + [(f"{s}{b}", p.format(s=s)) for s in ("Left", "Right")
                                  for b, p in (("Collar", "Chest2"), ("Shoulder", "{s}Collar"),
                                               ("Elbow", "{s}Shoulder"), ("Wrist", "{s}Elbow"),
                                               ("Hip", "Hips"), ("Knee", "{s}Hip"),
                                               ("Ankle", "{s}Knee"))]
    names, parents = _parents(pairs)
    preset, mapping = maps.detect_preset(names, parents=parents)
    assert preset == "BVH_MOCAP"
    assert (mapping["spine1"], mapping["spine3"]) == ("Chest", "Chest2")
    assert "spine2" not in mapping


# --- JSON maps ----------------------------------------------------------------

def test_json_round_trip_partial_maps_and_errors(tmp_path):
    mapping = maps.resolve_preset("MIXAMO", ["mixamorig:" + n for n in MIXAMO_BONES])
    path = tmp_path / "map.json"
    maps.save_map(path, mapping, name="my rig")
    doc = json.loads(path.read_text())
    assert doc["format"] == maps.MAP_FORMAT and doc["version"] == 1
    assert list(doc["bones"]) == [n for n in maps.BONE_NAMES if n in mapping]
    assert maps.load_map(path) == ("my rig", mapping)
    # partial maps, SMPL-X names and a plain object load; empty targets mean "not mapped"
    partial = {"left_index1": "finger", "pelvis": "Hips", "head": ""}
    maps.save_map(path, partial)
    assert maps.load_map(path)[1] == {"pelvis": "Hips", "left_index1": "finger"}
    assert maps.map_from_json('{"pelvis": "Hips", "head": ""}') == ("custom", {"pelvis": "Hips"})
    for text, msg in [("{", "not valid JSON"), ('["Hips"]', "JSON object"),
                      ('{"hip": "Hips"}', "not an SMPL or SMPL-X bone"),
                      ('{"pelvis": 3}', "must be a bone name"),
                      ('{"pelvis": "Hips", "spine1": "Hips"}', "mapped twice"),
                      ('{"format": "other", "bones": {}}', "not a bone map"),
                      ('{"version": 9, "bones": {}}', "newer"),
                      ('{"version": "x", "bones": {}}', "bad bone map version")]:
        with pytest.raises(maps.BoneMapError, match=msg):
            maps.map_from_json(text)
    with pytest.raises(maps.BoneMapError, match="no bone named"):
        maps.check_map({"pelvis": "Hips"}, ["hips"])
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (maps.MAX_MAP_BYTES + 10))
    with pytest.raises(maps.BoneMapError, match="too large"):
        maps.load_map(big)


# --- Euler angles -----------------------------------------------------------

def test_euler_orders_round_trip():
    rng = np.random.default_rng(0)
    for order in euler.EULER_ORDERS:
        angles = rng.uniform(-1.3, 1.3, (50, 3))
        m = euler.euler_to_matrix(angles, order)
        assert np.allclose(euler.euler_to_matrix(euler.matrix_to_euler(m, order), order), m,
                           atol=1e-12)
        # X applied first for 'XYZ'-style orders: R = R_last @ R_mid @ R_first
        axis = "XYZ".index(order[0])
        first = euler.euler_to_matrix(angles * (np.arange(3) == axis), order)
        assert np.allclose(first[:, axis, axis], 1.0)


@pytest.mark.parametrize("order", euler.EULER_ORDERS)
def test_continuous_euler_through_gimbal_lock(order):
    # a turn about the middle axis through 90 degrees: the plain branch
    # jumps 180 degrees in the other two angles there
    middle = "XYZ".index(order[1])
    aa = np.zeros((120, 3))
    aa[:, middle] = np.radians(np.linspace(0, 170, 120))
    rot = axis_angle_to_matrix(aa)
    plain = np.unwrap(euler.matrix_to_euler(rot, order), axis=0)
    assert np.degrees(np.abs(np.diff(plain, axis=0))).max() > 170
    e = euler.continuous_euler(rot, order)
    assert np.allclose(euler.euler_to_matrix(e, order), rot, atol=1e-9)
    assert np.degrees(np.abs(np.diff(e, axis=0))).max() < 2
    # a batch (frames, bones) and a start value
    both = np.stack([rot, rot[::-1]], axis=1)
    eb = euler.continuous_euler(both, order, start=np.full(3, 2 * np.pi))
    assert eb.shape == (120, 2, 3)
    assert np.allclose(euler.euler_to_matrix(eb, order), both, atol=1e-9)
    assert np.abs(eb[0] - 2 * np.pi).max() < np.pi
    spin = axis_angle_to_matrix(np.linspace(0, 6 * np.pi, 200)[:, None] * [0, 0, 1.0])
    assert np.abs(np.diff(euler.continuous_euler(spin, "XYZ"), axis=0)).max() < 0.2


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
    assert np.allclose(rotation_angle(r), rt.angle_between(an, bn), atol=1e-7)


# --- the solve on SMPL-shaped and SMPL-X-shaped skeletons -------------------

@pytest.fixture(scope="module")
def smpl_joints():
    model = body_model_from_arrays(synthetic_arrays(posedirs_scale=0), source="synthetic")
    return rest_joints_29(model, np.zeros(10))


def _frames_along(heads, tails, roll_seed=None):
    """Rest matrices (B, 4, 4) of bones head -> tail; X axis toward the front
    (-Y) like the character, or random rolls."""
    rng = np.random.default_rng(roll_seed)
    rest = []
    for h, t in zip(heads, tails):
        y = (t - h) / np.linalg.norm(t - h)
        r = rng.normal(size=3) if roll_seed is not None else np.array([0.0, -1.0, 0.0])
        if abs(r @ y) > 0.9 * np.linalg.norm(r):
            r = np.array([0.0, 0.0, 1.0])
        x = r - (r @ y) * y
        x /= np.linalg.norm(x)
        rest.append(homogeneous(np.stack([x, y, np.cross(x, y)], 1), h))
    return np.array(rest)


def smpl_skeleton(joints29, names=JOINT_NAMES, world=None, roll_seed=None, importer_tails=False,
                  repose=None):
    heads, tails, _ = rest_bones(joints29)
    heads, tails = heads.copy(), tails.copy()
    if repose is not None:
        heads, tails = repose(heads, tails, PARENTS)
    if importer_tails:  # a BVH importer: a joint with children points at their mean
        kids = {i: [c for c in range(24) if PARENTS[c] == i] for i in range(24)}
        for i, ch in kids.items():
            if len(ch) > 1:
                tails[i] = heads[ch].mean(axis=0)
    world = np.eye(4) if world is None else world
    inv = np.linalg.inv(world)
    rest = _frames_along(heads, tails, roll_seed)
    rest = np.einsum("ij,njk->nik", inv, rest)
    rest[:, :3, :3] /= np.linalg.norm(rest[:, :3, :3], axis=1, keepdims=True)
    tails_arm = tails @ inv[:3, :3].T + inv[:3, 3]
    return rt.Skeleton(list(names), PARENTS, rest, world, tails=tails_arm)


def _rot_about(point, axis_angle, pts):
    r = axis_angle_to_matrix(np.asarray(axis_angle, float))
    return (pts - point) @ r.T + point


def a_pose(heads, tails, parents):
    """Arms 45 degrees down and elbows bent, legs turned out: other rests."""
    heads, tails = heads.copy(), tails.copy()

    def turn(root, aa):
        sub = [i for i in range(24) if root in _chain_up(i, parents)]
        pivot = heads[root].copy()
        heads[sub] = _rot_about(pivot, aa, heads[sub])
        tails[sub] = _rot_about(pivot, aa, tails[sub])

    for side, sign in ((16, 1.0), (17, -1.0)):
        turn(side, [0.0, sign * np.radians(45), 0.0])
        turn(side + 2, [0.0, 0.0, sign * np.radians(30)])
    for hip, sign in ((1, 1.0), (2, -1.0)):
        turn(hip, [0.0, 0.0, sign * np.radians(12)])
    return heads, tails


def _chain_up(i, parents):
    out = []
    while i >= 0:
        out.append(i)
        i = parents[i]
    return out


def random_basis(n, seed=5, spread=0.4, bones=24):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, n)[:, None, None]
    a, b = rng.normal(0, spread, (2, 1, bones, 3))
    basis = homogeneous(axis_angle_to_matrix(a + (b - a) * t))
    basis[:, 0, :3, 3] = np.random.default_rng(seed + 1).normal(0, 0.3, (n, 3))
    return basis


def posed_world(skel, sol, n):
    """World pose matrices of a skeleton under a solution (unmapped at rest)."""
    tb = np.broadcast_to(np.eye(4), (n, len(skel.names), 4, 4)).copy()
    for k, name in enumerate(sol.bones):
        tb[:, skel.index[name], :3, :3] = sol.rotations[:, k]
    if sol.root_bone is not None:
        tb[:, skel.index[sol.root_bone], :3, 3] = sol.root_location
    return skel.world @ rt.forward_pose(skel.rest, skel.parents, tb)


TARGETS = {
    # the same body with random rolls, importer-pointed bones and an object
    # transform (0.01 scale, 90 degrees about X, moved)
    "rolls_importer_object": dict(roll_seed=2, importer_tails=True,
                                  world=homogeneous(0.01 * axis_angle_to_matrix(
                                      np.array([np.pi / 2, 0, 0])), [1.0, 2.0, 0.0])),
    # the same body in an A-pose with bent elbows and turned-out legs
    "a_pose": dict(roll_seed=7, repose=a_pose),
}


@pytest.mark.parametrize("case", sorted(TARGETS))
def test_same_body_any_rolls_rest_and_object_moves_joint_for_joint(smpl_joints, case):
    """A target with the source's proportions ends up with its joints exactly
    where the source's are (up to where each object stands), whatever its
    rolls, bone axes, rest pose and object transform."""
    src = smpl_skeleton(smpl_joints)
    tnames = [f"T_{n}" for n in JOINT_NAMES]
    tgt = smpl_skeleton(smpl_joints, names=tnames, **TARGETS[case])
    n = 25
    basis = random_basis(n)
    mapping = {s: f"T_{s}" for s in JOINT_NAMES}
    sol = rt.solve(src, basis, tgt, mapping)
    assert sol.scale == pytest.approx(1.0)
    sw = src.world @ rt.forward_pose(src.rest, src.parents, basis)
    tw = posed_world(tgt, sol, n)
    ps, pt = sw[..., :3, 3], tw[..., :3, 3]
    offset = (tgt.world @ tgt.rest[0])[:3, 3] - (src.world @ src.rest[0])[:3, 3]
    offset[2] = tgt.floor - src.floor
    assert np.abs(pt - ps - offset).max() < 1e-9
    q = sol.quaternions
    assert np.all(np.sum(q[1:] * q[:-1], -1) > 0)


def test_root_modes_and_floor(smpl_joints):
    src = smpl_skeleton(smpl_joints)
    # a target twice as big, standing on its floor at rest (feet at z = 0.05
    # above the object's origin, which is at z = 1)
    big = smpl_skeleton(2.0 * smpl_joints, names=[f"T_{n}" for n in JOINT_NAMES])
    lift = 0.05 - big.rest[[7, 8, 10, 11], 2, 3].min()
    big.rest[:, 2, 3] += lift
    big.tails[:, 2] += lift
    big.world = homogeneous(np.eye(3), [3.0, 0.0, 1.0])
    mapping = {s: f"T_{s}" for s in JOINT_NAMES}
    n = 20
    basis = random_basis(n, seed=9)
    sol = rt.solve(src, basis, big, mapping, root_motion="world")
    assert sol.scale == pytest.approx(2.0)
    hs, ht = sol.foot_heights
    assert ht == pytest.approx(0.05) and hs == pytest.approx(0.025)
    sw = src.world @ rt.forward_pose(src.rest, src.parents, basis)
    tw = posed_world(big, sol, n)
    feet_s = [src.index[k] for k in ("left_ankle", "right_ankle", "left_foot", "right_foot")]
    feet_t = [big.index["T_" + k] for k in ("left_ankle", "right_ankle", "left_foot",
                                            "right_foot")]
    low_s = sw[:, feet_s][..., 2, 3].min(1) - src.floor
    low_t = tw[:, feet_t][..., 2, 3].min(1) - big.floor
    assert np.allclose(low_t - ht, 2.0 * (low_s - hs), atol=1e-9)
    root_s, root_t = sw[:, 0, :3, 3], tw[:, big.index["T_pelvis"], :3, 3]
    rest_t = (big.world @ big.rest[0])[:3, 3]
    assert np.allclose(root_t[:, :2] - rest_t[:2], 2.0 * (root_s[:, :2] - src.rest[0, :2, 3]))
    # in place: the hips stay above their rest position, the feet still on the floor
    sol = rt.solve(src, basis, big, mapping, root_motion="in_place")
    tw = posed_world(big, sol, n)
    assert np.allclose(tw[:, big.index["T_pelvis"], :2, 3], rest_t[:2])
    low_t = tw[:, feet_t][..., 2, 3].min(1) - big.floor
    assert np.allclose(low_t - ht, 2.0 * (low_s - hs), atol=1e-9)
    assert rt.solve(src, basis, big, mapping, root_motion=False).root_location is None
    with pytest.raises(ValueError, match="root motion"):
        rt.solve(src, basis, big, mapping, root_motion="sideways")


def test_solve_refuses_incomplete_maps(smpl_joints):
    src = smpl_skeleton(smpl_joints)
    basis = np.broadcast_to(np.eye(4), (2, 24, 4, 4))
    with pytest.raises(maps.BoneMapError, match="no bone"):
        rt.solve(src, basis, src, {"pelvis": "nope"})
    with pytest.raises(maps.BoneMapError, match="core bones unmapped: left_knee"):
        rt.solve(src, basis, src, {n: n for n in JOINT_NAMES if n != "left_knee"})


def smplx_skeleton(names=SMPLX_JOINT_NAMES, roll_seed=None, curl=0.0):
    """An SMPL-X-shaped armature on the synthetic SMPL-X rest joints (as the
    character builds it: heads at the joints, tails at the child joint or
    the finger tip), fingers optionally curled at rest."""
    with np.load(os.path.join(DATA, "synthetic_smplx_rest_skeleton.npz")) as d:
        joints, tips = d["joints"], d["finger_tips"]
    heads = joints @ SMPL_TO_BLENDER.T
    tails = np.empty_like(heads)
    child = {}
    for i, p in enumerate(SMPLX_PARENTS):
        if p >= 0:
            child.setdefault(int(p), i)
    child[9] = 12  # spine3 -> neck
    child[15] = None
    for i in range(55):
        c = child.get(i)
        tails[i] = heads[c] if c is not None else heads[i] + [0.0, 0.0, 0.15]
    child_of_wrist = {20: 28, 21: 43}  # middle1
    for w, m in child_of_wrist.items():
        tails[w] = heads[m]
    finger_ends = [27, 30, 33, 36, 39, 42, 45, 48, 51, 54]
    tails[finger_ends] = tips @ SMPL_TO_BLENDER.T
    for i in (22, 23, 24):  # jaw, eyes: forward
        tails[i] = heads[i] + [0.0, -0.03, 0.0]
    if curl:
        for base in range(25, 55, 3):
            for k in (1, 2):
                j = base + k
                sub = [j + m for m in range(3 - k)]
                pivot = heads[j].copy()
                axis = [curl, 0.0, 0.0]
                heads[sub] = _rot_about(pivot, axis, heads[sub])
                tails[sub] = _rot_about(pivot, axis, tails[sub])
    rest = _frames_along(heads, tails, roll_seed)
    return rt.Skeleton(list(names), SMPLX_PARENTS, rest, tails=tails)


def test_smplx_source_fingers_follow(smpl_joints):
    """SMPL-X source onto a target with the same hands, other rolls and curled
    fingers at rest: every finger joint lands where the source's does."""
    src = smplx_skeleton()
    tnames = [f"T_{n}" for n in SMPLX_JOINT_NAMES]
    tgt = smplx_skeleton(tnames, roll_seed=3, curl=0.3)
    n = 15
    basis = random_basis(n, seed=11, spread=0.3, bones=55)
    mapping = {s: "T_" + s for s in SMPLX_JOINT_NAMES}
    sol = rt.solve(src, basis, tgt, mapping)
    sw = src.world @ rt.forward_pose(src.rest, src.parents, basis)
    tw = posed_world(tgt, sol, n)
    fingers = [src.index[n] for n in SMPLX_JOINT_NAMES[25:]]
    err = np.abs(tw[:, fingers][..., :3, 3] - sw[:, fingers][..., :3, 3] -
                 (tw[:, :1, :3, 3] - sw[:, :1, :3, 3])).max()
    assert err < 1e-9
    # an SMPL target (24 bones) takes the SMPL-X body and nothing else
    body = smpl_skeleton(smpl_joints, names=[f"B_{n}" for n in JOINT_NAMES])
    sol = rt.solve(src, basis, body, {s: "B_" + s for s in JOINT_NAMES})
    assert len(sol.bones) == 22 and "B_left_hand" in sol.unmapped


def test_guess_map_from_hierarchy_and_geometry(smpl_joints):
    """Bones named Bone, Bone.001, ...: the legs, arms, spine, neck and head
    are found from the hierarchy and the rest geometry, sides from the feet."""
    heads, tails, _ = rest_bones(smpl_joints)
    order = np.random.default_rng(0).permutation(24)
    names = [f"Bone.{i:03d}" for i in range(24)]
    new_of = {int(old): k for k, old in enumerate(order)}
    parents = [new_of[int(PARENTS[old])] if PARENTS[old] >= 0 else -1 for old in order]
    h, t = heads[order], tails[order]
    preset, mapping = guess.guess_map(names, parents, h, t)
    assert preset is None
    expect = {JOINT_NAMES[old]: names[k] for k, old in enumerate(order)}
    for smpl in ("pelvis", "left_hip", "right_hip", "left_knee", "right_ankle", "left_foot",
                 "left_shoulder", "right_elbow", "left_wrist", "left_collar", "spine3",
                 "spine1", "spine2", "neck", "head"):
        assert mapping[smpl] == expect[smpl], smpl
    # the names tell the sides: a rig facing +Y with "L"/"R" names
    flipped = [n + (".L" if JOINT_NAMES[o].startswith("left") else
                    ".R" if JOINT_NAMES[o].startswith("right") else "")
               for n, o in zip(names, order)]
    mirror = np.diag([-1.0, -1.0, 1.0])
    _, m2 = guess.guess_map(flipped, parents, h @ mirror, t @ mirror)
    assert m2["left_hip"] == expect["left_hip"] + ".L"
    assert guess.side_of("mixamorig:LeftArm") == "left" and guess.side_of("thigh_r") == "right"
    assert guess.side_of("LHipJoint") == "left" and guess.side_of("spine") is None


def test_topological_order_puts_parents_first():
    parents = np.array([2, -1, 1, 0])
    order = list(rt.topological_order(parents))
    assert all(order.index(p) < order.index(i) for i, p in enumerate(parents) if p >= 0)
    with pytest.raises(ValueError, match="cycle"):
        rt.topological_order(np.array([1, 0]))


def test_chunks_and_threads_do_not_change_the_solution(smpl_joints):
    """The solve works in chunks of frames on several threads: any chunk
    size and thread count gives the same arrays as one whole-clip pass (to
    rounding: BLAS may sum a GEMM's rows in another order for another
    size)."""
    src = smpl_skeleton(smpl_joints)
    tnames = [f"T_{n}" for n in JOINT_NAMES]
    tgt = smpl_skeleton(smpl_joints, names=tnames, **TARGETS["a_pose"])
    mapping = {s: f"T_{s}" for s in JOINT_NAMES}
    basis = random_basis(103, seed=11)
    whole = rt.solve(src, basis, tgt, mapping, chunk=1000, threads=1)
    for chunk, threads in ((7, 3), (50, 2), (1, 1)):
        part = rt.solve(src, basis, tgt, mapping, chunk=chunk, threads=threads)
        for name in ("rotations", "quaternions", "root_location", "world_rotations",
                     "root_head"):
            np.testing.assert_allclose(getattr(part, name), getattr(whole, name), rtol=0,
                                       atol=1e-12,
                                       err_msg=f"{name}, chunk {chunk}, {threads} threads")
