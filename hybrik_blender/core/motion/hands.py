"""Hands over a whole take: per-frame finger IK, confidence-weighted
smoothing, easing to a relaxed hand where the hand is not seen, and the
wrist/forearm reconciliation with the body.

Decisions
---------
* The per-frame IK (``core.body.hand.solve_hand``) is exact; robustness is
  in time. Each of the 21 hand parameters is smoothed by a normalised
  (weighted) zero-phase Gaussian: the weight of a frame is its detection
  confidence, times, for the abductions and the thumb's twist, how well that
  frame determines them (``c / (c + CONDITIONING_HALF)``). Two robust
  re-weighting passes (Cauchy weights on the residual, scale
  ``OUTLIER_DEG``) take the weight out of single wrong frames.
* Frames whose hand confidence is below ``MIN_CONFIDENCE`` count as not
  seen. Over a gap the parameters are interpolated linearly between the
  last and next seen frames, and blended towards the relaxed hand
  (``core.body.hand.RELAXED_DEG``) by an ease weight: 1 up to
  ``HOLD_SECONDS`` (0.25 s) from the nearest seen frame, then falling along a
  smoothstep (zero slope at both ends, so no jerk) to 0 at
  ``HOLD_SECONDS + RELAX_SECONDS`` (0.75 s). So a hand lost for up to half a
  second is simply bridged; one lost for longer relaxes, and eases back to
  the observed pose just as smoothly before it is seen again (the take is
  processed as a whole). A hand that is never seen is relaxed throughout.
* The wrist: where the hand is seen, the palm's orientation refines the body
  (``core.body.hand.reconcile_wrist``: swing at the wrist, twist about the
  forearm moved to the elbow), blended by the same ease weight times a
  trust that rises from 0 at confidence ``BLEND_FROM`` to 1 at
  ``BLEND_FULL``, so it fades in and out with the hand. The palm's
  local target is smoothed and gap-filled like the fingers (quaternions).
* Invalid body rows keep their placeholders downstream (the result writer
  resets them), but they take part here as frames where the hand is unseen.
* ``hand_confidence`` of a joint = ease weight x smoothed frame confidence
  (x the conditioning factor for abductions and the thumb's base).
"""
import numpy as np

from ..body import hand as hk
from ..body.kinematics import forward_kinematics
from ..rotations import matrix_to_quaternion, quaternion_to_matrix
from .filters import fill_gaps, fill_quaternion_gaps

HOLD_SECONDS = 0.25
RELAX_SECONDS = 0.5
MIN_CONFIDENCE = 0.5
SMOOTH_CUTOFF_HZ = 3.0
OUTLIER_DEG = 25.0
CONDITIONING_HALF = 0.02
PALM_RESIDUAL_SCALE = 0.5
BLEND_FROM, BLEND_FULL = 0.3, 0.7   # confidence -> how far the palm overrides the body's wrist
SIDES = ("left", "right")
WRIST = {"left": 20, "right": 21}
ELBOW = {"left": 18, "right": 19}
HAND_JOINT = {"left": 22, "right": 23}
_COND_PARAMS = ((0, 0), (4, 1), (8, 2), (12, 3), (16, 4), (17, 4), (18, 4))


def _sigma_frames(fps, cutoff_hz=None):
    """Gaussian whose -3 dB point is cutoff_hz (as core.motion.filters)."""
    cutoff_hz = SMOOTH_CUTOFF_HZ if cutoff_hz is None else cutoff_hz
    return np.sqrt(np.log(2.0)) / (2.0 * np.pi * cutoff_hz) * fps


def weighted_smooth(x, w, sigma):
    """Normalised Gaussian convolution along axis 0: sum(k w x) / sum(k w).
    x (N, ...), w broadcastable to x. Returns (smoothed, support) where
    support = sum(k w) / sum(k) in [0, 1] tells how much data stood behind
    each output."""
    x = np.asarray(x, np.float64)
    w = np.broadcast_to(np.asarray(w, np.float64), x.shape)
    n = len(x)
    radius = int(np.ceil(3.0 * max(sigma, 1e-6)))
    offsets = np.arange(-radius, radius + 1)
    kern = np.exp(-0.5 * (offsets / max(sigma, 1e-6)) ** 2)
    num = np.zeros_like(x)
    den = np.zeros_like(x)
    tot = np.zeros((n,) + (1,) * (x.ndim - 1))
    for off, k in zip(offsets, kern):
        lo, hi = max(0, -off), min(n, n - off)
        if lo >= hi:
            continue
        num[lo:hi] += k * w[lo + off:hi + off] * x[lo + off:hi + off]
        den[lo:hi] += k * w[lo + off:hi + off]
        tot[lo:hi] += k
    out = np.where(den > 1e-12, num / np.maximum(den, 1e-12), x)
    return out, den / np.maximum(tot, 1e-12)


def ease_weights(seen, time_s, hold_s=HOLD_SECONDS, relax_s=RELAX_SECONDS):
    """1 up to hold_s seconds from the nearest seen frame, then falling along
    a smoothstep to 0 at hold_s + relax_s."""
    seen = np.asarray(seen, bool)
    t = np.asarray(time_s, np.float64)
    if not seen.any():
        return np.zeros(len(t))
    ts = t[seen]
    i = np.clip(np.searchsorted(ts, t), 1, len(ts) - 1) if len(ts) > 1 else np.zeros(len(t), int)
    if len(ts) > 1:
        dist = np.minimum(np.abs(t - ts[i - 1]), np.abs(t - ts[i]))
    else:
        dist = np.abs(t - ts[0])
    dist = np.maximum(np.where(seen, 0.0, dist) - hold_s, 0.0)
    s = np.clip(dist / max(relax_s, 1e-9), 0.0, 1.0)
    return 1.0 - s * s * (3.0 - 2.0 * s)


def smooth_hand_params(params, confidence, conditioning, time_s, fps):
    """One hand over a take: (N, 21) raw parameters, (N,) confidence, (N, 5)
    conditioning -> (N, 21) parameters, (N,) blend weight of the observation
    (ease x the confidence of the nearby seen frames: what the wrist uses)
    and (N, 21) per-parameter confidence (the local density of weighted
    evidence: 0 in gaps, lower for poorly determined parameters)."""
    p = np.asarray(params, np.float64)
    conf = np.clip(np.nan_to_num(np.asarray(confidence, np.float64)), 0.0, 1.0)
    finite = np.all(np.isfinite(p), -1)
    seen = (conf >= MIN_CONFIDENCE) & finite
    n = len(p)
    relaxed = np.broadcast_to(hk.relaxed_params(), (n, hk.NUM_PARAMS))
    if not seen.any():
        return relaxed.copy(), np.zeros(n), np.zeros((n, hk.NUM_PARAMS))
    p = np.where(seen[:, None], p, relaxed)
    w = np.where(seen, conf, 0.0)[:, None] * np.ones(hk.NUM_PARAMS)
    cond = np.nan_to_num(np.asarray(conditioning, np.float64))
    for k, c in _COND_PARAMS:
        w[:, k] *= cond[:, c] / (cond[:, c] + CONDITIONING_HALF)
    sigma = _sigma_frames(fps)
    rw = np.ones_like(w)
    scale = np.radians(OUTLIER_DEG)
    for _ in range(3):
        sm, support = weighted_smooth(p, w * rw, sigma)
        rw = 1.0 / (1.0 + ((p - sm) / scale) ** 2)
    have = support > 1e-3
    filled = np.empty_like(sm)
    for k in range(hk.NUM_PARAMS):
        col = have[:, k] & seen
        filled[:, k] = fill_gaps(sm[:, k], col) if col.any() else relaxed[:, k]
    ease = ease_weights(seen, time_s)
    out = relaxed + ease[:, None] * (filled - relaxed)
    conf_s, _ = weighted_smooth(conf, seen.astype(float), sigma)
    trust = np.clip((fill_gaps(conf_s, seen) - BLEND_FROM) / (BLEND_FULL - BLEND_FROM), 0.0, 1.0)
    blend = ease * trust
    return hk.clip_params(out), blend, np.clip(support, 0.0, 1.0)


def _smooth_quaternions(q, w, seen, sigma, reference):
    """Weighted smoothing of (N, 4) quaternions sign-aligned to reference."""
    q = np.where(np.sum(q * reference, -1, keepdims=True) < 0, -q, q)
    sm, _ = weighted_smooth(q, w[:, None], sigma)
    sm = sm / np.maximum(np.linalg.norm(sm, axis=-1, keepdims=True), 1e-12)
    return fill_quaternion_gaps(sm, seen) if seen.any() else reference


def solve_take_hands(rotmats, hand_landmarks, hand_scores, time_s, fps, rest_hands,
                     forearm_axes, smpl_hand_joints=True):
    """Hands of one take.

    rotmats (N, 24, 3, 3) the body's local rotations (SMPL convention, in the
    camera frame like the hand landmarks); hand_landmarks (N, 2, 21, 3)
    (left, right) in camera axes (any scale and origin); hand_scores (N, 2)
    0..1, 0 where the hand was not found; rest_hands {side: (20, 3)};
    forearm_axes {side: (3,)} the rest direction elbow -> wrist.
    Returns hand_rotmats (N, 30, 3, 3), hand_confidence (N, 30) and the new
    body rotmats (elbows, wrists and, with smpl_hand_joints, the SMPL hand
    joints 22/23 carrying the four fingers' mean knuckle rotation).
    """
    rot = np.array(rotmats, np.float64)
    n = len(rot)
    lms = np.asarray(hand_landmarks, np.float64)
    scores = np.asarray(hand_scores, np.float64)
    hand_rot = np.empty((n, 30, 3, 3))
    hand_conf = np.zeros((n, 30), np.float64)
    sigma = _sigma_frames(fps)
    for s, side in enumerate(SIDES):
        geom = hk.hand_geometry(rest_hands[side], side)
        seen = (scores[:, s] >= MIN_CONFIDENCE) & np.all(np.isfinite(lms[:, s]), (-1, -2))
        raw = np.zeros((n, hk.NUM_PARAMS))
        cond = np.zeros((n, 5))
        palm = np.tile(np.eye(3), (n, 1, 1))
        quality = np.zeros(n)
        if seen.any():
            sol = hk.solve_hand(lms[seen, s], geom)
            raw[seen], cond[seen], palm[seen] = sol["params"], sol["conditioning"], sol["wrist"]
            # a palm that does not fit a rigid hand is a bad detection (real
            # palms differ from the rest palm by a residual of 0.1-0.3)
            quality[seen] = np.exp(-(sol["palm_residual"] / PALM_RESIDUAL_SCALE) ** 2)
        conf = scores[:, s] * quality
        params, weight, pweight = smooth_hand_params(raw, conf, cond, time_s, fps)
        hand_rot[:, 15 * s:15 * s + 15] = hk.params_to_local(params, geom)
        # a joint is as certain as its least certain parameter
        joint_w = np.empty((n, 15))
        for f in range(4):
            joint_w[:, 3 * f] = np.minimum(pweight[:, 4 * f], pweight[:, 4 * f + 1])
            joint_w[:, 3 * f + 1:3 * f + 3] = pweight[:, 4 * f + 2:4 * f + 4]
        joint_w[:, 12] = pweight[:, 16:19].min(-1)
        joint_w[:, 13:15] = pweight[:, 19:21]
        hand_conf[:, 15 * s:15 * s + 15] = joint_w
        if not (conf >= MIN_CONFIDENCE).any():
            continue
        glob, _ = forward_kinematics(rot, np.zeros((24, 3)))
        el, wr = ELBOW[side], WRIST[side]
        target = np.swapaxes(glob[:, el], -1, -2) @ palm
        good = conf >= MIN_CONFIDENCE
        qt = _smooth_quaternions(matrix_to_quaternion(target), np.where(good, conf, 0.0), good,
                                 sigma, matrix_to_quaternion(rot[:, wr]))
        hand_global = glob[:, el] @ quaternion_to_matrix(qt)
        rot[:, el], rot[:, wr] = hk.reconcile_wrist(glob[:, el], rot[:, el], rot[:, wr],
                                                    hand_global, weight, forearm_axes[side])
        if smpl_hand_joints:
            knuckle = hk.knuckle_rotation(params, geom)
            qk = matrix_to_quaternion(knuckle)
            qb = matrix_to_quaternion(rot[:, HAND_JOINT[side]])
            rot[:, HAND_JOINT[side]] = quaternion_to_matrix(hk.slerp_quaternions(qb, qk, weight))
    return {"hand_rotmats": hand_rot, "hand_confidence": np.clip(hand_conf, 0, 1),
            "rotmats": rot}
