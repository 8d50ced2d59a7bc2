"""Anatomical reference frames of mapped bones, for the calibration (no bpy).

The retarget needs, for every mapped bone, a frame that means the same thing
on the source and on the target (see solve.py). A bone's own axes do not:
rolls are arbitrary, Blender's BVH importer points a joint with several
children at their average (a Mixamo BVH's Hips point down), and rest poses
differ (T-pose, A-pose, or every bone along +X as in LaFAN1). So the frames
are built from joint positions only, the heads of the mapped bones in the
world at rest, each one being the rotation with columns (x, y, z):

* Body axes. ``L`` (the subject's left) is the hip line, right hip -> left
  hip; ``U`` (up) is the mid-hip -> mid-shoulder direction made orthogonal
  to it; ``F`` (front) = L x U. The upper body uses the shoulder line
  instead of the hip line.
* Pelvis and spine1: (L, U, F) from the hip line; spine2, spine3, neck and
  the collars: the same from the shoulder line. All torso bones share the
  body frame, so each rig keeps its own spine curvature and collar shape,
  and the torso's up direction (mid-hips to mid-shoulders) and the shoulder
  line correspond exactly at rest. A collar that does not point within 45
  degrees of sideways at rest (LaFAN1's point up the spine) gets that frame
  turned by the smallest rotation from sideways onto its direction.
* Head: the face direction. A rig standing upright at rest looks level
  (face perpendicular to the world's up); a rig whose rest is not upright
  (LaFAN1's) continues its neck (face perpendicular to neck -> head). The
  head's left is the eye line when both eyes are mapped, else the shoulder
  line.
* Limbs: y is the direction from the joint to the next mapped joint of its
  chain (shoulder -> elbow -> wrist -> middle finger, hip -> knee -> ankle
  -> toes); the last bone of a chain uses its own head -> tail direction.
  x is the chain's hinge axis: the elbow and knee hinges of a standard pose
  (knee: L; left elbow: -U; right elbow: +U) carried onto the rig's limb by
  the smallest rotation from the standard limb direction (legs down, arms
  sideways, feet forward), or, where the limb is clearly bent at rest
  (above 10 degrees, fully from 20), the normal of its bend plane. Each
  further bone of the chain carries its parent's frame over by the smallest
  rotation; a hand whose index and little fingers are mapped takes its
  hinge from the palm (hand direction x (index - little finger base)).
  z = x cross y.

Nothing here reads bone rolls, so the frames of two rigs correspond whatever
their rolls and rest poses, as long as their rests are human: the limbs'
twist about themselves is only defined up to that standard pose.
"""
import numpy as np

from ..body.skeleton import FINGERS

BEND_START = np.radians(10.0)
BEND_FULL = np.radians(20.0)
_SIDES = (("left", 1.0), ("right", -1.0))


def _unit(v, fallback=None):
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v)
    if n < 1e-9:
        if fallback is None:
            raise ValueError("degenerate direction")
        return _unit(fallback)
    return v / n


def _perp(v, axis, fallback):
    """Unit component of v orthogonal to unit `axis` (fallback if parallel)."""
    w = v - np.dot(v, axis) * axis
    if np.linalg.norm(w) < 1e-6 * max(np.linalg.norm(v), 1e-12):
        w = fallback - np.dot(fallback, axis) * axis
    return _unit(w)


def swing_vector(a, b, tie_axis=None):
    """Smallest rotation (3, 3) turning unit a onto unit b; opposite vectors
    turn 180 degrees about tie_axis (made orthogonal to a)."""
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    if c < -1 + 1e-9:
        helper = tie_axis if tie_axis is not None else (
            [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0])
        k = _perp(np.asarray(helper, float), a, np.array([0.0, 0.0, 1.0]))
        return 2.0 * np.outer(k, k) - np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1.0 + c)


def _frame(x, y):
    """Rotation with columns (x, y, x cross y); x made orthogonal to y."""
    y = _unit(y)
    x = _perp(x, y, np.array([1.0, 0.0, 0.0]))
    return np.stack([x, y, np.cross(x, y)], axis=1)


def _torso_frame(left, up):
    """Columns (L, U, F) with L exact and U made orthogonal to it."""
    left = _unit(left)
    up = _perp(up, left, np.array([0.0, 0.0, 1.0]))
    return np.stack([left, up, np.cross(left, up)], axis=1)


def _chain(side, kind):
    if kind == "arm":
        return [f"{side}_{j}" for j in ("collar", "shoulder", "elbow", "wrist")]
    return [f"{side}_{j}" for j in ("hip", "knee", "ankle", "foot")]


def anatomical_frames(heads, tails, up_hint=None):
    """World rest frames (3, 3) of the mapped source bones.

    heads, tails: {source bone name: (3,) world rest head / tail of the bone
    it is mapped to}. up_hint: the world's up (default +Z). Needs both hips
    and both shoulders; returns {name: frame} for every name in heads."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in heads.items()}
    tails = {k: np.asarray(v, dtype=np.float64) for k, v in tails.items()}
    for need in ("left_hip", "right_hip", "left_shoulder", "right_shoulder"):
        if need not in p:
            raise ValueError(f"the calibration needs {need} mapped")
    mid_hip = 0.5 * (p["left_hip"] + p["right_hip"])
    mid_sh = 0.5 * (p["left_shoulder"] + p["right_shoulder"])
    up_raw = mid_sh - mid_hip
    lower = _torso_frame(p["left_hip"] - p["right_hip"], up_raw)
    upper = _torso_frame(p["left_shoulder"] - p["right_shoulder"], up_raw)
    frames = {}
    for name in ("pelvis", "spine1"):
        if name in p:
            frames[name] = lower
    for name in ("spine2", "spine3", "neck"):
        if name in p:
            frames[name] = upper
    for side, sign in _SIDES:
        name = f"{side}_collar"
        if name in p:
            y = _collar_direction(p, tails, side)
            lateral = sign * upper[:, 0]
            if np.dot(y, lateral) >= np.cos(np.radians(45.0)):
                frames[name] = upper
            else:  # a collar far from its neutral, sideways rest (LaFAN1's)
                frames[name] = swing_vector(lateral, y, tie_axis=upper[:, 1]) @ upper
    if "head" in p:
        frames["head"] = _head_frame(p, upper, up_hint)
    for name in ("jaw", "left_eye", "right_eye"):
        if name in p:
            frames[name] = frames.get("head", upper)

    def direction(name, nxt):
        """Joint -> first mapped joint of `nxt`, else the bone's own axis."""
        for n in nxt:
            if n in p:
                d = p[n] - p[name]
                if np.linalg.norm(d) > 1e-6:
                    return _unit(d)
        d = tails[name] - p[name]
        return _unit(d, fallback=[0.0, 0.0, 1.0])

    for side, sign in _SIDES:
        left, up, front = upper[:, 0], upper[:, 1], upper[:, 2]
        arm = _chain(side, "arm")[1:]
        hand_next = [f"{side}_middle1", f"{side}_ring1", f"{side}_index1", f"{side}_hand"]
        _limb_chain(frames, p, direction, arm, hand_next,
                    std_dir=sign * left, std_hinge=-sign * up, bend=(0, 1))
        wrist = f"{side}_wrist"
        if wrist in frames and f"{side}_index1" in p and f"{side}_pinky1" in p:
            y = frames[wrist][:, 1]
            palm = np.cross(y, p[f"{side}_index1"] - p[f"{side}_pinky1"])
            if np.linalg.norm(palm) > 1e-9:
                frames[wrist] = _frame(palm, y)
        if f"{side}_hand" in p and wrist in frames:  # SMPL's hand bone
            _carry(frames, wrist, f"{side}_hand", direction(f"{side}_hand", []))
        for finger in FINGERS:
            chain = [f"{side}_{finger}{k}" for k in (1, 2, 3)]
            if wrist in frames:
                _finger_chain(frames, p, direction, wrist, chain)
        lo_left, lo_up, lo_front = lower[:, 0], lower[:, 1], lower[:, 2]
        leg = _chain(side, "leg")
        _limb_chain(frames, p, direction, leg, leg[1:], std_dir=-lo_up, std_hinge=lo_left,
                    bend=(0, 1), foot_dir=lo_front)
    return frames


def is_upright(up, up_hint=None):
    """Whether a body's up direction is within 30 degrees of the world's."""
    hint = np.array([0.0, 0.0, 1.0]) if up_hint is None else _unit(up_hint)
    return float(np.dot(_unit(up), hint)) > np.cos(np.radians(30.0))


def _head_frame(p, upper, up_hint):
    """The head faces level (perpendicular to the world's up) when the rig
    stands upright at rest; otherwise (a rest like LaFAN1's, every bone
    along one axis) it continues its neck: the face is perpendicular to
    the neck -> head direction. Left is the eye line when both eyes are
    mapped, else the shoulder line."""
    if "left_eye" in p and "right_eye" in p:
        left = p["left_eye"] - p["right_eye"]
    else:
        left = upper[:, 0]
    if is_upright(upper[:, 1], up_hint):
        up = np.array([0.0, 0.0, 1.0]) if up_hint is None else _unit(up_hint)
    elif "neck" in p and np.linalg.norm(p["head"] - p["neck"]) > 1e-6:
        up = p["head"] - p["neck"]
    else:
        up = upper[:, 1]
    left = _perp(left, _unit(up), upper[:, 0])
    return _torso_frame(left, up)


def _collar_direction(p, tails, side):
    name = f"{side}_collar"
    for nxt in (f"{side}_shoulder", f"{side}_elbow"):
        if nxt in p and np.linalg.norm(p[nxt] - p[name]) > 1e-6:
            return _unit(p[nxt] - p[name])
    return _unit(tails[name] - p[name], fallback=[1.0, 0.0, 0.0])


def _carry(frames, parent, name, y):
    """Frame of `name`: the parent's frame turned by the smallest rotation
    from the parent's direction onto y."""
    par = frames[parent]
    s = swing_vector(par[:, 1], y, tie_axis=par[:, 0])
    frames[name] = _frame(s @ par[:, 0], y)


def _limb_chain(frames, p, direction, chain, nexts, std_dir, std_hinge, bend,
                foot_dir=None):
    mapped = [n for n in chain if n in p]
    if not mapped:
        return
    dirs = {}
    for n in mapped:
        later = chain[chain.index(n) + 1:]
        extra = [x for x in nexts if x not in chain]
        dirs[n] = direction(n, later + extra)
    first = mapped[0]
    std = std_dir
    if foot_dir is not None and first.endswith(("_ankle", "_foot")):
        std = foot_dir
    s = swing_vector(std, dirs[first], tie_axis=std_hinge)
    frames[first] = _frame(s @ std_hinge, dirs[first])
    prev = first
    for n in mapped[1:]:
        _carry(frames, prev, n, dirs[n])
        prev = n
    # bend plane of the two long bones (upper arm + forearm, thigh + shin)
    upper_name, lower_name = chain[bend[0]], chain[bend[1]]
    if upper_name in frames and lower_name in frames:
        a, b = dirs[upper_name], dirs[lower_name]
        angle = np.arctan2(np.linalg.norm(np.cross(a, b)), np.dot(a, b))
        w = np.clip((angle - BEND_START) / (BEND_FULL - BEND_START), 0.0, 1.0)
        if w > 0:
            normal = _unit(np.cross(a, b))
            hinge = frames[upper_name][:, 0]
            if np.dot(normal, hinge) < 0:
                normal = -normal
            frames[upper_name] = _frame((1 - w) * hinge + w * normal, a)
            prev = upper_name
            for n in mapped[mapped.index(upper_name) + 1:]:
                _carry(frames, prev, n, dirs[n])
                prev = n


def _finger_chain(frames, p, direction, wrist, chain):
    mapped = [n for n in chain if n in p]
    prev = wrist
    dirs = {}
    for n in mapped:
        dirs[n] = direction(n, chain[chain.index(n) + 1:])
        _carry(frames, prev, n, dirs[n])
        prev = n
    # a curled finger at rest: its bend plane gives the hinge
    if len(mapped) >= 2:
        a, b = dirs[mapped[0]], dirs[mapped[1]]
        angle = np.arctan2(np.linalg.norm(np.cross(a, b)), np.dot(a, b))
        w = np.clip((angle - BEND_START) / (BEND_FULL - BEND_START), 0.0, 1.0)
        if w > 0:
            normal = _unit(np.cross(a, b))
            hinge = frames[mapped[0]][:, 0]
            if np.dot(normal, hinge) < 0:
                normal = -normal
            frames[mapped[0]] = _frame((1 - w) * hinge + w * normal, a)
            prev = mapped[0]
            for n in mapped[1:]:
                _carry(frames, prev, n, dirs[n])
                prev = n


def body_axes(heads):
    """(L, U, F) of the lower body from mapped hip and shoulder heads."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in heads.items()}
    mid_hip = 0.5 * (p["left_hip"] + p["right_hip"])
    mid_sh = 0.5 * (p["left_shoulder"] + p["right_shoulder"])
    f = _torso_frame(p["left_hip"] - p["right_hip"], mid_sh - mid_hip)
    return f[:, 0], f[:, 1], f[:, 2]
