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


def matrix_to_quaternion(rot):
    """Rotation matrices -> unit quaternions (w >= 0 is not enforced).

    Each of the four candidate formulas is evaluated and the best-conditioned
    one (largest denominator) is kept per element, so there is no precision
    loss near 180 degrees.
    """
    m = np.asarray(rot, dtype=np.float64)
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    t = np.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                  1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    cands = np.stack([
        np.stack([t[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
        np.stack([m21 - m12, t[..., 1], m10 + m01, m02 + m20], -1),
        np.stack([m02 - m20, m10 + m01, t[..., 2], m21 + m12], -1),
        np.stack([m10 - m01, m20 + m02, m21 + m12, t[..., 3]], -1),
    ], -2)
    best = np.argmax(t, axis=-1)
    q = np.take_along_axis(cands, best[..., None, None], axis=-2)[..., 0, :]
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quaternion_to_matrix(q):
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


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
