"""Rotation-only camera geometry, numpy, batched over frames.

A camera that only rotates (and may zoom) maps its pixels between two frames
by ``x_a ~ K R K^-1 x_b``: the scene's depth does not matter. With the
principal point at the image centre and square pixels, the bearing of a pixel
is ``(u - cx, v - cy, f)`` normalised, and ``R`` is the rotation that takes
the bearings of frame b onto those of frame a (orthogonal Procrustes: the SVD
of their weighted correlation, Kabsch's method). The focal length is the one
for which the pixel pairs are best explained by a rotation.

Point sets of different frames are padded to one length with zero weights so
that every step runs on all frames at once.
"""
import numpy as np


def bearings(points, focal, principal):
    """(..., M, 2) pixels -> (..., M, 3) unit viewing directions (OpenCV axes:
    x right, y down, z forward). `focal` broadcasts against the leading axes."""
    p = np.asarray(points, np.float64)
    f = np.asarray(focal, np.float64)[..., None]
    v = np.stack([p[..., 0] - principal[0], p[..., 1] - principal[1],
                  np.broadcast_to(f, p.shape[:-1])], -1)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def procrustes_rotation(a, b, weights):
    """Rotations R (..., 3, 3) minimising sum w |a - R b|^2 for unit vectors
    a, b (..., M, 3) and weights (..., M)."""
    m = np.einsum("...k,...ki,...kj->...ij", weights, a, b)
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.ones(d.shape + (3,))
    fix[..., 2] = np.where(d == 0, 1.0, d)
    return (u * fix[..., None, :]) @ vt


def rotation_residual_px(a, b, rot, focal):
    """Pixel-like distance (..., M) between a and R b: the chord length times
    the focal length (about the pixel error near the image centre)."""
    rb = np.einsum("...ij,...kj->...ki", rot, b)
    return np.linalg.norm(a - rb, axis=-1) * np.asarray(focal, np.float64)[..., None]


def robust_rotation(pts_a, pts_b, weights, focal, principal, threshold_px=1.0, iterations=3):
    """Rotation taking camera-b directions to camera-a directions from
    matched pixels (..., M, 2), with weights (..., M) (0 for padding), and the
    per-point residuals. Points beyond 3 x threshold (or beyond 3 x the
    median) after each pass get zero weight, the others a Cauchy-style
    weight, so a few mismatches do not bias the fit."""
    a = bearings(pts_a, focal, principal)
    b = bearings(pts_b, focal, principal)
    w = np.asarray(weights, np.float64)
    rot = procrustes_rotation(a, b, w)
    for _ in range(iterations):
        r = rotation_residual_px(a, b, rot, focal)
        live = w > 0
        med = np.median(np.where(live, r, np.nan), axis=-1, keepdims=True) \
            if live.any() else np.ones(r.shape[:-1] + (1,))
        med = np.nan_to_num(med, nan=threshold_px)
        scale = np.maximum(med * 1.4826, threshold_px / 3)
        cut = np.maximum(3 * threshold_px, 3 * scale)
        ww = np.where(r < cut, w / (1.0 + (r / scale) ** 2), 0.0)
        rot = procrustes_rotation(a, b, ww)
    r = rotation_residual_px(a, b, rot, focal)
    return rot, r


def focal_cost(pts_a, pts_b, weights, focal, principal, threshold_px=1.0):
    """Sum over frames of the robust (capped) squared residuals of the best
    rotation at this focal length; in pixels squared."""
    rot, r = robust_rotation(pts_a, pts_b, weights, focal, principal, threshold_px, 2)
    cap = (3 * threshold_px) ** 2
    return float(np.sum(np.where(weights > 0, np.minimum(r ** 2, cap), 0.0)))


def estimate_focal(pts_a, pts_b, weights, principal, guess, threshold_px=1.0,
                   span=(0.35, 3.0), steps=29, tolerance=1e-4):
    """Focal length (px) that best explains matched pixels by rotations:
    a log-spaced scan over guess*span, then a golden-section search around
    the best scan point. Returns (focal, curvature), where curvature is
    how much the cost rises 10% away from the minimum relative to its value
    there (small: the focal length is not observable from this motion)."""
    lo, hi = np.log(guess * span[0]), np.log(guess * span[1])
    grid = np.linspace(lo, hi, steps)
    cost = lambda lf: focal_cost(pts_a, pts_b, weights, np.exp(lf), principal,  # noqa: E731
                                 threshold_px)
    values = [cost(g) for g in grid]
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, steps - 1)]
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = cost(c), cost(d)
    while b - a > tolerance:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = cost(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = cost(d)
    best = 0.5 * (a + b)
    f0 = cost(best)
    rise = 0.5 * (cost(best + np.log(1.1)) + cost(best - np.log(1.1)))
    return float(np.exp(best)), float((rise - f0) / max(f0, 1e-9))


def rotation_angle_deg(rot):
    """(...,) angle of rotations (..., 3, 3) in degrees."""
    tr = np.trace(np.asarray(rot, np.float64), axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1.0, 1.0)))


def pad_sets(sets, max_points):
    """List of (M_i, 4) arrays [xa, ya, xb, yb] -> padded (F, M, 2) a, b and
    (F, M) weights (1 for real points)."""
    m = max([len(s) for s in sets] + [1])
    m = min(m, max_points)
    f = len(sets)
    a = np.zeros((f, m, 2))
    b = np.zeros((f, m, 2))
    w = np.zeros((f, m))
    for i, s in enumerate(sets):
        s = np.asarray(s, np.float64)[:m]
        a[i, :len(s)] = s[:, :2]
        b[i, :len(s)] = s[:, 2:]
        w[i, :len(s)] = 1.0
    return a, b, w
