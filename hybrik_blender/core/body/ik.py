"""HybrIK's analytical inverse kinematics with exact swings, in numpy.

The same solver as ``worker.hybrik.ik.hybrik_ik(..., swing="exact")`` (see
that module's docstring), batched over frames: the pelvis by a Kabsch fit
of its three child bones, then one tree level at a time each joint swings
its rest bone onto the drift-compensated target of its child (the predicted
bone rescaled to rest length where the target lies more than 15 mm from
it) and twists about the rest bone by the given angle. Every rotation is
built from unit vectors with explicit fallbacks (zero-length, parallel and
anti-parallel vectors, an all-zero twist), so the result is always an
orthonormal rotation without NaN.

The mediapipe backend solves with this one, so that it needs no torch; the
HybrIK networks keep the torch solver (GPU, and the official arithmetic of
``swing="official"``). ``tests/test_ik_roundtrip.py`` holds the two to 1e-12.
"""
import numpy as np

from .skeleton import CHILDREN_29, PARENTS_29

FALLBACK_DISTANCE = 0.015   # metres
PELVIS_CHILDREN = [3, 1, 2]
EPS = 1e-12                 # float64


def _levels():
    depth = np.zeros(len(PARENTS_29), np.int64)
    for i in range(1, len(PARENTS_29)):
        depth[i] = depth[PARENTS_29[i]] + 1
    out = []
    for d in range(1, depth.max() + 1):
        idx = [i for i in range(1, 24) if depth[i] == d and CHILDREN_29[i] >= 0]
        if idx:
            idx = np.array(idx)
            out.append((idx, np.asarray(PARENTS_29)[idx], np.asarray(CHILDREN_29)[idx]))
    return out


LEVELS = _levels()          # joints 1..23 grouped by depth in the tree


def _unit(v, eps=EPS):
    n = np.linalg.norm(v, axis=-1)
    return v / np.maximum(n, eps)[..., None], n


def _rodrigues(axis, sin, cos):
    """Rotation about unit ``axis`` (..., 3) by the angle with (sin, cos) (...)."""
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    o = np.zeros_like(x)
    k = np.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(axis.shape + (3,))
    return np.eye(3) + sin[..., None, None] * k + (1 - cos)[..., None, None] * (k @ k)


def _perpendicular(u):
    """A unit vector perpendicular to unit ``u``: u crossed with the
    coordinate axis least aligned with it."""
    e = np.zeros_like(u)
    np.put_along_axis(e, np.abs(u).argmin(-1)[..., None], 1.0, -1)
    return _unit(np.cross(u, e), 1e-30)[0]


def swing_rotation(a, b):
    """Minimal rotation taking the direction of ``a`` onto that of ``b``
    (..., 3) -> (..., 3, 3). A zero-length vector gives the identity;
    anti-parallel ones a half turn about an axis perpendicular to ``a``."""
    ua, na = _unit(a)
    ub, nb = _unit(b)
    degenerate = (na <= EPS) | (nb <= EPS)
    v = np.cross(ua, ub)
    s = np.linalg.norm(v, axis=-1)
    c = np.sum(ua * ub, -1)
    s = np.where(degenerate, 0.0, s)
    c = np.where(degenerate, 1.0, c)
    tiny = s <= 1e-6
    axis = np.where(tiny[..., None], _perpendicular(ua), v / np.maximum(s, 1e-30)[..., None])
    # near-parallel: identity; near-antiparallel: exact half turn
    s = np.where(tiny, 0.0, s)
    c = np.where(tiny, np.sign(c) + (c == 0), c)
    return _rodrigues(axis, s, c)


def twist_rotation(axis, phis):
    """Rotation about the unit ``axis`` (..., 3) by the angle whose (cos, sin)
    is ``phis`` (..., 2) after normalisation; an all-zero pair: no twist."""
    n = np.linalg.norm(phis, axis=-1)
    ok = n > EPS
    safe = np.where(ok[..., None], phis / np.maximum(n, EPS)[..., None], [1.0, 0.0])
    return _rodrigues(axis, safe[..., 1], safe[..., 0])


def bones(joints):
    """(B, 29, 3) -> vectors from each joint's parent; row 0 keeps the root."""
    out = joints - joints[:, np.maximum(PARENTS_29, 0)]
    out[:, 0] = joints[:, 0]
    return out


def kabsch(rest_vecs, target_vecs):
    """Rotation R minimising sum |R r_k - t_k|^2 over (B, K, 3) vector sets,
    without reflections; an all-zero correlation gives the identity."""
    s = np.swapaxes(rest_vecs, 1, 2) @ target_vecs      # sum_k r_k t_k^T
    u, _, vh = np.linalg.svd(s)
    v = np.swapaxes(vh, 1, 2)
    d = np.linalg.det(v @ np.swapaxes(u, 1, 2))
    fix = np.ones((len(s), 3))
    fix[:, 2] = np.sign(d) + (d == 0)
    r = (v * fix[:, None, :]) @ np.swapaxes(u, 1, 2)
    zero = np.abs(s).max((1, 2)) <= EPS ** 2
    bad = zero[:, None, None] | ~np.isfinite(r)
    return np.where(bad.any((1, 2))[:, None, None], np.eye(3), r)


def exact_ik(pose, rest, phis):
    """(B, 29, 3) target joints (any origin), (B|1, 29, 3) rest joints,
    (B, 23, 2) twist (cos, sin) of joints 1..23 -> (B, 24, 3, 3) local
    rotations (joint 0: the orientation in the frame of ``pose``)."""
    pose = np.asarray(pose, np.float64)
    b = len(pose)
    rest = np.array(np.broadcast_to(np.asarray(rest, np.float64), pose.shape))
    phis = np.asarray(phis, np.float64)
    t = bones(rest)                                  # rest bones, t[0] = rest pelvis
    p = bones(pose)                                  # predicted bones
    target = pose - pose[:, :1] + rest[:, :1]        # predicted joints, pelvis on rest pelvis
    glob = np.empty((b, 24, 3, 3))
    local = np.empty_like(glob)
    placed = np.empty((b, 24, 3))
    glob[:, 0] = local[:, 0] = kabsch(t[:, PELVIS_CHILDREN], p[:, PELVIS_CHILDREN])
    placed[:, 0] = rest[:, 0]
    twists = twist_rotation(_unit(t[:, CHILDREN_29[1:24]])[0], phis)     # (B, 23, 3, 3)
    for idx, par, child in LEVELS:
        gp = glob[:, par]                                           # (B, k, 3, 3)
        here = placed[:, par] + (gp @ t[:, idx, :, None])[..., 0]   # FK position of joint
        aim = target[:, child] - here                               # drift-compensated
        pdir, plen = _unit(p[:, child])
        rescaled = pdir * np.linalg.norm(t[:, child], axis=-1)[..., None]
        far = (np.linalg.norm(aim - rescaled, axis=-1) > FALLBACK_DISTANCE) & (plen > EPS)
        aim = np.where(far[..., None], rescaled, aim)
        aim_local = (np.swapaxes(gp, -1, -2) @ aim[..., None])[..., 0]
        rot = swing_rotation(t[:, child], aim_local) @ twists[:, idx - 1]
        local[:, idx] = rot
        glob[:, idx] = gp @ rot
        placed[:, idx] = here
    return local
