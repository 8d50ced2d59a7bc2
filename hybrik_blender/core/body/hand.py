"""The hand: rest geometry, forward kinematics and the analytic finger IK.

Conventions
-----------
* A *rest hand* is a (20, 3) array in SMPL-X's rest axes (+X the subject's
  left, +Y up, +Z front; T-pose, palms down), metres, relative to the wrist
  joint: rows 0-14 are the 15 finger joints of one hand in SMPL-X order
  (index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3; see
  ``skeleton.HAND_JOINT_NAMES``), rows 15-19 the fingertips in ``FINGERS``
  order. Joint 1 of a finger is its knuckle (MCP; for the thumb the base of
  its metacarpal, CMC), joints 2 and 3 the next two; the tip is the
  fingertip vertex.
* Finger rotations are exactly what smplx's ``left_hand_pose`` /
  ``right_hand_pose`` mean with ``flat_hand_mean=True``: the local rotation
  of each finger joint relative to its parent (the wrist for joint 1), with
  every rest frame aligned with the body's rest axes, so that the identity
  is the flat rest hand. Global rotation of a finger joint = global wrist
  rotation @ local rotations down the chain.
* The 21 hand landmarks are in mediapipe's order (0 wrist; thumb 1-4;
  index 5-8; middle 9-12; ring 13-16; pinky 17-20). SMPL-X's finger joints
  map one to one onto them (``LANDMARK_CHAINS``).

The IK (:func:`solve_hand`)
---------------------------
All the geometry is built for a *left* hand. A right hand is mirrored
(x -> -x) into a left one, solved, and every rotation mirrored back
(``M R M``, M = diag(-1, 1, 1)), so the anatomical parameters, limits and the
relaxed pose mean the same on both sides.

1. Palm. The wrist's global rotation is the weighted Kabsch fit of the rest
   palm (wrist, the four knuckles, the thumb base) onto the observed one.
2. Fingers. A knuckle has two degrees of freedom, the two finger joints one
   each: joint 1 = ``R_n(alpha) R_b(phi1)``, joints 2 and 3 = ``R_b(phi)``,
   with ``n`` the palm's dorsal normal (abduction axis) and ``b = n x a`` the
   finger's bend axis (a: knuckle -> fingertip at rest). Rotations about b
   keep every segment's angle to b, so after the abduction each observed
   segment u_k satisfies ``u_k . R_n(alpha) b = a_k . b``: the abduction is
   the 1-D least-squares solution of those three equations (closed-form
   start, Gauss-Newton, a tiny pull to 0 that only matters where the finger
   points along n and the abduction is unobservable). The flexions are then
   the signed angles about b between rest and observed segments, minus the
   joints before. This is exact for any rest geometry, curved or not.
3. Thumb. Its base (CMC) is a free joint: the swing takes the rest
   metacarpal onto the observed one, the twist about it is the angle that
   puts the thumb's bend axis where the two distal segments say (same 1-D
   equations, solved from a coarse grid, pulled weakly to 0 when the thumb
   is straight and the twist unobservable). Thumb MCP and IP are hinges
   about that bend axis.
4. Anatomical limits (``LIMITS_DEG``) clip each parameter.

Parameters per hand (21): for index, middle, pinky, ring
``(abduction, flexion1, flexion2, flexion3)``; then the thumb
``(swing_1, swing_2, twist, flexion2, flexion3)`` where the swing is the
rotation vector of the CMC swing in the basis (e1, e2) perpendicular to the
rest metacarpal. All in radians; flexion is positive towards the palm.

The average rest hand
---------------------
:func:`average_hand_rest` is this project's own table for an adult of 1.70 m
(the stature of ``core.body.average``), scaled with stature: hand length
(wrist to middle fingertip) 0.108 H and wrist to middle knuckle 0.05 H, the
same ratios as the average skeleton; phalanx lengths (knuckle-to-joint,
joint-to-joint, last joint-to-fingertip) in the proportions that hand
anthropometry reports, about 1 : 0.62 : 0.57 for the middle finger, the index
and ring a little shorter and the little finger about 3/4 of the middle
finger; a slight fan of the fingers (index +4 degrees, ring -4, little -9
degrees); the thumb 30 degrees from the index in the palm plane, tilted 10
degrees palmar, its nail turned 45 degrees from the back of the hand. With an
SMPL-X model the model's own rest hand is used instead
(:func:`hand_rest_from_smplx`).
"""
import numpy as np

from ..rotations import axis_angle_to_matrix, matrix_to_quaternion, quaternion_to_matrix
from .skeleton import FINGERS

STATURE = 1.70
NUM_PARAMS = 21
MIRROR = np.diag([-1.0, 1.0, 1.0])

# Landmark index of joints 1-3 and the tip of each SMPL-X finger (FINGERS order).
LANDMARK_CHAINS = np.array([[5, 6, 7, 8], [9, 10, 11, 12], [17, 18, 19, 20],
                            [13, 14, 15, 16], [1, 2, 3, 4]], dtype=np.int64)
PALM_LANDMARKS = np.array([0, 5, 9, 13, 17, 1], dtype=np.int64)
PALM_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.5])
# SMPL-X fingertip vertices (smplx's vertex_ids), FINGERS order.
SMPLX_TIP_VERTICES = {"left": (4933, 5058, 5286, 5169, 5361),
                      "right": (7669, 7794, 8022, 7905, 8079)}
SMPLX_WRIST = {"left": 20, "right": 21}

SEGMENT_WEIGHTS = np.array([1.0, 1.0, 0.5])
ABDUCTION_PRIOR = 2e-4      # relative weight pulling the abduction to 0
THUMB_TWIST_PRIOR = 2e-4    # the same for the thumb's twist
THUMB_NAIL_DEG = 45.0
CURVED_THUMB_DEG = 15.0     # a rest thumb bent more than this defines its own bend plane

# Anatomical limits (degrees), from the usual goniometric ranges with some
# allowance for landmark error. Abduction is symmetric (its sign differs
# between the radial and ulnar fingers); the thumb's swing is a cone.
LIMITS_DEG = {
    "abduction": {"index": 25.0, "middle": 20.0, "pinky": 30.0, "ring": 20.0},
    "flexion": ((-30.0, 95.0), (-10.0, 115.0), (-20.0, 95.0)),
    "thumb_swing": 70.0, "thumb_twist": (-60.0, 60.0),
    "thumb_flexion": ((-20.0, 75.0), (-30.0, 90.0)),
}
# A relaxed hand (degrees): what hands that are not seen ease to. Fingers
# slightly flexed, more so towards the little finger; the thumb slightly
# flexed towards the palm.
RELAXED_DEG = {
    "index": (0.0, 20.0, 30.0, 12.0), "middle": (0.0, 25.0, 35.0, 15.0),
    "pinky": (0.0, 35.0, 40.0, 18.0), "ring": (0.0, 30.0, 38.0, 16.0),
    "thumb": (10.0, 0.0, 0.0, 15.0, 15.0),
}

# The average left hand: knuckle positions (x, y, z as fractions of
# stature), segment lengths (fractions of stature) and fan angle.
_KNUCKLES = {"index": (0.0482, -0.0024, 0.0141), "middle": (0.0500, -0.0024, 0.0024),
             "ring": (0.0471, -0.0035, -0.0082), "pinky": (0.0424, -0.0053, -0.0182)}
_SEGMENTS = {"index": (0.0241, 0.0147, 0.0135), "middle": (0.0265, 0.0165, 0.0150),
             "ring": (0.0253, 0.0159, 0.0141), "pinky": (0.0194, 0.0118, 0.0129)}
_FAN_DEG = {"index": 4.0, "middle": 0.0, "ring": -4.0, "pinky": -9.0}
_THUMB_BASE = (0.0147, -0.0071, 0.0118)
_THUMB_SEGMENTS = (0.0271, 0.0188, 0.0176)
_THUMB_SPREAD_DEG, _THUMB_TILT_DEG = 30.0, 10.0


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _check_side(side):
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', not {side!r}")


def average_hand_rest(side, stature=STATURE):
    """The built-in average hand: (20, 3) rest hand (see the module docstring)
    relative to the wrist, SMPL-X rest axes, metres."""
    _check_side(side)
    out = np.zeros((20, 3))
    for f, name in enumerate(FINGERS[:4]):
        a = np.radians(_FAN_DEG[name])
        d = np.array([np.cos(a), 0.0, np.sin(a)])
        p = np.array(_KNUCKLES[name]) * stature
        pts = [p]
        for length in _SEGMENTS[name]:
            pts.append(pts[-1] + d * length * stature)
        out[3 * f:3 * f + 3] = pts[:3]
        out[15 + f] = pts[3]
    s, t = np.radians(_THUMB_SPREAD_DEG), np.radians(_THUMB_TILT_DEG)
    d = np.array([np.cos(t) * np.cos(s), -np.sin(t), np.cos(t) * np.sin(s)])
    pts = [np.array(_THUMB_BASE) * stature]
    for length in _THUMB_SEGMENTS:
        pts.append(pts[-1] + d * length * stature)
    out[12:15] = pts[:3]
    out[19] = pts[3]
    if side == "right":
        out = out @ MIRROR
    return out


def hand_rest_from_smplx(joints, vertices, side):
    """(20, 3) rest hand of an SMPL-X model: its 55 rest joints (e.g.
    ``J_regressor @ v_shaped``) and rest vertices, relative to the wrist."""
    _check_side(side)
    joints = np.asarray(joints, np.float64)
    vertices = np.asarray(vertices, np.float64)
    if joints.shape != (55, 3) or vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"expected (55, 3) joints and (V, 3) vertices, got {joints.shape} "
                         f"and {vertices.shape}")
    first = 25 if side == "left" else 40
    wrist = joints[SMPLX_WRIST[side]]
    tips = vertices[list(SMPLX_TIP_VERTICES[side])]
    return np.concatenate([joints[first:first + 15], tips]) - wrist


def rest_landmarks(rest):
    """(20, 3) rest hand -> (21, 3) landmarks in mediapipe order (wrist at 0)."""
    rest = np.asarray(rest, np.float64)
    out = np.zeros(rest.shape[:-2] + (21, 3))
    for f in range(5):
        out[..., LANDMARK_CHAINS[f, :3], :] = rest[..., 3 * f:3 * f + 3, :]
        out[..., LANDMARK_CHAINS[f, 3], :] = rest[..., 15 + f, :]
    return out


# --- geometry of a (left) rest hand --------------------------------------------

def _segments(rest_lm):
    """(5, 3, 3) unit rest directions of the three segments of each finger."""
    chain = LANDMARK_CHAINS
    return _unit(rest_lm[chain[:, 1:]] - rest_lm[chain[:, :3]])


def hand_geometry(rest, side):
    """Axes of a rest hand, mirrored into a left hand for the right side."""
    _check_side(side)
    rest = np.asarray(rest, np.float64)
    if rest.shape != (20, 3) or not np.all(np.isfinite(rest)):
        raise ValueError(f"a rest hand is a finite (20, 3) array, got {rest.shape}")
    left = rest @ MIRROR if side == "right" else rest
    lm = rest_landmarks(left)
    seg = _segments(lm)
    n = _unit(np.cross(lm[5], lm[17]))  # back of the hand
    bend = np.zeros((5, 3))
    for f in range(4):
        bend[f] = _unit(np.cross(n, lm[LANDMARK_CHAINS[f, 3]] - lm[LANDMARK_CHAINS[f, 0]]))
    a_t = _unit(lm[4] - lm[1])
    c = np.cross(seg[4, 0], seg[4, 1]) + np.cross(seg[4, 1], seg[4, 2])
    radial = _unit(np.cross(a_t, n))
    nail = _unit(np.cos(np.radians(THUMB_NAIL_DEG)) * _unit(n - (n @ a_t) * a_t)
                 + np.sin(np.radians(THUMB_NAIL_DEG)) * radial)
    default = _unit(np.cross(nail, a_t))
    if np.linalg.norm(c) > 2 * np.sin(np.radians(CURVED_THUMB_DEG) / 2):
        # a curved rest thumb bends in its own plane, flexing the same way
        bend[4] = _unit(c) if _unit(c) @ default >= 0 else -_unit(c)
    else:
        bend[4] = default
    e1 = _unit(bend[4] - (bend[4] @ seg[4, 0]) * seg[4, 0])
    e2 = np.cross(seg[4, 0], e1)
    return {"side": side, "landmarks": lm, "segments": seg, "normal": n, "bend": bend,
            "thumb_basis": np.stack([e1, e2])}


# --- small batched helpers ----------------------------------------------------

def _axis_rot(axis, angle):
    """(…, 3, 3) rotations by `angle` (…) about unit `axis` (3,) or (…, 3)."""
    axis = np.broadcast_to(np.asarray(axis, np.float64), np.shape(angle) + (3,))
    return axis_angle_to_matrix(axis * np.asarray(angle)[..., None])


def _signed_angle(axis, a, b):
    """Angle turning a onto b about unit axis, both projected on its plane."""
    a = a - np.sum(a * axis, -1, keepdims=True) * axis
    b = b - np.sum(b * axis, -1, keepdims=True) * axis
    return np.arctan2(np.sum(axis * np.cross(a, b), -1), np.sum(a * b, -1))


def _wrap(x):
    return (x + np.pi) % (2 * np.pi) - np.pi


def kabsch(rest_points, points, weights):
    """Rotations (N, 3, 3) best taking centred rest_points (K, 3) onto
    centred points (N, K, 3), and the weighted RMS residual relative to the
    rest spread (scale-free)."""
    w = weights / weights.sum()
    p = np.asarray(points, np.float64)
    r = np.asarray(rest_points, np.float64)
    pc = p - np.einsum("k,nkd->nd", w, p)[:, None]
    rc = r - w @ r
    h = np.einsum("k,ki,nkj->nij", w, rc, pc)
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(np.swapaxes(vt, -1, -2) @ np.swapaxes(u, -1, -2)))
    fix = np.ones(u.shape[:-1])
    fix[:, 2] = d
    rot = np.swapaxes(vt, -1, -2) @ (fix[:, :, None] * np.swapaxes(u, -1, -2))
    scale = np.sqrt(np.sum(w * np.sum(pc ** 2, -1), -1) / max(np.sum(w * np.sum(rc ** 2, -1)),
                                                               1e-12))
    fitted = scale[:, None, None] * np.einsum("nij,kj->nki", rot, rc)
    rms = np.sqrt(np.sum(w * np.sum((pc - fitted) ** 2, -1), -1))
    spread = np.sqrt(np.sum(w * np.sum(pc ** 2, -1), -1))
    return rot, rms / np.maximum(spread, 1e-12)


def _minimal_rotation(a, u):
    """Smallest rotations taking unit a (3,) onto unit u (N, 3)."""
    axis = np.cross(a, u)
    s = np.linalg.norm(axis, axis=-1)
    c = np.clip(u @ a, -1.0, 1.0)
    angle = np.arctan2(s, c)
    fallback = _unit(np.cross(a, [1.0, 0.0, 0.0]) if abs(a[0]) < 0.9 else np.cross(a, [0, 1, 0]))
    axis = np.where(s[:, None] > 1e-9, axis / np.maximum(s, 1e-12)[:, None], fallback)
    return _axis_rot(axis, angle), axis * angle[:, None]


# --- forward kinematics ----------------------------------------------------------

def params_to_local(params, geom):
    """(N, 21) parameters -> (N, 15, 3, 3) local finger rotations (SMPL-X
    order) of the hand `geom` describes (its real side)."""
    p = np.asarray(params, np.float64)
    n_axis, bend = geom["normal"], geom["bend"]
    out = np.empty(p.shape[:-1] + (15, 3, 3))
    for f in range(4):
        a, f1, f2, f3 = (p[..., 4 * f + k] for k in range(4))
        out[..., 3 * f, :, :] = _axis_rot(n_axis, a) @ _axis_rot(bend[f], f1)
        out[..., 3 * f + 1, :, :] = _axis_rot(bend[f], f2)
        out[..., 3 * f + 2, :, :] = _axis_rot(bend[f], f3)
    e = geom["thumb_basis"]
    a1 = geom["segments"][4, 0]
    swing = p[..., 16:17] * e[0] + p[..., 17:18] * e[1]
    out[..., 12, :, :] = axis_angle_to_matrix(swing) @ _axis_rot(a1, p[..., 18])
    out[..., 13, :, :] = _axis_rot(bend[4], p[..., 19])
    out[..., 14, :, :] = _axis_rot(bend[4], p[..., 20])
    if geom["side"] == "right":
        out = MIRROR @ out @ MIRROR
    return out


def hand_fk(local, wrist_global, rest):
    """Landmarks (N, 21, 3) relative to the wrist of a hand posed with local
    finger rotations (N, 15, 3, 3) and the wrist's global rotation (N, 3, 3)."""
    local = np.asarray(local, np.float64)
    g = np.asarray(wrist_global, np.float64)
    lm = rest_landmarks(rest)
    out = np.zeros(local.shape[:-3] + (21, 3))
    for f in range(5):
        chain = LANDMARK_CHAINS[f]
        glob = g
        pos = np.einsum("...ij,j->...i", g, lm[chain[0]])
        out[..., chain[0], :] = pos
        for k in range(3):
            glob = glob @ local[..., 3 * f + k, :, :]
            pos = pos + np.einsum("...ij,j->...i", glob, lm[chain[k + 1]] - lm[chain[k]])
            out[..., chain[k + 1], :] = pos
    return out


# --- inverse kinematics -------------------------------------------------------------

def _finger_abduction(u, seg, n_axis, b):
    """Abduction (N,) and its conditioning (N,) from observed segments u
    (N, 3, 3) in the wrist's frame (see the module docstring, step 2)."""
    nb = np.cross(n_axis, b)
    pk, qk = u @ b, u @ nb
    ck = seg @ b
    w = SEGMENT_WEIGHTS
    m = np.stack([np.stack([np.sum(w * pk * pk, -1), np.sum(w * pk * qk, -1)], -1),
                  np.stack([np.sum(w * pk * qk, -1), np.sum(w * qk * qk, -1)], -1)], -2)
    _, vec = np.linalg.eigh(m)
    v = vec[..., 0]
    v = np.where(v[..., :1] < 0, -v, v)
    alpha = np.arctan2(v[..., 1], v[..., 0])
    for _ in range(6):
        c, s = np.cos(alpha)[:, None], np.sin(alpha)[:, None]
        r = pk * c + qk * s - ck
        dr = -pk * s + qk * c
        h = np.sum(w * dr * dr, -1) + ABDUCTION_PRIOR
        alpha = alpha - (np.sum(w * r * dr, -1) + ABDUCTION_PRIOR * alpha) / h
    cond = np.sum(w * (-pk * np.sin(alpha)[:, None] + qk * np.cos(alpha)[:, None]) ** 2, -1)
    return alpha, cond


def _thumb_twist(u, seg, b, swing_rot):
    """Twist (N,) about the observed metacarpal u[:, 0] and its conditioning.

    The residual of distal segment k at twist t is
    ``u_k . R_u1(t) e - a_k . b`` with e the swung rest bend axis, i.e.
    ``P cos t + Q sin t + C (1 - cos t) - c_k``."""
    u1 = u[:, 0]
    e = np.einsum("nij,j->ni", swing_rot, b)
    uk = u[:, None, 1:]                                   # (N, 1, 2, 3): one row per start
    pk = np.einsum("nskd,nd->nsk", uk, e)
    qk = np.einsum("nskd,nd->nsk", uk, np.cross(u1, e))
    ck = np.einsum("nskd,nd->nsk", uk, u1) * np.sum(u1 * e, -1)[:, None, None]
    target = seg[1:] @ b
    w = SEGMENT_WEIGHTS[1:]

    def residual(t):
        c, s = np.cos(t)[..., None], np.sin(t)[..., None]
        return pk * c + qk * s + ck * (1 - c) - target, (ck - pk) * s + qk * c

    # Gauss-Newton from a coarse grid of starts; the lowest end point wins
    # (with a bent, non-planar rest thumb the cost has several basins).
    tau = np.tile(np.radians(np.arange(-165.0, 180.0, 30.0)), (len(u), 1))
    for _ in range(10):
        r, dr = residual(tau)
        h = np.sum(w * dr * dr, -1) + THUMB_TWIST_PRIOR
        tau = _wrap(tau - (np.sum(w * r * dr, -1) + THUMB_TWIST_PRIOR * tau) / h)
    r, dr = residual(tau)
    cost = np.sum(w * r * r, -1) + THUMB_TWIST_PRIOR * tau ** 2
    best = np.argmin(cost, -1)[:, None]
    cond = np.take_along_axis(np.sum(w * dr * dr, -1), best, -1)[:, 0]
    return np.take_along_axis(tau, best, -1)[:, 0], cond


def solve_hand(landmarks, geom, limits=True):
    """Analytic IK of one hand.

    landmarks (N, 21, 3) in any frame (here the camera's), mediapipe order;
    geom from :func:`hand_geometry` (the rest hand of that side).
    Returns a dict: ``params`` (N, 21), ``wrist`` (N, 3, 3) the wrist's
    global rotation from the palm, ``palm_residual`` (N,) the scale-free
    misfit of the palm, ``conditioning`` (N, 5) how well the abductions and
    the thumb twist are determined (0: not at all).
    """
    x = np.asarray(landmarks, np.float64)
    if x.ndim != 3 or x.shape[1:] != (21, 3):
        raise ValueError(f"hand landmarks must be (N, 21, 3), got {x.shape}")
    if geom["side"] == "right":
        x = x @ MIRROR
    lm, seg, n_axis, bend = geom["landmarks"], geom["segments"], geom["normal"], geom["bend"]
    g, residual = kabsch(lm[PALM_LANDMARKS], x[:, PALM_LANDMARKS], PALM_WEIGHTS)
    chain = LANDMARK_CHAINS
    d = _unit(x[:, chain[:, 1:]] - x[:, chain[:, :3]])          # (N, 5, 3, 3)
    u = np.einsum("nji,nfkj->nfki", g, d)                          # in the wrist's frame
    params = np.zeros((len(x), NUM_PARAMS))
    cond = np.zeros((len(x), 5))
    for f in range(4):
        alpha, cond[:, f] = _finger_abduction(u[:, f], seg[f], n_axis, bend[f])
        v = np.einsum("nij,nkj->nki", _axis_rot(n_axis, -alpha), u[:, f])
        theta = _signed_angle(bend[f], np.broadcast_to(seg[f], v.shape), v)
        params[:, 4 * f] = alpha
        params[:, 4 * f + 1] = theta[:, 0]
        params[:, 4 * f + 2] = _wrap(theta[:, 1] - theta[:, 0])
        params[:, 4 * f + 3] = _wrap(theta[:, 2] - theta[:, 1])
    a1 = seg[4, 0]
    swing_rot, swing_vec = _minimal_rotation(a1, u[:, 4, 0])
    tau, cond[:, 4] = _thumb_twist(u[:, 4], seg[4], bend[4], swing_rot)
    r1 = swing_rot @ _axis_rot(a1, tau)
    v = np.einsum("nji,nkj->nki", r1, u[:, 4, 1:])
    theta = _signed_angle(bend[4], np.broadcast_to(seg[4, 1:], v.shape), v)
    e = geom["thumb_basis"]
    params[:, 16:18] = swing_vec @ e.T
    params[:, 18] = tau
    params[:, 19] = theta[:, 0]
    params[:, 20] = _wrap(theta[:, 1] - theta[:, 0])
    if limits:
        params = clip_params(params)
    if geom["side"] == "right":
        g = MIRROR @ g @ MIRROR
    return {"params": params, "wrist": g, "palm_residual": residual, "conditioning": cond}


def _limit_arrays():
    lo = np.zeros(NUM_PARAMS)
    hi = np.zeros(NUM_PARAMS)
    for f, name in enumerate(FINGERS[:4]):
        a = LIMITS_DEG["abduction"][name]
        lo[4 * f], hi[4 * f] = -a, a
        for k, (l, h) in enumerate(LIMITS_DEG["flexion"]):
            lo[4 * f + 1 + k], hi[4 * f + 1 + k] = l, h
    lo[16:18], hi[16:18] = -LIMITS_DEG["thumb_swing"], LIMITS_DEG["thumb_swing"]
    lo[18], hi[18] = LIMITS_DEG["thumb_twist"]
    for k, (l, h) in enumerate(LIMITS_DEG["thumb_flexion"]):
        lo[19 + k], hi[19 + k] = l, h
    return np.radians(lo), np.radians(hi)


PARAM_LOW, PARAM_HIGH = _limit_arrays()


def clip_params(params):
    """The anatomical limits: each parameter clipped to its range; the
    thumb's swing vector shortened to the cone."""
    p = np.clip(np.asarray(params, np.float64), PARAM_LOW, PARAM_HIGH)
    sw = np.asarray(params, np.float64)[..., 16:18]
    norm = np.linalg.norm(sw, axis=-1, keepdims=True)
    cap = np.radians(LIMITS_DEG["thumb_swing"])
    p[..., 16:18] = sw * np.minimum(1.0, cap / np.maximum(norm, 1e-12))
    return p


def relaxed_params():
    """(21,) parameters of the relaxed hand (RELAXED_DEG)."""
    vals = [v for name in FINGERS[:4] for v in RELAXED_DEG[name]] + list(RELAXED_DEG["thumb"])
    return np.radians(np.array(vals, np.float64))


def knuckle_rotation(params, geom):
    """(N, 3, 3) one rotation for the four fingers together (mean abduction
    and knuckle flexion about the mean bend axis): what an SMPL hand joint,
    which carries all fingers as one, can show."""
    p = np.asarray(params, np.float64)
    alpha = p[..., [0, 4, 8, 12]].mean(-1)
    flex = p[..., [1, 5, 9, 13]].mean(-1)
    b = _unit(geom["bend"][:4].mean(0))
    out = _axis_rot(geom["normal"], alpha) @ _axis_rot(b, flex)
    if geom["side"] == "right":
        out = MIRROR @ out @ MIRROR
    return out


# --- the wrist ---------------------------------------------------------------------

def slerp_quaternions(qa, qb, t):
    """Slerp of (..., 4) quaternions by t (...), the shorter way."""
    dot = np.sum(qa * qb, -1, keepdims=True)
    qb = np.where(dot < 0, -qb, qb)
    dot = np.abs(dot)
    omega = np.arccos(np.clip(dot, -1.0, 1.0))
    so = np.sin(omega)
    t = np.asarray(t, np.float64)[..., None]
    small = so < 1e-6
    wa = np.where(small, 1 - t, np.sin((1 - t) * omega) / np.where(small, 1, so))
    wb = np.where(small, t, np.sin(t * omega) / np.where(small, 1, so))
    q = wa * qa + wb * qb
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _twist_angle(rot, axis):
    q = matrix_to_quaternion(rot)
    return _wrap(2.0 * np.arctan2(q[..., 1:] @ axis, q[..., 0]))


def reconcile_wrist(elbow_global, elbow_local, wrist_local, hand_global, weight, forearm_axis,
                    max_swing_deg=85.0):
    """Elbow and wrist local rotations that carry the palm's orientation.

    The observed palm gives the hand's global rotation; the body gives the
    forearm. The wrist's local rotation is slerped from the body's towards
    ``elbow_global^T hand_global`` by `weight` (N,). Its twist about the
    forearm beyond the body's own goes to the elbow joint (the forearm roll,
    where pronation and supination happen: the wrist position does not
    move), its swing stays at the wrist, capped at `max_swing_deg`.
    `forearm_axis` is the rest direction elbow -> wrist (3,).
    Returns (elbow_local, wrist_local), (N, 3, 3) each.
    """
    d = _unit(forearm_axis)
    target = np.swapaxes(elbow_global, -1, -2) @ hand_global
    q = slerp_quaternions(matrix_to_quaternion(wrist_local), matrix_to_quaternion(target), weight)
    blend = quaternion_to_matrix(q)
    delta = _wrap(_twist_angle(blend, d) - _twist_angle(wrist_local, d))
    elbow = elbow_local @ _axis_rot(d, delta)
    wrist = _axis_rot(d, -delta) @ blend
    tw = _twist_angle(wrist, d)
    swing = wrist @ _axis_rot(d, -tw)
    sq = matrix_to_quaternion(swing)
    sq = np.where(sq[..., :1] < 0, -sq, sq)
    angle = 2 * np.arctan2(np.linalg.norm(sq[..., 1:], axis=-1), sq[..., 0])
    cap = np.radians(max_swing_deg)
    over = angle > cap
    if np.any(over):
        axis = _unit(sq[..., 1:])
        capped = _axis_rot(axis, np.minimum(angle, cap))
        swing = np.where(over[..., None, None], capped, swing)
        wrist = swing @ _axis_rot(d, tw)
    return elbow, wrist
