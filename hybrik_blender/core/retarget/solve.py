"""Retargeting: bone maps and the numpy retarget solve (no bpy).

Bone maps
---------
A bone map sends SMPL bone names (``skeleton.JOINT_NAMES``, the source) to
bone names of a target armature. Presets list, for each SMPL bone, candidate
target names in order of preference; the first one present on the target
wins. Names compare case-insensitively after dropping any namespace up to the
last ``:`` (so ``mixamorig:Hips``, ``mixamorig1:Hips`` and ``Hips`` all match).
SMPL bones may stay unmapped, and target bones between two mapped bones may
be skipped (three SMPL spine bones onto two or five target bones).

The solve
---------
Both rigs are taken to a calibrated reference pose: the source at its rest
pose (SMPL's zero pose, a T-pose), the target at its rest pose with each
mapped bone swung (minimal rotation) so that its direction in the world is
the direction of its source bone. With Rs0, Rt0 those world rotations, each
frame's world rotation of a mapped target bone is::

    Rt(t) = Rs(t) @ Rs0^T @ Rt0

which makes the bone's world direction follow the source's exactly, whatever
its roll, length or rest pose (T or A). World rotations include the objects'
rotations (a Mixamo rig's 0.01 scale and 90 degree X turn are absorbed).
Pose-bone channels follow from Blender's evaluation (see blender_space.py)::

    Pose_i = Pose_parent @ (B_parent^-1 @ B_i) @ Basis_i

solved parent before child; target bones that are not mapped keep their rest
relation to their parent (identity basis). The root (the bone mapped to
``pelvis``) also gets a location: its head moves from its rest position by the
source pelvis displacement times the ratio of leg lengths.
"""
import json

import numpy as np

from ..rotations import make_quaternions_continuous, matrix_to_quaternion, orthonormalize
from ..body.skeleton import JOINT_NAMES

MAP_FORMAT = "hybrik-blender.bone-map"
MAP_VERSION = 1

# Bones that must all be mapped for a usable retarget.
CORE_BONES = ("pelvis", "left_hip", "right_hip", "left_knee", "right_knee",
              "left_shoulder", "right_shoulder", "left_elbow", "right_elbow")


class BoneMapError(ValueError):
    """A bone map that cannot be used (bad JSON, unknown names, duplicates)."""


def _sided(center, sided, left, right):
    """Expand '{s}' in the sided entries into the two sides' names."""
    out = {k: list(v) for k, v in center.items()}
    for prefix, tag in (("left_", left), ("right_", right)):
        for key, names in sided.items():
            out[prefix + key] = [n.format(s=tag) for n in names]
    return out


_LIMBS = ("collar", "shoulder", "elbow", "wrist", "hip", "knee", "ankle", "foot")
_UE_LIMBS = dict(zip(_LIMBS, (["clavicle_{s}"], ["upperarm_{s}"], ["lowerarm_{s}"], ["hand_{s}"],
                              ["thigh_{s}"], ["calf_{s}"], ["foot_{s}"], ["ball_{s}"])))

PRESETS = {
    "SMPL": {
        "label": "SMPL / hybrik-blender",
        "bones": {name: [name] for name in JOINT_NAMES},
    },
    "MIXAMO": {
        "label": "Mixamo",
        "bones": _sided(
            {"pelvis": ["Hips"], "spine1": ["Spine"], "spine2": ["Spine1"],
             "spine3": ["Spine2"], "neck": ["Neck"], "head": ["Head"]},
            dict(zip(_LIMBS, (["{s}Shoulder"], ["{s}Arm"], ["{s}ForeArm"], ["{s}Hand"],
                              ["{s}UpLeg"], ["{s}Leg"], ["{s}Foot"], ["{s}ToeBase"]))),
            "Left", "Right"),
    },
    "RIGIFY_DEF": {
        "label": "Rigify deform bones",
        "bones": _sided(
            {"pelvis": ["DEF-spine"], "spine1": ["DEF-spine.001"],
             "spine2": ["DEF-spine.002"], "spine3": ["DEF-spine.003"],
             "neck": ["DEF-spine.004"], "head": ["DEF-spine.006"]},
            dict(zip(_LIMBS, (["DEF-shoulder.{s}"], ["DEF-upper_arm.{s}"],
                              ["DEF-forearm.{s}"], ["DEF-hand.{s}"], ["DEF-thigh.{s}"],
                              ["DEF-shin.{s}"], ["DEF-foot.{s}"], ["DEF-toe.{s}"]))),
            "L", "R"),
    },
    "RIGIFY_FK": {
        "label": "Rigify FK controls",
        "bones": _sided(
            {"pelvis": ["torso"], "spine2": ["spine_fk.002"], "spine3": ["spine_fk.003"],
             "neck": ["neck"], "head": ["head"]},
            dict(zip(_LIMBS, (["shoulder.{s}"], ["upper_arm_fk.{s}"], ["forearm_fk.{s}"],
                              ["hand_fk.{s}"], ["thigh_fk.{s}"], ["shin_fk.{s}"],
                              ["foot_fk.{s}"], ["toe_fk.{s}", "toe.{s}"]))),
            "L", "R"),
    },
    "UE5": {
        "label": "Unreal Engine 5 Manny / Quinn",
        # five spine bones: SMPL's three go onto every other one
        "bones": _sided(
            {"pelvis": ["pelvis"], "spine1": ["spine_01"], "spine2": ["spine_03"],
             "spine3": ["spine_05"], "neck": ["neck_01"], "head": ["head"]}, _UE_LIMBS,
            "l", "r"),
    },
    "UE4": {
        "label": "Unreal Engine 4 Mannequin",
        "bones": _sided(
            {"pelvis": ["pelvis"], "spine1": ["spine_01"], "spine2": ["spine_02"],
             "spine3": ["spine_03"], "neck": ["neck_01"], "head": ["head"]}, _UE_LIMBS,
            "l", "r"),
    },
    "VRM": {
        "label": "VRM humanoid",
        # By name only; blender/retarget.py prefers the VRM add-on's humanoid data.
        "bones": _sided(
            {"pelvis": ["J_Bip_C_Hips", "hips"], "spine1": ["J_Bip_C_Spine", "spine"],
             "spine2": ["J_Bip_C_Chest", "chest"],
             "spine3": ["J_Bip_C_UpperChest", "upperChest"],
             "neck": ["J_Bip_C_Neck", "neck"], "head": ["J_Bip_C_Head", "head"]},
            {"collar": ["J_Bip_{s[0]}_Shoulder", "{s[1]}Shoulder"],
             "shoulder": ["J_Bip_{s[0]}_UpperArm", "{s[1]}UpperArm"],
             "elbow": ["J_Bip_{s[0]}_LowerArm", "{s[1]}LowerArm"],
             "wrist": ["J_Bip_{s[0]}_Hand", "{s[1]}Hand"],
             "hip": ["J_Bip_{s[0]}_UpperLeg", "{s[1]}UpperLeg"],
             "knee": ["J_Bip_{s[0]}_LowerLeg", "{s[1]}LowerLeg"],
             "ankle": ["J_Bip_{s[0]}_Foot", "{s[1]}Foot"],
             "foot": ["J_Bip_{s[0]}_ToeBase", "{s[1]}Toes"]},
            ("L", "left"), ("R", "right")),
    },
    "METARIG": {
        "label": "Blender human metarig",
        "bones": _sided(
            {"pelvis": ["spine"], "spine1": ["spine.001"], "spine2": ["spine.002"],
             "spine3": ["spine.003"], "neck": ["spine.004"], "head": ["spine.006"]},
            dict(zip(_LIMBS, (["shoulder.{s}"], ["upper_arm.{s}"], ["forearm.{s}"],
                              ["hand.{s}"], ["thigh.{s}"], ["shin.{s}"], ["foot.{s}"],
                              ["toe.{s}"]))),
            "L", "R"),
    },
}

# VRM 1.0 humanoid bone ids as the VRM add-on names its properties.
VRM_HUMAN_BONES = _sided(
    {"pelvis": ["hips"], "spine1": ["spine"], "spine2": ["chest"], "spine3": ["upper_chest"],
     "neck": ["neck"], "head": ["head"]},
    {"collar": ["{s}_shoulder"], "shoulder": ["{s}_upper_arm"], "elbow": ["{s}_lower_arm"],
     "wrist": ["{s}_hand"], "hip": ["{s}_upper_leg"], "knee": ["{s}_lower_leg"],
     "ankle": ["{s}_foot"], "foot": ["{s}_toes"]},
    "left", "right")


def normalize_name(name):
    return str(name).rsplit(":", 1)[-1].strip().lower()


def resolve_preset(preset, bone_names):
    """{smpl bone: target bone} for the preset's names present in bone_names."""
    if preset not in PRESETS:
        raise BoneMapError(f"unknown bone map preset {preset!r}")
    lookup = {}
    for name in bone_names:
        lookup.setdefault(name, name)
    for name in bone_names:
        lookup.setdefault(normalize_name(name), name)
    out = {}
    for smpl, candidates in PRESETS[preset]["bones"].items():
        for cand in candidates:
            hit = lookup.get(cand) or lookup.get(normalize_name(cand))
            if hit is not None and hit not in out.values():
                out[smpl] = hit
                break
    return out


def vrm_map(human_bones):
    """Bone map from VRM humanoid data: {vrm bone id: armature bone name}."""
    out = {}
    for smpl, (vrm_id,) in VRM_HUMAN_BONES.items():
        name = human_bones.get(vrm_id)
        if name:
            out[smpl] = name
    return out


def map_score(mapping):
    """How usable a map is: core bones first, then all mapped bones."""
    return (sum(b in mapping for b in CORE_BONES), len(mapping))


def detect_preset(bone_names, vrm_human_bones=None):
    """(preset name, bone map) of the preset that matches best, or
    (None, {}) when none maps all core bones. VRM humanoid data, when given
    and complete, wins."""
    if vrm_human_bones:
        mapping = vrm_map(vrm_human_bones)
        if all(b in mapping for b in CORE_BONES):
            return "VRM", mapping
    best, best_map, best_score = None, {}, (-1, -1)
    for preset in PRESETS:
        mapping = resolve_preset(preset, bone_names)
        score = map_score(mapping)
        if score > best_score:
            best, best_map, best_score = preset, mapping, score
    if best_score[0] < len(CORE_BONES):
        return None, {}
    return best, best_map


def check_map(mapping, bone_names=None):
    """Validate a bone map; returns a clean {str: str} copy."""
    if not isinstance(mapping, dict):
        raise BoneMapError("a bone map is a JSON object of SMPL bone -> target bone")
    out = {}
    for key, value in mapping.items():
        if key not in JOINT_NAMES:
            raise BoneMapError(f"{key!r} is not an SMPL bone (expected one of "
                               f"{', '.join(JOINT_NAMES)})")
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            raise BoneMapError(f"the target of {key!r} must be a bone name")
        out[key] = value
    seen = {}
    for key, value in out.items():
        if value in seen:
            raise BoneMapError(f"{value!r} is mapped twice ({seen[value]!r} and {key!r})")
        seen[value] = key
    if bone_names is not None:
        missing = sorted(v for v in out.values() if v not in set(bone_names))
        if missing:
            raise BoneMapError(f"the target has no bone named {', '.join(map(repr, missing))}")
    return out


def map_to_json(mapping, name="custom"):
    clean = check_map(mapping)
    doc = {"format": MAP_FORMAT, "version": MAP_VERSION, "name": str(name),
           "bones": {k: clean[k] for k in JOINT_NAMES if k in clean}}
    return json.dumps(doc, indent=2)


def map_from_json(text):
    """(name, bone map) from the JSON text written by map_to_json. A plain
    {smpl bone: target bone} object is accepted too."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BoneMapError(f"the bone map is not valid JSON: {exc}") from None
    if isinstance(doc, dict) and "bones" in doc:
        if doc.get("format", MAP_FORMAT) != MAP_FORMAT:
            raise BoneMapError(f"not a bone map file (format {doc.get('format')!r})")
        if int(doc.get("version", MAP_VERSION)) > MAP_VERSION:
            raise BoneMapError(f"bone map version {doc['version']} is newer than this "
                               f"add-on reads ({MAP_VERSION})")
        return str(doc.get("name", "custom")), check_map(doc["bones"])
    return "custom", check_map(doc)


def save_map(path, mapping, name="custom"):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(map_to_json(mapping, name) + "\n")


def load_map(path):
    with open(path, "rb") as fh:
        return map_from_json(fh.read().decode("utf-8", errors="strict"))


# ---------------------------------------------------------------------------
# the numpy solve

def topological_order(parents):
    """Bone indices with every parent before its children."""
    parents = np.asarray(parents)
    depth = np.zeros(len(parents), dtype=np.int64)
    for i in range(len(parents)):
        j, d = parents[i], 0
        while j >= 0:
            j, d = parents[j], d + 1
            if d > len(parents):
                raise ValueError("the bone hierarchy has a cycle")
        depth[i] = d
    return np.argsort(depth, kind="stable")


def forward_pose(rest, parents, basis, order=None):
    """Armature-space pose matrices (N, B, 4, 4) from basis matrices
    (N, B, 4, 4) and rest matrices (B, 4, 4) (``bone.matrix_local``)."""
    rest = np.asarray(rest, dtype=np.float64)
    inv_rest = np.linalg.inv(rest)
    pose = np.empty(np.shape(basis), dtype=np.float64)
    for i in (topological_order(parents) if order is None else order):
        p = parents[i]
        if p < 0:
            pose[:, i] = rest[i] @ basis[:, i]
        else:
            pose[:, i] = _rows_times(pose[:, p], inv_rest[p] @ rest[i]) @ basis[:, i]
    return pose


def _rows_times(x, m):
    """x @ m for stacked (..., r, c) x and one (c, c) m, as a single GEMM."""
    return (x.reshape(-1, x.shape[-1]) @ m).reshape(x.shape)


def basis_from_channels(quats, locs=None):
    """(N, B, 4) quaternions and (N, B, 3) locations -> (N, B, 4, 4)."""
    from ..rotations import quaternion_to_matrix
    out = np.zeros(np.shape(quats)[:-1] + (4, 4))
    out[..., :3, :3] = quaternion_to_matrix(quats)
    if locs is not None:
        out[..., :3, 3] = locs
    out[..., 3, 3] = 1.0
    return out


def swing(a, b):
    """Smallest rotations (..., 3, 3) turning unit vectors a onto b."""
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    v = np.cross(a, b)
    c = np.sum(a * b, axis=-1)
    # antiparallel: turn 180 degrees about any axis perpendicular to a
    anti = c < -1 + 1e-9
    if np.any(anti):
        helper = np.where(np.abs(a[..., :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0])
        perp = np.cross(a, helper)
        perp /= np.linalg.norm(perp, axis=-1, keepdims=True)
        v = np.where(anti[..., None], perp, v)
    from ..rotations import skew
    k = skew(v)
    scale = np.where(anti, 0.0, 1.0 / np.maximum(1.0 + c, 1e-12))[..., None, None]
    half_turn = 2.0 * v[..., :, None] * v[..., None, :] - np.eye(3)
    return np.where(anti[..., None, None], half_turn, np.eye(3) + k + k @ k * scale)


def _const_times(m, x):
    """m @ x for one (3, 3) m and stacked (..., 3, 3) x, as a single GEMM."""
    xt = np.swapaxes(x, -1, -2)
    return np.swapaxes((xt.reshape(-1, 3) @ m.T).reshape(xt.shape), -1, -2)


def _times_each(x, m):
    """x[:, k] @ m[k] for (N, K, 3, 3) x and (K, 3, 3) m, one GEMM per k."""
    n, k = x.shape[:2]
    xk = np.ascontiguousarray(np.swapaxes(x, 0, 1)).reshape(k, n * 3, 3)
    return np.swapaxes((xk @ m).reshape(k, n, 3, 3), 0, 1)


class Skeleton:
    """What the solve needs of an armature: bone names, parent indices, rest
    matrices (``bone.matrix_local``) and the object's world matrix."""

    def __init__(self, names, parents, rest, world=None):
        self.names = list(names)
        self.parents = np.asarray(parents, dtype=np.int64)
        self.rest = np.asarray(rest, dtype=np.float64)
        self.world = np.eye(4) if world is None else np.asarray(world, dtype=np.float64)
        self.index = {n: i for i, n in enumerate(self.names)}

    @property
    def world_rotation(self):
        """Rotation of the object matrix (uniform scale assumed)."""
        return orthonormalize(self.world[:3, :3])

    def world_rest(self):
        return self.world @ self.rest

    def ancestors(self, i):
        out = []
        p = self.parents[i]
        while p >= 0:
            out.append(int(p))
            p = self.parents[p]
        return out


def leg_length(skel, mapping):
    """Mean hip-knee-ankle length over the mapped legs, in world units."""
    heads = skel.world_rest()[:, :3, 3]
    lengths = []
    for side in ("left", "right"):
        chain = [mapping.get(f"{side}_{j}") for j in ("hip", "knee", "ankle")]
        if all(c in skel.index for c in chain):
            p = heads[[skel.index[c] for c in chain]]
            lengths.append(np.linalg.norm(p[1] - p[0]) + np.linalg.norm(p[2] - p[1]))
    return float(np.mean(lengths)) if lengths else None


class RetargetSolution:
    """Per mapped target bone: basis rotations (N, K, 3, 3) and continuous
    quaternions (N, K, 4); the root bone's location channel (N, 3)."""

    def __init__(self, bones, rotations, quaternions, root_bone, root_location, scale,
                 rest_bones):
        self.bones = bones
        self.rotations = rotations
        self.quaternions = quaternions
        self.root_bone = root_bone
        self.root_location = root_location
        self.scale = scale
        self.rest_bones = rest_bones  # unmapped ancestors, held at rest


def solve(source, source_basis, target, mapping, root_motion=True):
    """Retarget a source motion onto a target skeleton.

    source, target: Skeleton. source_basis: (N, Bs, 4, 4) basis matrices of
    the source's bones (rotation, and location for the root). mapping:
    {source bone: target bone}. Returns a RetargetSolution.
    """
    mapping = {s: t for s, t in mapping.items() if s in source.index and t in target.index}
    if not mapping:
        raise BoneMapError("no bone of the map exists on both armatures")
    pairs = [(source.index[s], target.index[t]) for s, t in mapping.items()]
    src_idx = np.array([p[0] for p in pairs])
    tgt_of = {t: k for k, (_, t) in enumerate(pairs)}

    src_pose = forward_pose(source.rest, source.parents, source_basis)
    rs_m, rt_m = source.world_rotation, target.world_rotation
    rs0 = rs_m @ source.rest[src_idx, :3, :3]
    rt_rest = rt_m @ np.stack([target.rest[t, :3, :3] for _, t in pairs])
    # Calibration: swing each target bone's rest direction (its Y axis) onto
    # the direction of its source bone at the source's rest pose.
    rt0 = swing(rt_rest[..., :, 1], rs0[..., :, 1]) @ rt_rest
    offset = np.swapaxes(rs0, -1, -2) @ rt0
    # armature-space rotations (N, K, 3, 3): rt_m^T rs_m P(t) offset
    wanted = _times_each(_const_times(rt_m.T @ rs_m, src_pose[:, src_idx, :3, :3]), offset)

    needed = set()
    for _, t in pairs:
        needed.add(t)
        needed.update(target.ancestors(t))
    n = len(source_basis)
    rest_rot = target.rest[:, :3, :3]
    pose_rot = {}
    basis = np.empty((n, len(pairs), 3, 3))
    for i in topological_order(target.parents):
        if i not in needed:
            continue
        p = target.parents[i]
        # parent pose with this bone's basis = identity
        frame = rest_rot[i] if p < 0 else _rows_times(pose_rot[p], rest_rot[p].T @ rest_rot[i])
        if i in tgt_of:
            k = tgt_of[i]
            pose_rot[i] = wanted[:, k]
            basis[:, k] = np.swapaxes(frame, -1, -2) @ wanted[:, k]
        else:
            pose_rot[i] = np.broadcast_to(frame, (n, 3, 3))
    quats = matrix_to_quaternion(basis)
    quats = np.where(quats[:1, :, :1] < 0, -quats, quats)
    quats = make_quaternions_continuous(quats, axis=0)

    root_bone, root_loc, scale = None, None, 1.0
    if "pelvis" in mapping and root_motion:
        s_root, t_root = source.index["pelvis"], target.index[mapping["pelvis"]]
        ls = leg_length(source, {s: s for s in mapping})
        lt = leg_length(target, mapping)
        scale = lt / ls if ls and lt else 1.0
        p_s = (source.world @ src_pose[:, s_root])[:, :3, 3]
        p_s0 = (source.world @ source.rest[s_root])[:3, 3]
        p_t0 = (target.world @ target.rest[t_root])[:3, 3]
        head_world = p_t0 + scale * (p_s - p_s0)
        head = (np.linalg.inv(target.world) @ np.concatenate(
            [head_world, np.ones((n, 1))], axis=1).T).T[:, :3]
        # Unmapped ancestors stay at rest, so the bone's parent frame is its
        # own rest matrix.
        frame = target.rest[t_root]
        root_loc = (head - frame[:3, 3]) @ frame[:3, :3]
        root_bone = target.names[t_root]
    mapped_targets = {t for _, t in pairs}
    held = [target.names[i] for i in sorted(needed - mapped_targets)]
    return RetargetSolution([target.names[t] for _, t in pairs], basis, quats, root_bone,
                            root_loc, scale, held)


# ---------------------------------------------------------------------------
# Euler angles, Blender's orders ('XYZ' applies X first: R = Rz @ Ry @ Rx)

_AXIS = {"X": 0, "Y": 1, "Z": 2}
EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")


def _order_perm(order):
    i, j, k = (_AXIS[c] for c in order)
    perm = np.zeros((3, 3))
    perm[0, i] = perm[1, j] = perm[2, k] = 1.0
    return (i, j, k), perm, np.linalg.det(perm)


def matrix_to_euler(rot, order="XYZ"):
    """(..., 3, 3) -> (..., 3) angles about X, Y, Z (Blender's channel
    order) for the given rotation order; middle angle in [-pi/2, pi/2]."""
    (i, j, k), perm, parity = _order_perm(order)
    # Relabel the axes so the order reads XYZ; an odd relabelling mirrors
    # space and negates every angle.
    m = perm @ np.asarray(rot, dtype=np.float64) @ perm.T
    b = np.arcsin(np.clip(-m[..., 2, 0], -1.0, 1.0))
    a = np.arctan2(m[..., 2, 1], m[..., 2, 2])
    c = np.arctan2(m[..., 1, 0], m[..., 0, 0])
    gimbal = np.abs(m[..., 2, 0]) > 1 - 1e-9
    a = np.where(gimbal, np.arctan2(-m[..., 1, 2], m[..., 1, 1]), a)
    c = np.where(gimbal, 0.0, c)
    out = np.empty(np.shape(a) + (3,))
    out[..., i], out[..., j], out[..., k] = a * parity, b * parity, c * parity
    return out


def euler_to_matrix(angles, order="XYZ"):
    angles = np.asarray(angles, dtype=np.float64)
    mats = []
    for axis in range(3):
        t = angles[..., axis]
        c, s = np.cos(t), np.sin(t)
        m = np.zeros(t.shape + (3, 3))
        a, b = (axis + 1) % 3, (axis + 2) % 3
        m[..., axis, axis] = 1.0
        m[..., a, a], m[..., a, b], m[..., b, a], m[..., b, b] = c, -s, s, c
        mats.append(m)
    i, j, k = (_AXIS[ch] for ch in order)
    return mats[k] @ mats[j] @ mats[i]


def continuous_euler(rot, order="XYZ", axis=0):
    """Euler angles along time with 2*pi jumps removed (np.unwrap)."""
    return np.unwrap(matrix_to_euler(rot, order), axis=axis)


def bone_directions(world_matrices):
    """Unit Y axes (bone directions) of (..., 4, 4) world bone matrices."""
    y = np.asarray(world_matrices)[..., :3, 1]
    return y / np.linalg.norm(y, axis=-1, keepdims=True)


def angle_between(a, b):
    """Angles (radians) between unit vectors."""
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1))
