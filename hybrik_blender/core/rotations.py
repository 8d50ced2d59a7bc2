"""Batched rotation conversions in numpy.

Quaternions are (w, x, y, z), Blender's order. Every function takes arrays
with any number of leading batch dimensions.
"""
import numpy as np


def skew(v):
    """(..., 3) vectors -> (..., 3, 3) cross-product matrices."""
    v = np.asarray(v)
    o = np.zeros(v.shape[:-1], dtype=v.dtype)
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    return np.stack([np.stack([o, -z, y], -1),
                     np.stack([z, o, -x], -1),
                     np.stack([-y, x, o], -1)], -2)


def axis_angle_to_matrix(aa):
    """Rodrigues' formula; exact near zero through the series of sin/x."""
    aa = np.asarray(aa, dtype=np.float64)
    theta = np.linalg.norm(aa, axis=-1)[..., None, None]
    small = theta < 1e-8
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta ** 2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta ** 2 / 24.0, (1.0 - np.cos(safe)) / safe ** 2)
    k = skew(aa)
    return np.eye(3) + a * k + b * (k @ k)


def matrix_to_axis_angle(rot):
    return quaternion_to_axis_angle(matrix_to_quaternion(rot))


def quaternion_to_axis_angle(q):
    q = standardize_quaternion(np.asarray(q, dtype=np.float64))
    vec = q[..., 1:]
    s = np.linalg.norm(vec, axis=-1)
    angle = 2.0 * np.arctan2(s, q[..., 0])
    small = s < 1e-12
    scale = np.where(small, 2.0 / np.maximum(q[..., 0], 1e-12), angle / np.where(small, 1.0, s))
    return vec * scale[..., None]


def quaternion_from_matrix_entries(m00, m01, m02, m10, m11, m12, m20, m21, m22):
    """Unit quaternion components (w, x, y, z) from rotation-matrix entries
    of any (matching) shape.

    Shepperd's method: per element the best-conditioned of the four formulas
    (largest of 1 + trace and the diagonal terms) is picked with masks, so
    there is no precision loss near 180 degrees; on ties the earlier formula
    wins."""
    tw = 1.0 + m00 + m11 + m22
    tx = 1.0 + m00 - m11 - m22
    ty = 1.0 - m00 + m11 - m22
    tz = 1.0 - m00 - m11 + m22
    a, b, c = m21 - m12, m02 - m20, m10 - m01
    d, e, f = m10 + m01, m02 + m20, m21 + m12
    bx = (tx > tw) & (tx >= ty) & (tx >= tz)
    by = ~bx & (ty > tw) & (ty >= tz)
    bz = ~bx & ~by & (tz > tw)
    w = np.where(bx, a, np.where(by, b, np.where(bz, c, tw)))
    x = np.where(bx, tx, np.where(by, d, np.where(bz, e, a)))
    y = np.where(bx, d, np.where(by, ty, np.where(bz, f, b)))
    z = np.where(bx, e, np.where(by, f, np.where(bz, tz, c)))
    norm = np.sqrt(w * w + x * x + y * y + z * z)
    return w / norm, x / norm, y / norm, z / norm


def matrix_to_quaternion(rot):
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4); w >= 0 is
    not enforced."""
    m = np.asarray(rot, dtype=np.float64)
    entries = [m[..., i, j] for i in range(3) for j in range(3)]
    return np.stack(quaternion_from_matrix_entries(*entries), -1)


def quaternion_to_matrix(q, out=None):
    """Quaternions (..., 4) (normalised here) -> rotation matrices (..., 3, 3),
    written into `out` when given (any view of that shape)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.sqrt(np.sum(q * q, axis=-1, keepdims=True))
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz, wx, wy, wz = x * y, x * z, y * z, w * x, w * y, w * z
    if out is None:
        out = np.empty(q.shape[:-1] + (3, 3))
    out[..., 0, 0] = 1 - 2 * (yy + zz)
    out[..., 0, 1] = 2 * (xy - wz)
    out[..., 0, 2] = 2 * (xz + wy)
    out[..., 1, 0] = 2 * (xy + wz)
    out[..., 1, 1] = 1 - 2 * (xx + zz)
    out[..., 1, 2] = 2 * (yz - wx)
    out[..., 2, 0] = 2 * (xz - wy)
    out[..., 2, 1] = 2 * (yz + wx)
    out[..., 2, 2] = 1 - 2 * (xx + yy)
    return out


def standardize_quaternion(q):
    """Flip quaternions to the w >= 0 hemisphere."""
    q = np.asarray(q)
    return np.where(q[..., :1] < 0, -q, q)


def make_quaternions_continuous(q, axis=0):
    """Flip signs along `axis` (time) so consecutive quaternions have a
    non-negative dot product. Blender interpolates quaternion components
    independently, so a sign flip between two keys would spin the bone the
    long way round."""
    q = np.moveaxis(np.asarray(q, dtype=np.float64), axis, 0)
    if q.shape[0] < 2:
        return np.moveaxis(q.copy(), 0, axis)
    dots = np.sum(q[1:] * q[:-1], axis=-1)
    flips = np.concatenate([np.zeros((1,) + dots.shape[1:], dtype=np.int64),
                            np.cumsum(dots < 0, axis=0)], axis=0)
    sign = np.where(flips % 2 == 1, -1.0, 1.0)[..., None]
    return np.moveaxis(q * sign, 0, axis)


def orthonormalize(rot):
    """Nearest rotation matrix (polar decomposition via SVD, det = +1)."""
    u, _, vt = np.linalg.svd(np.asarray(rot, dtype=np.float64))
    d = np.sign(np.linalg.det(u @ vt))
    u = u.copy()
    u[..., :, 2] *= d[..., None]
    return u @ vt


def rotation_angle(rot):
    """Angle (radians) of rotation matrices, robust near 0 and pi."""
    q = matrix_to_quaternion(rot)
    return 2.0 * np.arctan2(np.linalg.norm(q[..., 1:], axis=-1), np.abs(q[..., 0]))
