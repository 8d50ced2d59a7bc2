"""Retarget fidelity in real bpy: other rest poses (A-pose), bone rolls (90
and 180 degrees), proportions, object transforms (0.01 scale, 90 degree X)
and spine bone counts (2, 3, 5)."""
import math

import bpy
import numpy as np
import pytest
from mathutils import Matrix

from hybrik_blender.blender.animation import import_result
from hybrik_blender.blender.keyframes import fcurves_of
from hybrik_blender.blender.retarget import RetargetError, retarget
from hybrik_blender.core.retarget.solve import angle_between
from hybrik_blender.core.body.skeleton import JOINT_NAMES
from tests.helpers import make_result, random_motion

MAX_ANGLE_DEG = 1.0

MIXAMO = {"root": None, "hips": "Hips", "spine": ["Spine", "Spine1", "Spine2"], "neck": "Neck",
          "head": "Head", "collar": "{S}Shoulder", "upperarm": "{S}Arm",
          "forearm": "{S}ForeArm", "hand": "{S}Hand", "thigh": "{S}UpLeg", "calf": "{S}Leg",
          "foot": "{S}Foot", "toe": "{S}ToeBase", "sides": ("Left", "Right")}
UE5 = {"root": "root", "hips": "pelvis",
       "spine": ["spine_01", "spine_02", "spine_03", "spine_04", "spine_05"],
       "neck": "neck_01", "head": "head", "collar": "clavicle_{S}", "upperarm": "upperarm_{S}",
       "forearm": "lowerarm_{S}", "hand": "hand_{S}", "thigh": "thigh_{S}", "calf": "calf_{S}",
       "foot": "foot_{S}", "toe": "ball_{S}", "sides": ("l", "r")}
PLAIN2 = {"root": "Root", "hips": "Pelvis", "spine": ["Waist", "Chest"], "neck": "Neck",
          "head": "Skull", "collar": "Clav.{S}", "upperarm": "Arm.{S}", "forearm": "Elbow.{S}",
          "hand": "Wrist.{S}", "thigh": "Leg.{S}", "calf": "Knee.{S}", "foot": "Ankle.{S}",
          "toe": "Toes.{S}", "sides": ("L", "R")}
PLAIN2_MAP = {"pelvis": "Pelvis", "spine1": "Waist", "spine3": "Chest", "neck": "Neck",
              "head": "Skull", "left_collar": "Clav.L", "right_collar": "Clav.R",
              "left_shoulder": "Arm.L", "right_shoulder": "Arm.R", "left_elbow": "Elbow.L",
              "right_elbow": "Elbow.R", "left_wrist": "Wrist.L", "right_wrist": "Wrist.R",
              "left_hip": "Leg.L", "right_hip": "Leg.R", "left_knee": "Knee.L",
              "right_knee": "Knee.R", "left_ankle": "Ankle.L", "right_ankle": "Ankle.R",
              "left_foot": "Toes.L", "right_foot": "Toes.R"}

MIXAMO_WORLD = np.array([[0.01, 0, 0, 0], [0, 0, -0.01, 0], [0, 0.01, 0, 0], [0, 0, 0, 1.0]])


def _rot_y(deg):
    t = math.radians(deg)
    return np.array([[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]])


def humanoid_bones(src_rig, names, apose_deg=0.0, leg_scale=1.0, arm_scale=1.0,
                   spine_scale=1.0, offset=(0.0, 0.0, 0.0)):
    """[(name, parent, head, tail)] in world metres, laid on the SMPL rest
    joints of `src_rig` with other proportions, spine bone count and arm
    angle (apose_deg down from the T-pose)."""
    bones = src_rig.data.bones
    joint = {n: np.array(bones[n].head_local) for n in JOINT_NAMES}
    end = {n: np.array(bones[n].tail_local) for n in JOINT_NAMES}
    parent = {"left_hip": "pelvis", "left_knee": "left_hip", "left_ankle": "left_knee",
              "left_foot": "left_ankle", "neck": "pelvis", "head": "neck",
              "left_collar": "neck", "left_shoulder": "left_collar",
              "left_elbow": "left_shoulder", "left_wrist": "left_elbow",
              "left_hand": "left_wrist"}
    parent.update({k.replace("left", "right"): v.replace("left", "right")
                   for k, v in parent.items()})
    factor = {"hip": leg_scale, "knee": leg_scale, "ankle": leg_scale, "foot": leg_scale,
              "neck": spine_scale, "head": spine_scale, "elbow": arm_scale,
              "wrist": arm_scale, "hand": arm_scale, "shoulder": arm_scale, "collar": 1.0}
    pos = {"pelvis": joint["pelvis"] + offset}
    for name in ("left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
                 "right_ankle", "left_foot", "right_foot", "neck", "head", "left_collar",
                 "right_collar", "left_shoulder", "right_shoulder", "left_elbow",
                 "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand"):
        p = parent[name]
        pos[name] = pos[p] + factor[name.split("_")[-1]] * (joint[name] - joint[p])
    tips = {n: pos[n] + (end[n] - joint[n]) * s for n, s in
            (("head", spine_scale), ("left_foot", leg_scale), ("right_foot", leg_scale),
             ("left_hand", arm_scale), ("right_hand", arm_scale))}
    if apose_deg:
        for side, sign in (("left", 1.0), ("right", -1.0)):
            pivot = pos[f"{side}_shoulder"]
            turn = _rot_y(sign * apose_deg)
            for n in ("elbow", "wrist", "hand"):
                pos[f"{side}_{n}"] = pivot + turn @ (pos[f"{side}_{n}"] - pivot)
            tips[f"{side}_hand"] = pivot + turn @ (tips[f"{side}_hand"] - pivot)
    spine_base = pos["pelvis"] + spine_scale * (joint["spine1"] - joint["pelvis"])
    out = []
    if names["root"]:
        out.append((names["root"], None, np.array(offset) * [1, 1, 0],
                    np.array(offset) * [1, 1, 0] + [0, 0.2, 0]))
    out.append((names["hips"], names["root"], pos["pelvis"], spine_base))
    n = len(names["spine"])
    pts = [spine_base + (pos["neck"] - spine_base) * i / n for i in range(n + 1)]
    prev = names["hips"]
    for i, sname in enumerate(names["spine"]):
        out.append((sname, prev, pts[i], pts[i + 1]))
        prev = sname
    chest = prev
    out.append((names["neck"], chest, pos["neck"], pos["head"]))
    out.append((names["head"], names["neck"], pos["head"], tips["head"]))
    for side, tag in zip(("left", "right"), names["sides"]):
        def nm(key):
            return names[key].format(S=tag)
        out += [(nm("collar"), chest, pos[f"{side}_collar"], pos[f"{side}_shoulder"]),
                (nm("upperarm"), nm("collar"), pos[f"{side}_shoulder"], pos[f"{side}_elbow"]),
                (nm("forearm"), nm("upperarm"), pos[f"{side}_elbow"], pos[f"{side}_wrist"]),
                (nm("hand"), nm("forearm"), pos[f"{side}_wrist"], tips[f"{side}_hand"]),
                (nm("thigh"), names["hips"], pos[f"{side}_hip"], pos[f"{side}_knee"]),
                (nm("calf"), nm("thigh"), pos[f"{side}_knee"], pos[f"{side}_ankle"]),
                (nm("foot"), nm("calf"), pos[f"{side}_ankle"], pos[f"{side}_foot"]),
                (nm("toe"), nm("foot"), pos[f"{side}_foot"], tips[f"{side}_foot"])]
    return out


def build_rig(name, bones, roll_deg=0.0, world=None, prefix=""):
    """An armature object from world-space bones; `world` becomes its
    matrix_world (bones are stored in its local space)."""
    world = np.eye(4) if world is None else np.asarray(world, float)
    inv = np.linalg.inv(world)
    data = bpy.data.armatures.new(name)
    rig = bpy.data.objects.new(name, data)
    bpy.context.scene.collection.objects.link(rig)
    rig.matrix_world = Matrix(world.tolist())
    view_layer = bpy.context.view_layer
    view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode='EDIT')
    for bname, parent, head, tail in bones:
        eb = data.edit_bones.new(prefix + bname)
        eb.head = (inv @ np.append(head, 1.0))[:3]
        eb.tail = (inv @ np.append(tail, 1.0))[:3]
        eb.roll = math.radians(roll_deg)
        if parent:
            eb.parent = data.edit_bones[prefix + parent]
    bpy.ops.object.mode_set(mode='OBJECT')
    for pb in rig.pose.bones:
        pb.rotation_mode = 'QUATERNION'
    return rig


@pytest.fixture
def source_take(empty_scene, body_model):
    res = make_result(random_motion(24, seed=21, spread=1.0), seed=5)
    return import_result(res, body_model, pose_correctives=False)


def world_bone_matrices(rig, names, frames):
    """(F, B, 4, 4) world matrices of pose bones, evaluated by Blender."""
    out = np.empty((len(frames), len(names), 4, 4))
    mw = np.array(rig.matrix_world)
    for i, f in enumerate(frames):
        bpy.context.scene.frame_set(int(f))
        for j, n in enumerate(names):
            out[i, j] = mw @ np.array(rig.pose.bones[n].matrix)
    return out


def rig_state(rig):
    return (np.array([np.array(b.matrix_local) for b in rig.data.bones]),
            np.array(rig.matrix_world), [b.name for b in rig.data.bones])


LIMB_SEGMENTS = [(f"{s}_{a}", f"{s}_{b}") for s in ("left", "right") for a, b in
                 (("hip", "knee"), ("knee", "ankle"), ("ankle", "foot"),
                  ("shoulder", "elbow"), ("elbow", "wrist"))]


def world_heads(rig, names, frames, subframe=0.0):
    """(F, B, 3) world positions of pose-bone heads, evaluated by Blender."""
    out = np.empty((len(frames), len(names), 3))
    mw = np.array(rig.matrix_world)
    for i, f in enumerate(frames):
        bpy.context.scene.frame_set(int(f), subframe=subframe)
        for j, n in enumerate(names):
            out[i, j] = (mw @ np.append(np.array(rig.pose.bones[n].head), 1.0))[:3]
    return out


def assert_directions_follow(src, tgt, mapping, frames, subframe=0.0, tol=MAX_ANGLE_DEG):
    """Every limb segment (joint to joint: thigh, shin, foot, upper arm,
    forearm) of the target points where the source's does, whatever the
    bones' own axes."""
    segs = [(a, b) for a, b in LIMB_SEGMENTS if a in mapping and b in mapping]
    src_names = sorted({n for seg in segs for n in seg})
    ws = world_heads(src, src_names, frames, subframe)
    wt = world_heads(tgt, [mapping[n] for n in src_names], frames, subframe)
    ia = [src_names.index(a) for a, _ in segs]
    ib = [src_names.index(b) for _, b in segs]
    ds, dt = ws[:, ib] - ws[:, ia], wt[:, ib] - wt[:, ia]
    ds /= np.linalg.norm(ds, axis=-1, keepdims=True)
    dt /= np.linalg.norm(dt, axis=-1, keepdims=True)
    err = np.degrees(angle_between(ds, dt))
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() < tol, f"{segs[worst[1]]} at frame {frames[worst[0]]}: {err.max():.3f} deg"
    return float(err.max())


def held_at_rest(fc):
    """A curve with a rest value at the clip's two ends only (zero location,
    unit scale, identity rotation)."""
    co = np.empty(2 * len(fc.keyframe_points), np.float32)
    fc.keyframe_points.foreach_get("co", co)
    rest = 1.0 if fc.data_path.endswith("scale") or (
        fc.data_path.endswith("rotation_quaternion") and fc.array_index == 0) else 0.0
    return len(co) <= 4 and np.allclose(co[1::2], rest)


def assert_no_flips(rig):
    curves = fcurves_of(rig)
    quats = {}
    for fc in curves:
        if fc.data_path.endswith("rotation_quaternion"):
            co = np.empty(2 * len(fc.keyframe_points), np.float32)
            fc.keyframe_points.foreach_get("co", co)
            quats.setdefault(fc.data_path, {})[fc.array_index] = co[1::2]
        elif fc.data_path.endswith("rotation_euler"):
            co = np.empty(2 * len(fc.keyframe_points), np.float32)
            fc.keyframe_points.foreach_get("co", co)
            assert np.abs(np.diff(co[1::2])).max(initial=0) < 1.0, f"Euler jump {fc.data_path}"
    for path, comps in quats.items():
        q = np.stack([comps[i] for i in range(4)], -1)
        assert np.all(np.sum(q[1:] * q[:-1], -1) > 0), f"quaternion flip in {path}"


CASES = {
    # Mixamo import: cm bones in a Y-up armature, object 0.01 scale + 90 deg X
    "mixamo_cm_roll90": dict(names=MIXAMO, prefix="mixamorig1:", world=MIXAMO_WORLD,
                             roll=90.0, apose=0.0, legs=1.25, arms=0.9, spine=1.1,
                             preset='AUTO', expect='MIXAMO'),
    # UE5 Manny-like: A-pose, 5 spine bones, a root bone, roll 180 deg
    "ue5_apose_roll180": dict(names=UE5, prefix="", world=None, roll=180.0, apose=45.0,
                              legs=0.8, arms=1.15, spine=0.9, preset='AUTO', expect='UE5'),
    # 2 spine bones, custom map, Euler bones, moved and turned object
    "custom_2spine_euler": dict(names=PLAIN2, prefix="", roll=90.0, apose=40.0, legs=1.1,
                                arms=1.0, spine=1.3, preset='CUSTOM', expect='CUSTOM',
                                euler='ZXY',
                                world=np.array([[0, -2.0, 0, 1.5], [2.0, 0, 0, -0.5],
                                                [0, 0, 2.0, 0.2], [0, 0, 0, 1]])),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_retarget_follows_source_directions(source_take, case):
    c = CASES[case]
    src = source_take.rig
    bones = humanoid_bones(src, c["names"], apose_deg=c["apose"], leg_scale=c["legs"],
                           arm_scale=c["arms"], spine_scale=c["spine"])
    tgt = build_rig(case, bones, roll_deg=c["roll"], world=c["world"], prefix=c["prefix"])
    if c.get("euler"):
        for pb in tgt.pose.bones:
            pb.rotation_mode = c["euler"]
    before = rig_state(tgt)
    mapping = PLAIN2_MAP if c["preset"] == 'CUSTOM' else None
    rep = retarget(src, tgt, preset=c["preset"], mapping=mapping)
    assert rep.preset == c["expect"]
    assert len(rep.mapping) >= 20
    assert (rep.frame_start, rep.frame_end) == (source_take.frame_start, source_take.frame_end)
    assert tgt.animation_data.action == rep.action
    after = rig_state(tgt)
    assert np.array_equal(before[0], after[0]) and before[2] == after[2], "rest pose changed"
    assert np.array_equal(before[1], after[1]), "object transform changed"
    if c.get("euler"):
        assert all(pb.rotation_mode == c["euler"] for pb in tgt.pose.bones)
    frames = np.arange(rep.frame_start, rep.frame_end + 1)
    worst = assert_directions_follow(src, tgt, rep.mapping, frames)
    print(f"{case}: worst direction error {worst:.2e} deg over {len(frames)} frames")
    assert_no_flips(tgt)


def test_root_motion_scaled_by_leg_length(source_take):
    """Horizontally the hips move like the source's scaled by the leg-length
    ratio; vertically the feet meet the floor where the source's do."""
    src = source_take.rig
    legs = 1.25
    bones = humanoid_bones(src, MIXAMO, leg_scale=legs, arm_scale=0.8, offset=(2.0, 1.0, 0.0))
    tgt = build_rig("mixamo", bones, roll_deg=90.0, world=MIXAMO_WORLD, prefix="mixamorig:")
    rep = retarget(src, tgt)
    assert rep.scale == pytest.approx(legs, rel=1e-6)
    hs, ht = rep.foot_heights
    assert hs > 0 and ht == pytest.approx(legs * hs)  # the source's from its mesh
    frames = [rep.frame_start, rep.frame_start + 7, rep.frame_end]
    hips = tgt.pose.bones["mixamorig:Hips"]
    rest_t = (np.array(tgt.matrix_world) @ np.array(hips.bone.matrix_local))[:3, 3]
    rest_s = np.array(src.data.bones["pelvis"].head_local)
    feet_s = ["left_ankle", "right_ankle", "left_foot", "right_foot"]
    feet_t = ["mixamorig:" + n for n in ("LeftFoot", "RightFoot", "LeftToeBase", "RightToeBase")]
    for f in frames:
        bpy.context.scene.frame_set(f)
        p_t = (np.array(tgt.matrix_world) @ np.array(hips.matrix))[:3, 3]
        p_s = (np.array(src.matrix_world) @ np.array(src.pose.bones["pelvis"].matrix))[:3, 3]
        assert np.allclose(p_t[:2] - rest_t[:2], legs * (p_s[:2] - rest_s[:2]), atol=1e-4)
        low_s = world_heads(src, feet_s, [f])[0, :, 2].min()
        low_t = world_heads(tgt, feet_t, [f])[0, :, 2].min()
        assert low_t - ht == pytest.approx(legs * (low_s - hs), abs=1e-4)
    # in place: the hips keep their rest position over the floor
    retarget(src, tgt, root_motion='IN_PLACE')
    for f in frames:
        bpy.context.scene.frame_set(f)
        p_t = (np.array(tgt.matrix_world) @ np.array(hips.matrix))[:3, 3]
        assert np.allclose(p_t[:2], rest_t[:2], atol=1e-5)
    # off: no root location curve but a rest key
    rep2 = retarget(src, tgt, root_motion=False)
    loc = [fc for fc in fcurves_of(tgt) if fc.data_path.endswith("location")
           and '"mixamorig:Hips"' in fc.data_path]
    assert loc and all(held_at_rest(fc) for fc in loc)
    assert rep2.action != rep.action and rep.action.use_fake_user


def test_retarget_refuses_bad_input(source_take):
    src = source_take.rig
    data = bpy.data.armatures.new("blob")
    blob = bpy.data.objects.new("blob", data)
    bpy.context.scene.collection.objects.link(blob)
    bpy.context.view_layer.objects.active = blob
    bpy.ops.object.mode_set(mode='EDIT')
    eb = data.edit_bones.new("Bone")
    eb.tail = (0, 0, 1)
    bpy.ops.object.mode_set(mode='OBJECT')
    with pytest.raises(RetargetError, match="could not recognise"):
        retarget(src, blob)
    with pytest.raises(RetargetError, match="same armature"):
        retarget(src, src)
    with pytest.raises(RetargetError, match="no bone named"):
        retarget(src, blob, preset='CUSTOM', mapping={"pelvis": "Nope"})
    with pytest.raises(RetargetError, match="does not look like"):
        retarget(src, blob, preset='MIXAMO')
    assert blob.animation_data is None


def test_euler_convention_matches_blender():
    from mathutils import Euler

    from hybrik_blender.core.retarget.euler import EULER_ORDERS, euler_to_matrix, matrix_to_euler
    rng = np.random.default_rng(0)
    for order in EULER_ORDERS:
        for angles in rng.uniform(-1.4, 1.4, (5, 3)):
            ref = np.array(Euler(angles.tolist(), order).to_matrix())
            assert np.allclose(euler_to_matrix(angles, order), ref, atol=1e-6)
            back = np.array(Euler(matrix_to_euler(ref, order).tolist(), order).to_matrix())
            assert np.allclose(back, ref, atol=1e-6)
