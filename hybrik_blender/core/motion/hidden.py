"""Hidden and low-confidence joints hold a plausible pose instead of jittering.

A landmark detector still answers for joints it cannot see (out of frame,
behind the body): those answers jump from frame to frame. Each joint's
rotation comes with a confidence (0..1, :func:`..align.refine.evidence_weight`
turns it into a weight w). Per joint, frame by frame (causal, like a
filter), with the previous output ``o``:

* the *fallback* is the mirror image of the other side's joint when that one
  is seen (w > 0.5; the sagittal mirror ``M R M``, M = diag(-1, 1, 1) in
  SMPL's frame), else the relaxed rest pose (:data:`RELAXED`: legs straight,
  arms hanging 70 degrees down, not SMPL's T-pose);
* the *held* pose eases from ``o`` to the fallback with time constant
  ``ease_s`` (default 1 s: a short occlusion keeps the last good pose, a
  long one settles on the fallback);
* the *wanted* pose is the slerp from held to measured by w;
* the output moves from ``o`` towards the wanted pose, at most
  ``max_speed_deg_s / (1 - w)`` degrees per second: a joint that is not seen
  moves slowly (90 deg/s, 3 deg per frame at 30 fps), a seen one follows its
  landmarks at full speed.

The root's global orientation (joint 0) has no rest to go to: it holds its
last good value. Before the first good frame of a joint its first good pose
is the starting point (the whole clip offline is known). A joint never seen
in the clip starts at its fallback.
"""
import numpy as np

from ..rotations import axis_angle_to_matrix, matrix_to_quaternion, quaternion_to_matrix

EASE_S = 1.0
MAX_HIDDEN_SPEED_DEG_S = 90.0
SEEN = 0.5
MIRROR_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21),
                (22, 23))
_MIRROR = np.diag([-1.0, 1.0, 1.0])


def relaxed_pose():
    """(24, 3, 3) local rotations of a relaxed standing pose: SMPL's rest
    with the upper arms turned 70 degrees down about the body's front axis."""
    rot = np.tile(np.eye(3), (24, 1, 1))
    rot[16] = axis_angle_to_matrix(np.array([0.0, 0.0, -np.radians(70.0)]))
    rot[17] = axis_angle_to_matrix(np.array([0.0, 0.0, np.radians(70.0)]))
    return rot


RELAXED = relaxed_pose()


def _mirror_index():
    idx = np.arange(24)
    for a, b in MIRROR_PAIRS:
        idx[a], idx[b] = b, a
    return idx


MIRROR_OF = _mirror_index()


def _angle(a, b):
    """Angle between unit quaternions (..., 4), radians."""
    return 2.0 * np.arccos(np.clip(np.abs(np.sum(a * b, -1)), 0.0, 1.0))


def _slerp(a, b, t):
    """Slerp of unit quaternions (..., 4) by t (...), shortest way."""
    d = np.sum(a * b, -1)
    b = np.where(d[..., None] < 0, -b, b)
    d = np.abs(d)
    theta = np.arccos(np.clip(d, -1.0, 1.0))
    s = np.sin(theta)
    small = s < 1e-6
    wa = np.where(small, 1 - t, np.sin((1 - t) * theta) / np.where(small, 1, s))
    wb = np.where(small, t, np.sin(t * theta) / np.where(small, 1, s))
    out = wa[..., None] * a + wb[..., None] * b
    return out / np.linalg.norm(out, axis=-1, keepdims=True)


def _mirror_quat(q):
    """Sagittal mirror M R M of rotations given as quaternions: (w, -x, y, z)
    becomes (w, x, -y, -z) up to sign, i.e. the y and z parts flip."""
    return q * np.array([1.0, 1.0, -1.0, -1.0])


def hold_hidden_joints(rotmats, weights, valid, time_s, ease_s=EASE_S,
                       max_speed_deg_s=MAX_HIDDEN_SPEED_DEG_S, mirror=True):
    """Rotations (N, 24, 3, 3) with hidden joints held (module docstring).

    weights (N, 24) 0..1 per joint (already mapped from confidences), valid
    (N,) rows with a person (others are skipped and left as they are),
    time_s (N,) seconds. Returns float64 rotations."""
    rot = np.asarray(rotmats, np.float64)
    w = np.clip(np.asarray(weights, np.float64), 0.0, 1.0)
    valid = np.asarray(valid, bool)
    out = rot.copy()
    rows = np.flatnonzero(valid)
    if not len(rows):
        return out
    q = matrix_to_quaternion(rot[rows])                       # (M, 24, 4)
    wv = w[rows]
    t = np.asarray(time_s, np.float64)[rows]
    relaxed = matrix_to_quaternion(RELAXED)
    good = wv > SEEN
    first = np.argmax(good, 0)
    start = np.where(good.any(0)[:, None], q[first, np.arange(24)], relaxed)
    start[0] = q[first[0], 0]
    prev = start
    res = np.empty_like(q)
    max_rate = np.radians(max_speed_deg_s)
    for i in range(len(rows)):
        dt = t[i] - t[i - 1] if i else 0.0
        dt = max(dt, 0.0)
        fallback = relaxed.copy()
        if mirror:
            other = wv[i, MIRROR_OF] > SEEN
            mirrored = _mirror_quat(prev[MIRROR_OF])
            fallback = np.where(other[:, None], mirrored, fallback)
        fallback[0] = prev[0]
        held = _slerp(prev, fallback, np.full(24, 1.0 - np.exp(-dt / ease_s)))
        want = _slerp(held, q[i], wv[i])
        if i == 0:
            step_max = np.full(24, np.inf)
        else:
            step_max = max_rate * dt / np.maximum(1.0 - wv[i], 1e-6)
        ang = _angle(prev, want)
        frac = np.where(ang > step_max, step_max / np.maximum(ang, 1e-12), 1.0)
        if i == 0:
            frac = np.ones(24)
        cur = _slerp(prev, want, frac)
        res[i] = cur
        prev = cur
    out[rows] = quaternion_to_matrix(res)
    # joints seen with full weight keep their exact measured rotation
    full = np.zeros_like(w, bool)
    full[rows] = wv >= 1.0
    out[full] = rot[full]
    return out
