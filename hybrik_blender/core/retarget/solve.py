"""The numpy retarget solve (no bpy).

Both rigs are calibrated against anatomical frames (calibrate.py): for each
mapped bone b, with Rs0, Rt0 the world rest rotations of the source and
target bones and As, At their anatomical frames at rest, each frame's world
rotation of the target bone is::

    Rt(t) = Rs(t) @ Rs0^T @ As @ At^T @ Rt0

so the target bone's anatomical frame turns exactly like the source's. That
is independent of bone rolls, of where an importer pointed the bones, of
lengths and of the rest pose (T, A or anything human). World rotations
include the objects' rotations (a Mixamo rig's 0.01 scale and 90 degree X
turn are absorbed). Pose-bone channels follow from Blender's evaluation
(see blender_space.py)::

    Pose_i = Pose_parent @ (B_parent^-1 @ B_i) @ Basis_i

solved parent before child; target bones that are not mapped keep their rest
relation to their parent (identity basis).

Root motion
-----------
The root (the bone mapped to ``pelvis``) gets a location channel. Scale
``s`` is the ratio of leg lengths (hip -> knee -> ankle). Horizontally the
root's head moves from its rest position by ``s`` times the source pelvis'
displacement from its rest position. Vertically it is placed, frame by
frame, so that the target's feet meet the floor where the source's do: with
``low(t)`` the height of the lowest foot point (the ankle and toe heads
mapped on both rigs) above a rig's floor and ``h`` its height when the rig
stands flat,

    low_target(t) - h_target = s * (low_source(t) - h_source).

A rig's floor is the height of its object's origin. ``h`` comes from
``Skeleton.sole`` when the caller knows where the soles are (from a mesh),
else from the rest pose when the rig stands on its floor at rest (upright,
feet within reach of the floor), else it is ``s`` times the other rig's. Root modes: "world"
(the above), "in_place" (horizontal position held at rest, height still
matched to the floor) and "none" (no location channel).
"""
import concurrent.futures
import os

import numpy as np

from ..rotations import (make_quaternions_continuous, matrix_to_quaternion,
                         orthonormalize, quaternion_to_matrix)
from . import calibrate
from .euler import EULER_ORDERS, continuous_euler, euler_to_matrix, matrix_to_euler  # noqa: F401
from .maps import (BONE_NAMES, CORE_BONES, MAP_FORMAT, MAP_VERSION, PRESETS,  # noqa: F401
                   VRM_HUMAN_BONES, BoneMapError, best_partial_preset, check_map,
                   detect_preset, hierarchy_problems, load_map, map_from_json, map_score,
                   map_to_json, mapped_anatomical_parent, missing_core, normalize_name,
                   resolve_preset, save_map, validate_hierarchy, vrm_map)

ROOT_MODES = ("world", "in_place", "none")
CHUNK = 1024  # frames solved together (see solve)


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


def forward_pose(rest, parents, basis, order=None, inv_rest=None):
    """Armature-space pose matrices (N, B, 4, 4) from basis matrices
    (N, B, 4, 4) and rest matrices (B, 4, 4) (``bone.matrix_local``).
    order and inv_rest (optional): topological_order(parents) and the
    inverted rest matrices, for callers that pose many chunks of frames.
    The result is a (B, N)-ordered array seen as (N, B): each bone's frames
    are contiguous, so a parent's poses times a constant are one GEMM."""
    rest = np.asarray(rest, dtype=np.float64)
    if inv_rest is None:
        inv_rest = np.linalg.inv(rest)
    n, nb = np.shape(basis)[:2]
    pose = np.empty((nb, n, 4, 4))
    for i in (topological_order(parents) if order is None else order):
        p = parents[i]
        if p < 0:
            np.matmul(rest[i], basis[:, i], out=pose[i])
        else:
            rel = (pose[p].reshape(-1, 4) @ (inv_rest[p] @ rest[i])).reshape(n, 4, 4)
            np.matmul(rel, basis[:, i], out=pose[i])
    return np.swapaxes(pose, 0, 1)


def swing(a, b):
    """Smallest rotations (..., 3, 3) turning unit vectors a onto b:
    c I + [v]x + v v^T / (1 + c) with v = a x b, c = a . b."""
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
        # 2 v v^T - I for those: c = -1, no cross term, v v^T weight 2
        scale = np.where(anti, 2.0, 1.0 / np.maximum(1.0 + c, 1e-12))
        c = np.where(anti, -1.0, c)
        cross_w = np.where(anti, 0.0, 1.0)[..., None]
    else:
        scale = 1.0 / (1.0 + c)
        cross_w = 1.0
    return _rotation_parts(c, v * cross_w, v * np.sqrt(scale)[..., None])


def _rotation_parts(c, k, u):
    """c I + [k]x + u u^T for (...,) c and (..., 3) k, u."""
    out = np.empty(np.shape(c) + (3, 3))
    for i in range(3):
        for j in range(3):
            out[..., i, j] = u[..., i] * u[..., j]
        out[..., i, i] += c
    out[..., 0, 1] -= k[..., 2]
    out[..., 0, 2] += k[..., 1]
    out[..., 1, 0] += k[..., 2]
    out[..., 1, 2] -= k[..., 0]
    out[..., 2, 0] -= k[..., 1]
    out[..., 2, 1] += k[..., 0]
    return out


class Skeleton:
    """What the solve needs of an armature: bone names, parent indices, rest
    matrices (``bone.matrix_local``), the object's world matrix, and
    optionally the bone tails (armature space; default: 0.1 along each
    bone's Y axis) and ``sole``, the world height of the soles at rest when
    it is known (from a mesh; None: unknown)."""

    def __init__(self, names, parents, rest, world=None, tails=None, sole=None):
        self.names = list(names)
        self.parents = np.asarray(parents, dtype=np.int64)
        self.rest = np.asarray(rest, dtype=np.float64)
        self.world = np.eye(4) if world is None else np.asarray(world, dtype=np.float64)
        if tails is None:
            tails = self.rest[:, :3, 3] + 0.1 * self.rest[:, :3, 1]
        self.tails = np.asarray(tails, dtype=np.float64)
        self.sole = sole
        self.index = {n: i for i, n in enumerate(self.names)}

    @property
    def world_rotation(self):
        """Rotation of the object matrix (uniform scale assumed)."""
        return orthonormalize(self.world[:3, :3])

    @property
    def floor(self):
        """Height of the rig's floor: its object's origin."""
        return float(self.world[2, 3])

    def world_rest(self):
        return self.world @ self.rest

    def world_points(self, points):
        return np.asarray(points) @ self.world[:3, :3].T + self.world[:3, 3]

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


FOOT_POINTS = ("left_ankle", "right_ankle", "left_foot", "right_foot")


def foot_bones(skel, mapping):
    """Indices of the mapped ankle and toe bones (the foot points)."""
    return [skel.index[mapping[n]] for n in FOOT_POINTS
            if n in mapping and mapping[n] in skel.index]


def standing_foot_height(skel, mapping):
    """Height of the lowest foot point (mapped ankle and toe heads) above the
    soles when the rig stands: from ``skel.sole`` when known, else from the
    rest pose when the rig stands on its floor there (upright within 30
    degrees, lowest foot point between 5% of the leg length below and 30%
    above the floor); else None."""
    legs = leg_length(skel, mapping)
    feet = foot_bones(skel, mapping)
    need = ("left_hip", "right_hip", "left_shoulder", "right_shoulder")
    if not legs or not feet or not all(n in mapping for n in need):
        return None
    heads = skel.world_rest()[:, :3, 3]
    low = float(heads[feet, 2].min())
    if skel.sole is not None:
        return max(low - float(skel.sole), 0.0)
    _, up, _ = calibrate.body_axes({n: heads[skel.index[mapping[n]]] for n in need})
    if not calibrate.is_upright(up):
        return None
    low -= skel.floor
    if -0.05 * legs <= low <= 0.3 * legs:
        return max(low, 0.0)
    return None


def rig_frames(skel, mapping):
    """{source bone: anatomical world rest frame} of a mapped skeleton."""
    wr = skel.world_rest()
    heads = {s: wr[skel.index[t], :3, 3] for s, t in mapping.items()}
    tails = {s: skel.world_points(skel.tails[skel.index[t]]) for s, t in mapping.items()}
    return calibrate.anatomical_frames(heads, tails)


class RetargetSolution:
    """Per mapped target bone: basis rotations (N, K, 3, 3) and continuous
    quaternions (N, K, 4); the root bone's location channel (N, 3); the
    target bones held at rest (unmapped ancestors of mapped bones) and all
    unmapped bones."""

    def __init__(self, bones, rotations, quaternions, root_bone, root_location, scale,
                 rest_bones, unmapped=(), foot_heights=(None, None), world_rotations=None,
                 root_head=None):
        self.bones = bones
        self.rotations = rotations
        self.quaternions = quaternions
        self.root_bone = root_bone
        self.root_location = root_location
        self.scale = scale
        self.rest_bones = rest_bones
        self.unmapped = list(unmapped)
        self.foot_heights = foot_heights  # (source, target) standing heights used
        # what the channels make of the bones: world rotations (N, K, 3, 3)
        # and the root's head (N, 3) in world, for rigs driven by constraints
        self.world_rotations = world_rotations
        self.root_head = root_head


def _root_mode(root_motion):
    if root_motion is True:
        return "world"
    if root_motion is False or root_motion is None:
        return "none"
    mode = str(root_motion).lower()
    if mode not in ROOT_MODES:
        raise ValueError(f"root motion {root_motion!r} is not one of {', '.join(ROOT_MODES)}")
    return mode


def solve(source, source_basis, target, mapping, root_motion=True, chunk=CHUNK,
          threads=None):
    """Retarget a source motion onto a target skeleton.

    source, target: Skeleton. source_basis: (N, Bs, 4, 4) basis matrices of
    the source's bones (rotation, and location for the root). mapping:
    {source bone: target bone}; it must map the core bones (maps.CORE_BONES).
    root_motion: "world", "in_place" or "none" (True / False: "world" /
    "none"). Returns a RetargetSolution.

    Everything per frame is independent of the other frames except the
    quaternion signs, so the frames are solved in chunks of `chunk` (their
    working arrays stay in cache: 1.1-1.5x faster than whole clips of 10k
    frames) with all rig constants computed once, by `threads` threads
    (default: up to 4, one per CPU; numpy releases the GIL in its loops, so
    two cores solve 10k frames about 1.35x faster than one). Each chunk
    writes only its own rows, so the result does not depend on the count
    (to rounding).
    """
    mode = _root_mode(root_motion)
    mapping = {s: t for s, t in mapping.items() if s in source.index and t in target.index}
    if not mapping:
        raise BoneMapError("no bone of the map exists on both armatures")
    missing = missing_core(mapping)
    if missing:
        raise BoneMapError(f"the map leaves core bones unmapped: {', '.join(missing)}")
    names = [s for s in BONE_NAMES if s in mapping]
    smap = {s: s for s in names}
    pairs = [(source.index[s], target.index[mapping[s]]) for s in names]
    src_idx = np.array([p[0] for p in pairs])
    tgt_of = {t: k for k, (_, t) in enumerate(pairs)}

    s_order = topological_order(source.parents)
    s_inv_rest = np.linalg.inv(source.rest)
    rs_m, rt_m = source.world_rotation, target.world_rotation
    rs0 = rs_m @ source.rest[src_idx, :3, :3]
    rt0 = rt_m @ np.stack([target.rest[t, :3, :3] for _, t in pairs])
    a_s = rig_frames(source, smap)
    a_t = rig_frames(target, mapping)
    calib = np.stack([a_s[s] @ a_t[s].T for s in names])
    offset = np.swapaxes(rs0, -1, -2) @ calib @ rt0
    spine = _spine_curve(source, target, mapping, names, a_s, a_t)
    shoulders = _shoulders(source, target, mapping, names, a_s, a_t)

    needed = set()
    for _, t in pairs:
        needed.add(t)
        needed.update(target.ancestors(t))
    # Each mapped bone's parent frame (its parent's pose with this bone's
    # basis = identity) is anc @ rel: anc the pose of its nearest mapped
    # ancestor (identity when it has none) and rel the rest relations of
    # the unmapped bones in between, which stay at rest.
    rest_rot = target.rest[:, :3, :3]
    anc = np.full(len(pairs), -1)
    rel = np.empty((len(pairs), 3, 3))
    for k, (_, t) in enumerate(pairs):
        r, i = np.eye(3), t
        while True:
            p = target.parents[i]
            if p < 0:
                r = rest_rot[i] @ r
                break
            r = (rest_rot[p].T @ rest_rot[i]) @ r
            if p in tgt_of:
                anc[k] = tgt_of[p]
                break
            i = p
        rel[k] = r
    rel_t = np.swapaxes(rel, -1, -2)
    no_anc = anc < 0

    t_root = target.index[mapping["pelvis"]]
    ls = leg_length(source, smap)
    lt = leg_length(target, mapping)
    scale = lt / ls if ls and lt else 1.0
    heights = _foot_heights(source, smap, target, mapping, scale)
    if mode != "none":
        s_root = source.index["pelvis"]
        p_s0 = (source.world @ source.rest[s_root])[:3, 3]
        p_t0 = (target.world @ target.rest[t_root])[:3, 3]
        src_feet = foot_bones(source, smap)
        feet = _foot_offsets(target, mapping, names, t_root)

    n = len(source_basis)
    basis = np.empty((n, len(pairs), 3, 3))
    quats = np.empty((n, len(pairs), 4))
    tgt_world_all = np.empty((n, len(pairs), 3, 3))
    head_world = np.empty((n, 3)) if mode != "none" else None

    def solve_chunk(sl):
        src_pose = forward_pose(source.rest, source.parents, source_basis[sl], s_order,
                                s_inv_rest)
        src_world = rs_m @ src_pose[:, src_idx, :3, :3]
        tgt_world = np.matmul(src_world, offset, out=tgt_world_all[sl])
        if spine is not None:
            spine(src_pose, tgt_world)
        if shoulders is not None:
            shoulders(src_pose, tgt_world)
        # The armature-space rotations are rt_m^T @ tgt_world, so a bone's
        # basis is rel^T @ tgt_anc^T @ tgt_world (rt_m cancels; rt_m itself
        # for a bone without a mapped ancestor).
        anc_w = tgt_world[:, np.maximum(anc, 0)]
        anc_w[:, no_anc] = rt_m
        np.matmul(rel_t, np.swapaxes(anc_w, -1, -2) @ tgt_world, out=basis[sl])
        quats[sl] = matrix_to_quaternion(basis[sl])
        if mode != "none":
            p_s = source.world_points(src_pose[:, s_root, :3, 3])
            hw = head_world[sl]
            if mode == "world":
                hw[:, :2] = p_t0[:2] + scale * (p_s[:, :2] - p_s0[:2])
            else:
                hw[:, :2] = p_t0[:2]
            low_s = _lowest(source.world_points(src_pose[:, src_feet][..., :3, 3]))
            # target foot points with the root at rest: positions relative to it
            low_t0 = _lowest(feet(tgt_world)) + p_t0[2] - target.floor
            hw[:, 2] = p_t0[2] + (heights[1] + scale * (low_s - source.floor - heights[0])
                                  - low_t0)

    step = max(int(chunk), 1)
    chunks = [slice(i, min(i + step, n)) for i in range(0, n, step)]
    if threads is None:
        threads = min(4, os.cpu_count() or 1)
    if threads > 1 and len(chunks) > 1:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(solve_chunk, chunks))
    else:
        for sl in chunks:
            solve_chunk(sl)
    quats = np.where(quats[:1, :, :1] < 0, -quats, quats)
    quats = make_quaternions_continuous(quats, axis=0)

    root_bone, root_loc = None, None
    if mode != "none":
        head = (head_world - target.world[:3, 3]) @ np.linalg.inv(target.world[:3, :3]).T
        # Unmapped ancestors stay at rest, so the bone's parent frame is its
        # own rest matrix.
        frame = target.rest[t_root]
        root_loc = (head - frame[:3, 3]) @ frame[:3, :3]
        root_bone = target.names[t_root]
    mapped_targets = {t for _, t in pairs}
    held = [target.names[i] for i in sorted(needed - mapped_targets)]
    unmapped = [nm for i, nm in enumerate(target.names) if i not in mapped_targets]
    return RetargetSolution([target.names[t] for _, t in pairs], basis, quats, root_bone,
                            root_loc, scale, held, unmapped, heights, tgt_world_all,
                            head_world)


SPINE_CHAIN = ("pelvis", "spine1", "spine2", "spine3", "neck", "head")


def _curve_point(points, cum, f):
    """Points (N, 3) at arc-length fraction f of polylines (N, M, 3) whose
    vertices sit at fractions cum (M,)."""
    k = int(np.clip(np.searchsorted(cum, f, side="right") - 1, 0, len(cum) - 2))
    w = (f - cum[k]) / max(cum[k + 1] - cum[k], 1e-12)
    return (1.0 - w) * points[:, k] + w * points[:, k + 1]


def _fractions(points):
    d = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])
    return d / max(d[-1], 1e-12)


def _spine_curve(source, target, mapping, names, a_s, a_t):
    """Bend the target's spine like the source's spine curve: returns a
    function (src_pose, tgt_world) that turns the target spine bones' world
    rotations tgt_world (N, K, 3, 3) in place, or None when there is no
    spine to bend.

    Both spines are polylines from the mid-hip point through the mapped spine
    joints to the neck and head, with points addressed by their fraction of
    its rest length. The source curve's displacement from its rest shape,
    seen from the pelvis (in its anatomical frame) and scaled by the ratio
    of spine lengths, is added to the target's rest curve; each mapped spine
    bone is then turned by the smallest rotation that points it along the
    displaced target curve between its own joints. At rest, and when only
    the pelvis moves, that is no turn at all; otherwise the target's spine
    joints follow the source's bending whatever the two rigs' spine bone
    counts, spacing and rest curvature, while each bone keeps the twist its
    own source bone gave it."""
    chain = [n for n in SPINE_CHAIN if n in names]
    if len(chain) < 3 or chain[0] != "pelvis":
        return None
    end = chain[-1]
    src_chain = list(SPINE_CHAIN[:SPINE_CHAIN.index(end) + 1])
    t_idx = [target.index[mapping[n]] for n in chain]
    s_idx = [source.index[n] for n in src_chain]
    # the curves start at the mid-hip point, where the torso's up direction
    # is measured from, not at the pelvis joint (which rigs put anywhere
    # between the hips and the waist)
    hips_t = [target.index[mapping[n]] for n in ("left_hip", "right_hip")]
    hips_s = [source.index[n] for n in ("left_hip", "right_hip")]
    t_rest = target.world_points(target.rest[t_idx, :3, 3])
    t_rest[0] = target.world_points(target.rest[hips_t, :3, 3]).mean(axis=0)
    s_rest = source.world_points(source.rest[s_idx, :3, 3])
    s_rest[0] = source.world_points(source.rest[hips_s, :3, 3]).mean(axis=0)
    f_t, f_s = _fractions(t_rest), _fractions(s_rest)
    length_t = np.sum(np.linalg.norm(np.diff(t_rest, axis=0), axis=1))
    length_s = np.sum(np.linalg.norm(np.diff(s_rest, axis=0), axis=1))
    ratio = length_t / max(length_s, 1e-12)
    ip = names.index("pelvis")
    i_sp = source.index["pelvis"]
    rs_m = source.world_rotation
    rs_p0 = rs_m @ source.rest[i_sp, :3, :3]
    # source rest -> target rest directions, through the pelvis frames
    m = a_t["pelvis"] @ a_s["pelvis"].T
    rt_p0 = target.world_rotation @ target.rest[t_idx[0], :3, :3]
    rel_rest = s_rest - s_rest[:1]
    bones = []
    for k, a in enumerate(chain[1:-1], start=1):
        rest_chord = t_rest[k + 1] - t_rest[k]
        if np.linalg.norm(rest_chord) < 1e-9:
            continue
        fa, fb = f_t[k], f_t[k + 1]
        pts0 = np.stack([_curve_point(rel_rest[None], f_s, f)[0] for f in (fa, fb)])
        rt0 = target.world_rotation @ target.rest[t_idx[k], :3, :3]
        # the chest carries the shoulders: it turns about its shoulder line
        # only (bending forward and back), so the line keeps the source
        # chest's direction
        axis = rt0.T @ a_t["spine3"][:, 0] if a == "spine3" else None
        bones.append((names.index(a), fa, fb, pts0, rest_chord, rt0.T @ rest_chord, axis))

    def apply(src_pose, tgt_world):
        s_pose = source.world_points(src_pose[:, s_idx][..., :3, 3])
        s_pose[:, 0] = source.world_points(src_pose[:, hips_s][..., :3, 3]).mean(axis=1)
        # source pelvis motion: rotation delta
        g_s = rs_m @ src_pose[:, i_sp, :3, :3] @ rs_p0.T
        g_t = tgt_world[:, ip] @ rt_p0.T
        rel = s_pose - s_pose[:, :1]
        for j, fa, fb, pts0, rest_chord, local_chord, axis in bones:
            pts = np.stack([_curve_point(rel, f_s, f) for f in (fa, fb)], axis=1)
            disp = pts @ g_s - pts0  # in the pelvis' rest frame
            chord_disp = (disp[:, 1] - disp[:, 0]) @ m.T * ratio
            want = (g_t @ (rest_chord + chord_disp)[:, :, None])[:, :, 0]
            carried = tgt_world[:, j] @ local_chord
            if axis is not None:
                turn = _about_axis(tgt_world[:, j] @ axis, carried, want)
            else:
                turn = swing(carried, want)
            tgt_world[:, j] = turn @ tgt_world[:, j]
    return apply


def _about_axis(axis, a, b):
    """Rotations (N, 3, 3) about unit axes (N, 3) taking the component of a
    perpendicular to the axis onto that of b (identity where either has
    none): cos t I + sin t [u]x + (1 - cos t) u u^T."""
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    pa = a - np.sum(a * axis, -1, keepdims=True) * axis
    pb = b - np.sum(b * axis, -1, keepdims=True) * axis
    sin = np.sum(np.cross(pa, pb) * axis, -1)
    cos = np.sum(pa * pb, -1)
    r = np.hypot(sin, cos)
    zero = r < 1e-300
    r = np.where(zero, 1.0, r)
    cos = np.where(zero, 1.0, cos / r)
    sin = np.where(zero, 0.0, sin / r)
    return _rotation_parts(cos, sin[:, None] * axis,
                           np.sqrt(np.maximum(1.0 - cos, 0.0))[:, None] * axis)


def _shoulders(source, target, mapping, names, a_s, a_t):
    """Move the target's shoulder joints like the source's: returns a
    function (src_pose, tgt_world) that turns the collars' world rotations in
    place, or None without a mapped chest. Each collar is turned by the
    smallest rotation that puts its shoulder end where the source shoulder's
    displacement from rest, seen from the chest and scaled by the ratio of
    shoulder widths, says. Collars of other shapes (from the sternum, from
    the spine, short or long) then keep the shoulder line of the source."""
    if "spine3" not in names:
        return None
    chest = "spine3"
    k_c = names.index(chest)
    i_cs, i_ct = source.index[chest], target.index[mapping[chest]]
    rs_m = source.world_rotation
    rs_c0 = rs_m @ source.rest[i_cs, :3, :3]
    rt_c0 = target.world_rotation @ target.rest[i_ct, :3, :3]
    m = a_t[chest] @ a_s[chest].T
    s_rest = source.world_points(source.rest[:, :3, 3])
    t_rest = target.world_points(target.rest[:, :3, 3])
    sh = [(source.index[f"{s}_shoulder"], target.index[mapping[f"{s}_shoulder"]])
          for s in ("left", "right")]
    # the shoulders as the target's neutral collars put them (see
    # calibrate.py: a collar that does not point sideways at rest)
    neutral = {}
    for side, (_, i_st) in zip(("left", "right"), sh):
        collar = f"{side}_collar"
        if collar in names:
            i_col = target.index[mapping[collar]]
            rest_chord = t_rest[i_st] - t_rest[i_col]
            neutral[side] = (i_col, rest_chord, a_t[chest] @ a_t[collar].T @ rest_chord)
    ends = [t_rest[neutral[s][0]] + neutral[s][2] if s in neutral else t_rest[i]
            for s, (_, i) in zip(("left", "right"), sh)]
    width = np.linalg.norm(ends[0] - ends[1]) / max(
        np.linalg.norm(s_rest[sh[0][0]] - s_rest[sh[1][0]]), 1e-12)
    collars = []
    for side, (i_ss, _) in zip(("left", "right"), sh):
        if side not in neutral:
            continue
        i_col, rest_chord, chord0 = neutral[side]
        if np.linalg.norm(rest_chord) < 1e-9:
            continue
        rt0 = target.world_rotation @ target.rest[i_col, :3, :3]
        collars.append((i_ss, names.index(f"{side}_collar"), s_rest[i_ss] - s_rest[i_cs],
                        chord0, rt0.T @ rest_chord))
    if not collars:
        return None

    def apply(src_pose, tgt_world):
        g_s = rs_m @ src_pose[:, i_cs, :3, :3] @ rs_c0.T
        g_t = tgt_world[:, k_c] @ rt_c0.T
        chest_pos = source.world_points(src_pose[:, i_cs, :3, 3])
        for i_ss, k, rest_rel, chord0, local_chord in collars:
            rel = source.world_points(src_pose[:, i_ss, :3, 3]) - chest_pos
            disp = (rel[:, None] @ g_s)[:, 0] - rest_rel
            want = (g_t @ (chord0 + width * disp @ m.T)[:, :, None])[:, :, 0]
            carried = tgt_world[:, k] @ local_chord
            tgt_world[:, k] = swing(carried, want) @ tgt_world[:, k]
    return apply


def _lowest(points):
    """Lowest z over (N, K, 3) points -> (N,)."""
    return np.asarray(points)[..., 2].min(axis=1)


def _foot_offsets(target, mapping, names, t_root):
    """A function of the solved world rotations tgt_world (N, K, 3, 3) giving
    the world offsets (N, F, 3) of the target's foot points from the root's
    rest head, with the root at rest: each mapped joint hangs from its
    nearest mapped anatomical parent, rigidly with that bone (unmapped bones
    between them stay at rest). This needs no hierarchy, so it holds for
    rigs driven by constraints too."""
    feet = [n for n in FOOT_POINTS if n in names]
    wr = target.world_rest()
    head0 = {n: wr[target.index[mapping[n]], :3, 3] for n in names}
    rot0 = {n: orthonormalize(wr[target.index[mapping[n]], :3, :3]) for n in names}
    # each foot's chain of (bone carrying the segment, segment in that
    # bone's rest frame), from the pelvis down
    chains = []
    for f in feet:
        links, name = [], f
        while name != "pelvis":
            par = mapped_anatomical_parent(name, names)
            links.append((names.index(par), rot0[par].T @ (head0[name] - head0[par])))
            name = par
        chains.append(links[::-1])

    def offsets(tgt_world):
        n = tgt_world.shape[0]
        out = np.zeros((n, len(chains), 3))
        for c, links in enumerate(chains):
            for k, seg in links:
                out[:, c] += tgt_world[:, k] @ seg
        return out
    return offsets


def _foot_heights(source, smap, target, tmap, scale):
    """(h_source, h_target): each rig's lowest foot point height when it
    stands flat (see the module docstring)."""
    hs = standing_foot_height(source, smap)
    ht = standing_foot_height(target, tmap)
    if hs is None and ht is None:
        return 0.0, 0.0
    if hs is None:
        hs = ht / scale
    if ht is None:
        ht = hs * scale
    return float(hs), float(ht)


def bone_directions(world_matrices):
    """Unit Y axes (bone directions) of (..., 4, 4) world bone matrices."""
    y = np.asarray(world_matrices)[..., :3, 1]
    return y / np.linalg.norm(y, axis=-1, keepdims=True)


def angle_between(a, b):
    """Angles (radians) between unit vectors."""
    return np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1))
