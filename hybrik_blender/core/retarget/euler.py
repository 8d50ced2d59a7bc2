"""Euler angles in Blender's orders, and continuous Euler curves (no bpy).

``'XYZ'`` applies X first: ``R = Rz @ Ry @ Rx``; angles are returned about X,
Y, Z (Blender's channel order) whatever the rotation order.

Every rotation has two Euler triples in a given order (for 'XYZ', (a, b, c)
and (a + pi, pi - b, c + pi)), each up to whole turns per angle. Taking the
same branch every frame makes the angles jump by about 180 degrees where the
middle angle passes +-90 degrees (gimbal lock), and per-angle unwrapping does
not help there. :func:`continuous_euler` picks, frame by frame, the branch
and whole turns closest to the previous frame, like Blender's own
``to_euler(order, compatible)``, so curves keyed from it never step by more
than the rotation itself does.
"""
import numpy as np

_AXIS = {"X": 0, "Y": 1, "Z": 2}
EULER_ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")
TWO_PI = 2.0 * np.pi


def _order_perm(order):
    if order not in EULER_ORDERS:
        raise ValueError(f"unknown Euler order {order!r}")
    i, j, k = (_AXIS[c] for c in order)
    perm = np.zeros((3, 3))
    perm[0, i] = perm[1, j] = perm[2, k] = 1.0
    return (i, j, k), perm, np.linalg.det(perm)


def _branches(rot, order):
    """Both Euler triples (..., 3) of each rotation, in channel order."""
    (i, j, k), _, parity = _order_perm(order)
    # Relabel the axes so the order reads XYZ (m = P @ rot @ P.T for the
    # permutation P, i.e. m[a, b] = rot[axis a, axis b]); an odd relabelling
    # mirrors space and negates every angle.
    rot = np.asarray(rot, dtype=np.float64)
    ax = (i, j, k)

    def m(a, b):
        return rot[..., ax[a], ax[b]]
    m20 = m(2, 0)
    b = np.arcsin(np.clip(-m20, -1.0, 1.0))
    a = np.arctan2(m(2, 1), m(2, 2))
    c = np.arctan2(m(1, 0), m(0, 0))
    gimbal = np.abs(m20) > 1 - 1e-9
    if np.any(gimbal):
        a = np.where(gimbal, np.arctan2(-m(1, 2), m(1, 1)), a)
        c = np.where(gimbal, 0.0, c)
    out = []
    for aa, bb, cc in ((a, b, c), (a + np.pi, np.pi - b, c + np.pi)):
        e = np.empty(np.shape(a) + (3,))
        e[..., i], e[..., j], e[..., k] = aa * parity, bb * parity, cc * parity
        out.append(e)
    return out


def matrix_to_euler(rot, order="XYZ"):
    """(..., 3, 3) -> (..., 3) angles about X, Y, Z for the given rotation
    order; middle angle in [-pi/2, pi/2]."""
    return _branches(rot, order)[0]


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


def _near(x, ref):
    """x shifted by whole turns (per angle) to lie within pi of ref."""
    return x + TWO_PI * np.round((ref - x) / TWO_PI)


def continuous_euler(rot, order="XYZ", axis=0, start=None):
    """Euler angles (..., 3) along time (`axis` of the batch dimensions) with
    each frame's branch and whole turns chosen closest to the previous
    frame. `start` (optional, (..., 3)): angles the first frame should lie
    close to (e.g. the bone's current value)."""
    rot = np.moveaxis(np.asarray(rot, dtype=np.float64), axis, 0)
    shape = rot.shape[:-2]
    rot = rot.reshape((shape[0], -1, 3, 3))
    if start is not None:
        start = np.broadcast_to(np.asarray(start, dtype=np.float64), shape[1:] + (3,))
        start = start.reshape(-1, 3)
    out = _continuous(rot, order, start)
    return np.moveaxis(out.reshape(shape + (3,)), 0, axis)


def _wrap(x):
    return (x + np.pi) % TWO_PI - np.pi


def _continuous(rot, order, start):
    """(N, K, 3, 3) -> (N, K, 3); see continuous_euler.

    Where the middle angle passes +-90 degrees, branch one's first and last
    angles both jump by about 180 degrees while the rotation itself moves
    little: each such frame switches to the other branch (the parity of the
    switches so far picks the branch of every frame), then whole turns are
    unwrapped per angle."""
    first, second = _branches(rot, order)
    n = len(first)
    if n == 0:
        return first
    i, j, k = (_AXIS[c] for c in order)
    if n > 1:
        da = np.abs(_wrap(np.diff(first[..., i], axis=0)))
        dc = np.abs(_wrap(np.diff(first[..., k], axis=0)))
        flip = (da > np.pi / 2) & (dc > np.pi / 2)
        parity = np.concatenate([np.zeros((1,) + flip.shape[1:], bool),
                                 np.cumsum(flip, axis=0) % 2 == 1], axis=0)
    else:
        parity = np.zeros(first.shape[:-1], bool)
    out = np.where(parity[..., None], second, first)
    if start is not None:
        # begin on the branch nearer the start value
        d1 = np.sum(_wrap(first[0] - start) ** 2, axis=-1)
        d2 = np.sum(_wrap(second[0] - start) ** 2, axis=-1)
        use_second = d2 < d1
        out = np.where(use_second[None, :, None], np.where(parity[..., None], first, second),
                       out)
        out[0] = out[0] + TWO_PI * np.round((start - out[0]) / TWO_PI)
    out = np.unwrap(out, axis=0)
    return out
