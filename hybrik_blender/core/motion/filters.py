"""Temporal smoothing of SMPL motion: rotations in a continuous space, root
translation separately.

Decisions
---------
* Rotations are never filtered as Euler angles (gimbal flips, wrap-around at
  +-180 degrees). They are turned into quaternions, made hemisphere-continuous
  in time (as :func:`..rotations.make_quaternions_continuous`) and filtered in the
  log map (rotation vectors) around a slowly varying reference rotation::

      ref_t  = normalise(lowpass_wide(q)_t)          chordal mean, per joint
      r_t    = log(ref_t^-1 q_t)                     small rotation vector
      out_t  = ref_t exp(lowpass(r)_t)               renormalised by construction

  The reference keeps the rotation vectors small (far from the log map's
  singularity at 360 degrees), so a root that turns round and round is fine,
  and the linear filter then acts on a locally flat space.
* The offline filter is zero-phase: a real, symmetric transfer function
  applied with the FFT to the signal padded by odd reflection at both ends
  (``2 x[0] - x[k]``, as ``scipy.signal.filtfilt``'s default), which keeps the
  value and the slope at the clip's ends instead of pulling them towards 0.
  ``"gaussian"`` (default; no overshoot, no ringing) or ``"butterworth"`` (the
  squared magnitude of an order-n Butterworth, i.e. exactly what a
  forward-backward Butterworth does in the steady state).
* The user setting is a *strength*: 0 returns the input unchanged (the very
  same array, bit-identical); larger is smoother. Strength s means a -3 dB
  cutoff of ``base_hz / s`` (rotations: 4 Hz at s = 1, translation: 3 Hz at
  s = 1), so the slider is independent of the frame rate.
* Invalid frames (valid False) are bridged before filtering (quaternion nlerp
  and linear interpolation between the neighbouring valid frames, held
  constant before the first and after the last), filtered with the rest, and
  then given back their original placeholder rows: they never pull valid
  frames towards their identity/zero placeholders and they stay invalid.
* Samples are assumed evenly spaced at ``fps`` (the result's frames).
* The One Euro filter (Casiez et al. 2012) is the causal option for
  streaming: its output at frame t depends only on frames <= t. For rotations
  it works on the sphere: each step slerps the previous output towards the
  new sample by the adaptive factor alpha.
"""
import math

import numpy as np

from ..rotations import (matrix_to_quaternion, quaternion_from_matrix_entries,
                        quaternion_to_matrix)

ROTATION_BASE_CUTOFF_HZ = 4.0
TRANSLATION_BASE_CUTOFF_HZ = 3.0
# The log-map reference is this many times smoother than the filter itself.
REFERENCE_CUTOFF_RATIO = 0.25

ONE_EURO_MIN_CUTOFF_HZ = 1.5
ONE_EURO_BETA_ROT = 0.3      # per rad/s
ONE_EURO_BETA_TRANS = 1.0    # per m/s
ONE_EURO_D_CUTOFF_HZ = 1.0


# --- quaternion helpers (w, x, y, z) ---------------------------------------

def quat_multiply(a, b):
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], -1)


def quat_conjugate(q):
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_log(q):
    """Unit quaternions -> rotation vectors (angle * axis). Continuous for
    any w (angles up to 360 degrees), singular only at q = -1."""
    v = q[..., 1:]
    s = np.linalg.norm(v, axis=-1)
    w = q[..., 0]
    small = s < 1e-8
    angle = 2.0 * np.arctan2(s, w)
    scale = np.where(small, 2.0 / np.where(np.abs(w) < 1e-12, 1.0, w),
                     angle / np.where(small, 1.0, s))
    return v * scale[..., None]


def quat_exp(rotvec):
    """Rotation vectors -> unit quaternions."""
    half = 0.5 * np.linalg.norm(rotvec, axis=-1)
    small = half < 1e-6
    sinc = np.where(small, 0.5 - half ** 2 / 12.0,
                    0.5 * np.sin(half) / np.where(small, 1.0, half))
    return np.concatenate([np.cos(half)[..., None], rotvec * sinc[..., None]], -1)


def _normalize(q):
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    return q / np.where(n > 0, n, 1.0)


# --- zero-phase low-pass ---------------------------------------------------

def strength_to_cutoff(strength, base_hz):
    """Strength (>= 0) -> cutoff in Hz; strength 0 -> None (no filtering)."""
    strength = float(strength)
    if not strength > 0:
        return None
    return base_hz / strength


def _fast_length(n):
    """Smallest 5-smooth integer >= n (fast FFT sizes)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _transfer(freqs, fps, cutoff_hz, method, order):
    f = freqs * fps  # cycles / sample -> Hz
    if method == "gaussian":
        # exp(-2 pi^2 sigma^2 f^2) = 1/sqrt(2) at f = cutoff.
        return np.exp(-0.5 * math.log(2.0) * (f / cutoff_hz) ** 2)
    if method == "butterworth":
        # |H|^2 of an order-n Butterworth (-3 dB after forward + backward).
        return 1.0 / (1.0 + (f / cutoff_hz) ** (2 * order))
    raise ValueError(f"unknown smoothing method {method!r} (gaussian, butterworth)")


def _pad_length(fps, cutoff_hz, method):
    # Covers the impulse response: 4 sigma for the Gaussian, ~3 periods of the
    # cutoff for the Butterworth.
    if method == "gaussian":
        sigma_s = math.sqrt(math.log(2.0)) / (2.0 * math.pi * cutoff_hz)
        return int(math.ceil(4.0 * sigma_s * fps)) + 2
    return int(math.ceil(3.0 * fps / cutoff_hz)) + 2


def zero_phase_lowpass(x, fps, cutoff_hz, method="gaussian", order=2):
    """Zero-phase low-pass along axis 0 of ``x`` (N, ...), float64 out.

    Odd reflection at both ends keeps value and slope, so a linear ramp (and
    a constant) passes through exactly up to rounding.
    """
    x = np.asarray(x, dtype=np.float64)
    if cutoff_hz is None or x.shape[0] < 2:
        return x.copy()
    flat = np.ascontiguousarray(x.reshape(x.shape[0], -1).T)
    return _lowpass_last(flat, fps, cutoff_hz, method, order).T.reshape(x.shape)


def _lowpass_last(x, fps, cutoff_hz, method="gaussian", order=2):
    """:func:`zero_phase_lowpass` along the last axis (time last is the
    layout pocketfft is fastest on)."""
    n = x.shape[-1]
    if cutoff_hz is None or n < 2:
        return np.array(x, dtype=np.float64)
    pad = _pad_length(fps, cutoff_hz, method)
    r = min(pad, n - 1)
    head = 2.0 * x[..., :1] - x[..., r:0:-1]
    tail = 2.0 * x[..., -1:] - x[..., -2:-r - 2:-1]
    parts = [head, x, tail]
    if pad > r:  # clip shorter than the filter: continue with the end values
        parts = ([np.repeat(head[..., :1], pad - r, -1)] + parts
                 + [np.repeat(tail[..., -1:], pad - r, -1)])
    xp = np.concatenate(parts, -1)
    length = _fast_length(xp.shape[-1] + pad)
    h = _transfer(np.fft.rfftfreq(length), fps, cutoff_hz, method, order)
    spec = np.fft.rfft(xp, n=length, axis=-1)
    spec *= h
    return np.fft.irfft(spec, n=length, axis=-1)[..., pad:pad + n]


# --- gaps ------------------------------------------------------------------

def _neighbours(valid):
    """Previous and next valid index for every frame (clamped), and the
    interpolation weight of the next one."""
    n = len(valid)
    idx = np.arange(n)
    vi = np.flatnonzero(valid)
    prev = np.maximum.accumulate(np.where(valid, idx, -1))
    nxt = np.minimum.accumulate(np.where(valid, idx, n)[::-1])[::-1]
    prev = np.where(prev < 0, vi[0], prev)
    nxt = np.where(nxt >= n, vi[-1], nxt)
    span = nxt - prev
    t = np.where(span > 0, (idx - prev) / np.where(span > 0, span, 1), 0.0)
    return prev, nxt, t


def fill_gaps(x, valid):
    """Linear interpolation over invalid frames along axis 0 (held at the
    ends). Returns float64; valid rows are unchanged."""
    x = np.asarray(x, dtype=np.float64)
    valid = np.asarray(valid, bool)
    if valid.all() or not valid.any():
        return x.copy()
    prev, nxt, t = _neighbours(valid)
    t = t.reshape((-1,) + (1,) * (x.ndim - 1))
    out = (1.0 - t) * x[prev] + t * x[nxt]
    out[valid] = x[valid]
    return out


def fill_quaternion_gaps(q, valid):
    """Normalised lerp over invalid frames, the far end sign-aligned to the
    near one."""
    q = np.asarray(q, dtype=np.float64)
    valid = np.asarray(valid, bool)
    if valid.all() or not valid.any():
        return q.copy()
    prev, nxt, t = _neighbours(valid)
    a, b = q[prev], q[nxt]
    b = np.where(np.sum(a * b, -1, keepdims=True) < 0, -b, b)
    t = t.reshape((-1,) + (1,) * (q.ndim - 1))
    out = _normalize((1.0 - t) * a + t * b)
    out[valid] = q[valid]
    return out


def _valid_mask(valid, n):
    if valid is None:
        return np.ones(n, bool)
    valid = np.asarray(valid, bool)
    if valid.shape != (n,):
        raise ValueError(f"valid has shape {valid.shape}, expected ({n},)")
    return valid


def _restore_invalid(out, original, valid):
    if not valid.all():
        out[~valid] = original[~valid]
    return out


# --- offline smoothing -------------------------------------------------------

# Component-first kernels: arrays (4|3|9, ..., T) with time last, so every
# element-wise operation and the FFT run on contiguous memory (about twice as
# fast as the (T, ..., 4) layout on long clips).

def _cf_mul(a, b):
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw])


def _cf_conj(q):
    return np.stack([q[0], -q[1], -q[2], -q[3]])


def _cf_log(q):
    s = np.sqrt(q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    small = s < 1e-8
    w = q[0]
    scale = np.where(small, 2.0 / np.where(np.abs(w) < 1e-12, 1.0, w),
                     2.0 * np.arctan2(s, w) / np.where(small, 1.0, s))
    return q[1:] * scale


def _cf_exp(r):
    half = 0.5 * np.sqrt(r[0] * r[0] + r[1] * r[1] + r[2] * r[2])
    small = half < 1e-6
    sinc = np.where(small, 0.5 - half ** 2 / 12.0,
                    0.5 * np.sin(half) / np.where(small, 1.0, half))
    return np.concatenate([np.cos(half)[None], r * sinc])


def _cf_from_matrix(m):
    """(9, ...) row-major matrix entries -> (4, ...) unit quaternions."""
    return np.stack(quaternion_from_matrix_entries(*m))


def _cf_to_matrix(q):
    """(4, ...) quaternions (normalised here) -> (9, ...) matrix entries."""
    q = q / np.sqrt(np.sum(q * q, axis=0))
    w, x, y, z = q
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz, wx, wy, wz = x * y, x * z, y * z, w * x, w * y, w * z
    return np.stack([1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
                     2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
                     2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)])


def _cf_continuous(q):
    """Sign flips along the last (time) axis so neighbours have q . q' >= 0:
    :func:`..rotations.make_quaternions_continuous` in the time-last layout."""
    dots = np.sum(q[..., 1:] * q[..., :-1], axis=0)
    flips = np.cumsum(dots < 0, axis=-1) % 2
    sign = np.concatenate([np.ones(dots.shape[:-1] + (1,)), 1.0 - 2.0 * flips], -1)
    return q * sign


def _smooth_cf(q, fps, cutoff_hz, method, weights=None):
    """Log-map smoothing of (4, ..., T) quaternions; see the module docstring.
    With weights (..., T) (confidences), each sample counts in proportion to
    its weight (normalised convolution: lowpass(w x) / lowpass(w))."""
    n = q.shape[-1]
    # Geodesic odd reflection at both ends (q0 q_k^-1 q0 continues a steady
    # rotation exactly), wide enough for the reference filter; the linear
    # filters below then only pad far from the clip.
    r = min(_pad_length(fps, cutoff_hz * REFERENCE_CUTOFF_RATIO, method), n - 1)
    q0, q1 = q[..., :1], q[..., -1:]
    head = _cf_mul(_cf_mul(q0, _cf_conj(q[..., r:0:-1])), q0)
    tail = _cf_mul(_cf_mul(q1, _cf_conj(q[..., -2:-r - 2:-1])), q1)
    q = _cf_continuous(np.concatenate([head, q, tail], -1))
    ref = _lowpass_last(q, fps, cutoff_hz * REFERENCE_CUTOFF_RATIO, method)
    norm = np.sqrt(np.sum(ref * ref, axis=0))
    # Rotations spread over more than ~120 degrees inside the reference window
    # (a very fast spin) leave a short chordal mean: use the sample there.
    ref = np.where(norm > 0.5, ref / np.maximum(norm, 1e-12), q)
    rel = _cf_log(_cf_mul(_cf_conj(ref), q))
    if weights is None:
        rel = _lowpass_last(rel, fps, cutoff_hz, method)
    else:
        w = np.asarray(weights, np.float64)
        w = np.concatenate([w[..., r:0:-1], w, w[..., -2:-r - 2:-1]], -1) + 1e-3
        lw = np.maximum(_lowpass_last(w, fps, cutoff_hz, method), 1e-6)
        rel = _lowpass_last(rel * w, fps, cutoff_hz, method) / lw
    return _cf_mul(ref, _cf_exp(rel))[..., r:r + n]


def smooth_quaternions(q, fps, cutoff_hz, method="gaussian"):
    """Zero-phase smoothing of (N, ..., 4) quaternions in the log map around a
    wide chordal-mean reference; see the module docstring. No gaps; signs
    need not be continuous (they are made so here)."""
    cf = np.moveaxis(np.asarray(q, np.float64), (0, -1), (-1, 0))
    out = _smooth_cf(np.ascontiguousarray(cf), fps, cutoff_hz, method)
    return np.moveaxis(out, (0, -1), (-1, 0))


def smooth_rotations(rotmats, fps, strength=1.0, valid=None, method="gaussian",
                     cutoff_hz=None, weights=None):
    """Offline zero-phase smoothing of (N, J, 3, 3) rotations.

    weights (N, J): per-joint confidence of each frame (optional); frames a
    joint is seen in pull its filtered value more than frames it is not.

    strength: 0 returns ``rotmats`` itself; s > 0 filters with a -3 dB cutoff
    of ``ROTATION_BASE_CUTOFF_HZ / s`` (or ``cutoff_hz`` when given).
    Invalid frames are bridged for the filter and keep their original rows.
    Returns an array of the input's dtype.
    """
    rotmats = np.asarray(rotmats)
    cutoff = cutoff_hz if cutoff_hz is not None else strength_to_cutoff(
        strength, ROTATION_BASE_CUTOFF_HZ)
    valid = _valid_mask(valid, rotmats.shape[0])
    if cutoff is None or rotmats.shape[0] < 3 or valid.sum() < 2:
        return rotmats
    n = rotmats.shape[0]
    mats = rotmats.reshape(n, -1, 9)
    m9 = np.ascontiguousarray(np.transpose(mats, (2, 1, 0)), dtype=np.float64)  # (9, J, N)
    q = _cf_from_matrix(m9)
    if not valid.all():
        q = np.ascontiguousarray(np.moveaxis(fill_quaternion_gaps(np.moveaxis(q, (0, -1), (-1, 0)),
                                                                  valid), (0, -1), (-1, 0)))
    w = None if weights is None else np.ascontiguousarray(np.asarray(weights, np.float64).T)
    out9 = _cf_to_matrix(_smooth_cf(q, fps, cutoff, method, w))
    out = np.transpose(out9, (2, 1, 0)).reshape(rotmats.shape).astype(rotmats.dtype)
    return _restore_invalid(out, rotmats, valid)


def smooth_translation(x, fps, strength=1.0, valid=None, method="gaussian",
                       cutoff_hz=None):
    """Offline zero-phase smoothing of (N, 3) positions (or any (N, ...)).

    strength: 0 returns ``x`` itself; s > 0 means a -3 dB cutoff of
    ``TRANSLATION_BASE_CUTOFF_HZ / s``.
    """
    x = np.asarray(x)
    cutoff = cutoff_hz if cutoff_hz is not None else strength_to_cutoff(
        strength, TRANSLATION_BASE_CUTOFF_HZ)
    valid = _valid_mask(valid, x.shape[0])
    if cutoff is None or x.shape[0] < 3 or valid.sum() < 2:
        return x
    out = zero_phase_lowpass(fill_gaps(x, valid), fps, cutoff, method)
    return _restore_invalid(out.astype(x.dtype), x, valid)


# --- One Euro (causal) ---------------------------------------------------------

def _alpha(cutoff_hz, dt):
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Causal One Euro filter for vectors of any fixed shape (e.g. root
    translation (3,)). Call :meth:`step` once per incoming frame.

    min_cutoff_hz: cutoff at rest (lower: smoother, more lag at low speed).
    beta: cutoff increase per unit of speed (higher: less lag when moving).
    d_cutoff_hz: cutoff of the speed estimate.
    max_gap_s: after a gap longer than this the filter restarts.
    """

    def __init__(self, min_cutoff_hz=ONE_EURO_MIN_CUTOFF_HZ, beta=ONE_EURO_BETA_TRANS,
                 d_cutoff_hz=ONE_EURO_D_CUTOFF_HZ, max_gap_s=0.5):
        self.min_cutoff_hz = float(min_cutoff_hz)
        self.beta = float(beta)
        self.d_cutoff_hz = float(d_cutoff_hz)
        self.max_gap_s = float(max_gap_s)
        self.reset()

    def reset(self):
        self._x = None
        self._dx = None
        self._t = None

    def _dt(self, t):
        if self._t is None or t is None:
            return None
        dt = float(t) - self._t
        if not dt > 0 or dt > self.max_gap_s:
            return None
        return dt

    def step(self, x, t):
        """Filter sample ``x`` taken at time ``t`` (seconds); returns float64."""
        x = np.array(x, dtype=np.float64)
        dt = self._dt(t)
        if dt is None:
            self._x, self._dx, self._t = x, np.zeros_like(x), float(t)
            return x.copy()
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(self.d_cutoff_hz, dt) * (dx - self._dx)
        cutoff = self.min_cutoff_hz + self.beta * np.abs(self._dx)
        a = 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))
        self._x = self._x + a * (x - self._x)
        self._t = float(t)
        return self._x.copy()


class OneEuroRotationFilter(OneEuroFilter):
    """Causal One Euro filter for a set of rotations, (J, 3, 3) or (J, 4)
    quaternions per step, on the sphere: the speed is the angular speed
    (rad/s) of each joint, and the update slerps the previous output towards
    the sample by alpha (the quaternion sign is chosen next to the previous
    output, so there are no hemisphere jumps)."""

    def __init__(self, min_cutoff_hz=ONE_EURO_MIN_CUTOFF_HZ, beta=ONE_EURO_BETA_ROT,
                 d_cutoff_hz=ONE_EURO_D_CUTOFF_HZ, max_gap_s=0.5):
        super().__init__(min_cutoff_hz, beta, d_cutoff_hz, max_gap_s)

    def step_quaternions(self, q, t):
        q = np.array(q, dtype=np.float64)
        dt = self._dt(t)
        if dt is None:
            self._x, self._dx, self._t = q, np.zeros(q.shape[:-1]), float(t)
            return q.copy()
        rel = quat_log(quat_multiply(quat_conjugate(self._x), q))
        if np.any(np.sum(self._x * q, -1) < 0):  # take the short way round
            q = np.where(np.sum(self._x * q, -1, keepdims=True) < 0, -q, q)
            rel = quat_log(quat_multiply(quat_conjugate(self._x), q))
        speed = np.linalg.norm(rel, axis=-1) / dt
        self._dx = self._dx + _alpha(self.d_cutoff_hz, dt) * (speed - self._dx)
        cutoff = self.min_cutoff_hz + self.beta * self._dx
        a = 1.0 / (1.0 + 1.0 / (2.0 * math.pi * cutoff * dt))
        self._x = _normalize(quat_multiply(self._x, quat_exp(a[..., None] * rel)))
        self._t = float(t)
        return self._x.copy()

    def step(self, rotmats, t):
        """(J, 3, 3) rotations at time t -> filtered (J, 3, 3) float64."""
        return quaternion_to_matrix(self.step_quaternions(matrix_to_quaternion(rotmats), t))


def _one_euro_params(strength, min_cutoff_hz, beta, base_beta):
    return (ONE_EURO_MIN_CUTOFF_HZ / strength if min_cutoff_hz is None else min_cutoff_hz,
            base_beta if beta is None else beta)


def one_euro_rotations(rotmats, fps, strength=1.0, valid=None, time_s=None,
                       min_cutoff_hz=None, beta=None, d_cutoff_hz=ONE_EURO_D_CUTOFF_HZ):
    """Run :class:`OneEuroRotationFilter` over a whole (N, J, 3, 3) clip.

    Causal: row t of the output depends only on rows <= t. strength 0
    returns the input itself; s > 0 sets min_cutoff to ``1.5 Hz / s`` unless
    given. Invalid frames are skipped (the filter keeps its state; after a gap
    longer than 0.5 s it restarts) and keep their rows.
    """
    rotmats = np.asarray(rotmats)
    if not float(strength) > 0:
        return rotmats
    n = rotmats.shape[0]
    valid = _valid_mask(valid, n)
    t = np.arange(n) / float(fps) if time_s is None else np.asarray(time_s, np.float64)
    mc, b = _one_euro_params(float(strength), min_cutoff_hz, beta, ONE_EURO_BETA_ROT)
    filt = OneEuroRotationFilter(mc, b, d_cutoff_hz)
    q = matrix_to_quaternion(rotmats)
    out = q.copy()
    for i in np.flatnonzero(valid):
        out[i] = filt.step_quaternions(q[i], t[i])
    res = quaternion_to_matrix(out).astype(rotmats.dtype)
    return _restore_invalid(res, rotmats, valid)


def one_euro_translation(x, fps, strength=1.0, valid=None, time_s=None,
                         min_cutoff_hz=None, beta=None, d_cutoff_hz=ONE_EURO_D_CUTOFF_HZ):
    """Causal One Euro filter over (N, ...) positions; see
    :func:`one_euro_rotations` for strength, gaps and causality."""
    x = np.asarray(x)
    if not float(strength) > 0:
        return x
    n = x.shape[0]
    valid = _valid_mask(valid, n)
    t = np.arange(n) / float(fps) if time_s is None else np.asarray(time_s, np.float64)
    mc, b = _one_euro_params(float(strength), min_cutoff_hz, beta, ONE_EURO_BETA_TRANS)
    filt = OneEuroFilter(mc, b, d_cutoff_hz)
    out = np.array(x, dtype=np.float64)
    for i in np.flatnonzero(valid):
        out[i] = filt.step(x[i], t[i])
    return _restore_invalid(out.astype(x.dtype), x, valid)
