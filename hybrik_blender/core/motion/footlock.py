"""Foot contacts, foot locking with analytic two-bone leg IK, and grounding.

Everything works in a Z-up world where the floor is z = 0 (see
:mod:`.ground`) and is vectorised over frames.

Contacts
--------
A foot is planted when its lowest sole point is near the floor *and* its
ankle moves slowly horizontally. Hysteresis: a contact starts only where both
the strict "on" thresholds hold, and lasts as long as the looser "off"
thresholds hold; runs shorter than ``min_contact_frames`` are dropped and
gaps shorter than ``max_gap_frames`` are closed.

Locking
-------
Per contact run the ankle is pinned horizontally at the median of its
positions over the run, and vertically at the height that puts the foot's
lowest sole point on the floor in that frame. The target blends from the
animation to the pin with a smoothstep over the first ``blend_frames`` of the
run and back over its last ones (:func:`contact_blend`), so there is no pop. The leg is then solved analytically (:func:`two_bone_ik`): the knee
rotates about its own flexion axis until hip-ankle distance is right, then
the hip swings the leg onto the target. Hip and knee local rotations change;
the ankle's world orientation is kept, so the foot does not tilt.

Grounding
---------
The root is moved along the floor normal so that in every frame the lowest
sole point of a planted foot touches the floor (interpolated between
contacts), and never lower than needed to keep *all* sole points above the
floor. That is the "grounding only" mode; "auto" does grounding and locking.
"""
import numpy as np

from .filters import fill_gaps, zero_phase_lowpass
from .ground import FOOT_JOINTS_29, SOLE_FOOT, posed_skeleton, transform_points

HIP = np.array([1, 2])
KNEE = np.array([4, 5])
ANKLE = np.array([7, 8])
PELVIS = 0


def _unit(v, eps=1e-12):
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, eps)


def axis_angle_rotation(axis, angle):
    """Rodrigues for unit axes (..., 3) and angles (...)."""
    k = axis
    c, s = np.cos(angle)[..., None, None], np.sin(angle)[..., None, None]
    kx, ky, kz = k[..., 0], k[..., 1], k[..., 2]
    z = np.zeros_like(kx)
    kk = np.stack([np.stack([z, -kz, ky], -1), np.stack([kz, z, -kx], -1),
                   np.stack([-ky, kx, z], -1)], -2)
    return np.eye(3) + s * kk + (1.0 - c) * (kk @ kk)


def rotation_between(a, b):
    """Smallest rotations taking directions a to b, (..., 3) -> (..., 3, 3)."""
    a, b = _unit(a), _unit(b)
    axis = np.cross(a, b)
    s = np.linalg.norm(axis, axis=-1)
    c = np.sum(a * b, -1)
    angle = np.arctan2(s, c)
    # antiparallel: any axis perpendicular to a
    alt = np.cross(a, np.where(np.abs(a[..., :1]) < 0.9, [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]))
    axis = np.where((s < 1e-9)[..., None], alt, axis)
    return axis_angle_rotation(_unit(axis), angle)


def two_bone_ik(hip, knee, ankle, target, knee_axis, softness=0.0):
    """Analytic two-bone IK.

    hip, knee, ankle, target: (..., 3) positions; knee_axis (..., 3): the
    knee's flexion axis in the same frame (the knee's local x for SMPL,
    about which positive angles flex the knee).
    Returns (knee_rot, hip_rot) (..., 3, 3): rotating the shin about the knee
    by knee_rot and then the whole leg about the hip by hip_rot brings the
    ankle onto the target (or as close as the leg reaches).

    The knee angle phi about the flexion axis k solves, with u = hip - knee,
    v = ankle - knee and c = (|u|^2 + |v|^2 - d^2) / 2:
    u . R(k, phi) v = P + Q cos(phi) + S sin(phi) = c. Of the two roots the
    one that flexes the knee forwards (not hyperextended) and moves least is
    taken, so a nearly straight leg never snaps to a backwards knee.

    softness (fraction of the leg length, 0 = exact): "soft IK". Beyond
    ``(1 - softness)`` of the full reach the hip-ankle distance saturates
    smoothly (tanh) instead of hitting the straight-leg limit, where the knee
    angle (an arccos) would change infinitely fast and pop. Targets inside
    that band are reached exactly; the miss beyond it is ~x^3 / (3 band^2).
    """
    u = hip - knee
    v = ankle - knee
    a = np.linalg.norm(u, axis=-1)
    b = np.linalg.norm(v, axis=-1)
    d = np.linalg.norm(target - hip, axis=-1)
    if softness > 0:
        band = softness * (a + b)
        d0 = (a + b) - band
        over = np.maximum(d - d0, 0.0)
        d = np.where(d > d0, d0 + band * np.tanh(over / band), d)
    d = np.clip(d, np.abs(a - b) + 1e-6, (a + b) * (1.0 - 1e-5))
    c = 0.5 * (a * a + b * b - d * d)
    k = _unit(knee_axis)
    v_par = np.sum(k * v, -1, keepdims=True) * k
    v_perp = v - v_par
    p = np.sum(u * v_par, -1)
    q = np.sum(u * v_perp, -1)
    s = np.sum(u * np.cross(k, v_perp), -1)
    amp = np.hypot(q, s)
    psi = np.arctan2(s, q)
    delta = np.arccos(np.clip((c - p) / np.maximum(amp, 1e-12), -1.0, 1.0))
    cands = np.stack([psi + delta, psi - delta], -1)
    cands = (cands + np.pi) % (2.0 * np.pi) - np.pi
    rot_v = (v_par[..., None, :] + np.cos(cands)[..., None] * v_perp[..., None, :]
             + np.sin(cands)[..., None] * np.cross(k, v_perp)[..., None, :])
    # flexed forwards: (u x v') . k <= 0 for SMPL's knee (see docstring)
    backwards = np.sum(np.cross(u[..., None, :], rot_v) * k[..., None, :], -1) > 1e-9
    cost = np.abs(cands) + 10.0 * backwards
    pick = np.argmin(cost, -1)
    phi = np.take_along_axis(cands, pick[..., None], -1)[..., 0]
    knee_rot = axis_angle_rotation(k, phi)
    new_ankle = knee + np.einsum("...ij,...j->...i", knee_rot, v)
    hip_rot = rotation_between(new_ankle - hip, target - hip)
    return knee_rot, hip_rot


def apply_leg_ik(rotmats, glob, joints, targets, weights=None, legs=(0, 1), softness=0.0):
    """Move both ankles to ``targets`` (N, 2, 3) (same frame as ``joints``),
    returning new local rotations (N, 24, 3, 3) float64.

    glob, joints: forward kinematics of ``rotmats`` (:func:`.ground.posed_skeleton`).
    Only hip and knee local rotations change; ankle local rotations are
    recomputed so that the ankle keeps its world orientation. weights (N, 2):
    frames with weight 0 are left bit-identical. softness: see
    :func:`two_bone_ik`.
    """
    out = np.array(rotmats, dtype=np.float64)
    for leg in legs:
        h, kn, an = HIP[leg], KNEE[leg], ANKLE[leg]
        sel = slice(None) if weights is None else np.flatnonzero(weights[:, leg] > 0)
        g = glob[sel]
        j = joints[sel]
        knee_rot, hip_rot = two_bone_ik(j[:, h], j[:, kn], j[:, an], targets[sel, leg],
                                        g[:, kn, :, 0], softness)
        g_hip = hip_rot @ g[:, h]
        g_knee = hip_rot @ knee_rot @ g[:, kn]
        out[sel, h] = np.swapaxes(g[:, PELVIS], -1, -2) @ g_hip
        out[sel, kn] = np.swapaxes(g_hip, -1, -2) @ g_knee
        out[sel, an] = np.swapaxes(g_knee, -1, -2) @ g[:, an]
    return out


# --- contacts -------------------------------------------------------------------

def _runs(mask):
    """Start and end (exclusive) indices of the True runs of a 1-D mask."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def _hysteresis(on, keep):
    """True on the runs of ``keep`` that contain at least one ``on`` frame."""
    keep = keep | on
    starts, ends = _runs(keep)
    out = np.zeros_like(keep)
    if len(starts) == 0:
        return out
    csum = np.concatenate([[0], np.cumsum(on)])
    hit = csum[ends] - csum[starts] > 0
    rising = keep & ~np.concatenate([[False], keep[:-1]])
    label = np.cumsum(rising) - 1  # run number of each keep frame
    out[keep] = hit[label[keep]]
    return out


def _close_and_prune(mask, max_gap, min_len):
    starts, ends = _runs(~mask)
    gaps = (ends - starts <= max_gap) & (starts > 0) & (ends < len(mask))
    fill = np.zeros(len(mask) + 1, np.int64)
    np.add.at(fill, starts[gaps], 1)
    np.add.at(fill, ends[gaps], -1)
    mask = mask | (np.cumsum(fill)[:-1] > 0)
    starts, ends = _runs(mask)
    short = ends - starts < min_len
    cut = np.zeros(len(mask) + 1, np.int64)
    np.add.at(cut, starts[short], 1)
    np.add.at(cut, ends[short], -1)
    return mask & ~(np.cumsum(cut)[:-1] > 0)


def detect_contacts(heights, speeds, valid=None, fps=30.0, height_on=0.03, height_off=0.06,
                    speed_on=0.25, speed_off=0.5, min_contact_frames=3, max_gap_frames=2):
    """Foot contacts with hysteresis.

    heights (N, 2): lowest sole point of each foot above the floor (m).
    speeds (N, 2): horizontal ankle speed (m/s).
    A contact starts where height < height_on and speed < speed_on, and holds
    while height < height_off and speed < speed_off. Invalid frames are never
    contacts. ``min_contact_frames`` and ``max_gap_frames`` are at 30 fps and
    scale with ``fps``. Returns (N, 2) bool.
    """
    n = heights.shape[0]
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    scale = fps / 30.0
    min_len = max(1, int(round(min_contact_frames * scale)))
    max_gap = int(round(max_gap_frames * scale))
    out = np.zeros((n, 2), bool)
    for f in (0, 1):
        on = (heights[:, f] < height_on) & (speeds[:, f] < speed_on) & valid
        keep = (heights[:, f] < height_off) & (speeds[:, f] < speed_off) & valid
        m = _hysteresis(on, keep)
        out[:, f] = _close_and_prune(m, max_gap, min_len) & valid
    return out


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _next_run_end(mask):
    """For every frame the index of the last frame of the next (or current)
    True run of a 1-D mask; len(mask) where there is none."""
    n = len(mask)
    idx = np.arange(n)
    ends = mask & ~np.concatenate([mask[1:], [False]])
    return np.minimum.accumulate(np.where(ends, idx, n)[::-1])[::-1]


def contact_blend(contacts, blend_frames):
    """(N, 2) lock weights in [0, 1]: 0 outside contacts; inside each contact
    run a smoothstep ramp up over its first ``blend_frames`` frames and down
    over its last ones (shortened to half the run when it is shorter).

    The ramps sit inside the contact on purpose. Blending in before a contact
    pulls a still-landing foot ahead of the animation and stops it dead on the
    pin; holding it after the contact makes the lifting foot catch up later.
    Both added acceleration spikes (measured on the synthetic walk: max joint
    acceleration 71 mm/frame^2 against 43 unlocked). Inside the run the foot is
    already nearly still, so the ramps add none, at the price of a little
    residual sliding in the ramp frames.
    """
    n = contacts.shape[0]
    if blend_frames <= 0:
        return contacts.astype(np.float64)
    idx = np.arange(n, dtype=np.float64)
    out = np.zeros(contacts.shape)
    for f in (0, 1):
        c = contacts[:, f]
        if not c.any():
            continue
        starts, ends = _runs(c)
        start = np.zeros(n)
        end = np.zeros(n)
        run = np.cumsum(np.isin(np.arange(n), starts)) - 1
        start[c] = starts[run[c]]
        end[c] = ends[run[c]] - 1
        ramp = np.minimum(blend_frames, np.floor((end - start + 1.0) / 2.0))
        pos = np.minimum(idx - start + 1.0, end - idx + 1.0)
        out[:, f] = np.where(c, _smoothstep(pos / (ramp + 1.0)), 0.0)
    return out


def contact_targets(ankles_w, soles_height, contacts):
    """Pin position per frame and foot (N, 2, 3), world.

    Horizontally: per contact run the median ankle position (outside
    contacts: the ankle's own position; those frames have weight 0).
    Vertically: per frame the ankle height that puts the foot's lowest sole
    point exactly on z = 0. The IK keeps the ankle's world orientation, so
    the sole then touches the floor without going through it.
    """
    out = ankles_w.copy()
    out[..., 2] -= soles_height
    for f in (0, 1):
        starts, ends = _runs(contacts[:, f])
        for s, e in zip(starts, ends):  # one per step: a few hundred at most
            out[s:e, f, :2] = np.median(ankles_w[s:e, f, :2], axis=0)
    return out


def foot_heights(soles_w):
    """Lowest sole-point height of each foot, (N, 4, 3) world -> (N, 2)."""
    z = soles_w[..., 2]
    return np.stack([z[:, SOLE_FOOT == f].min(1) for f in (0, 1)], -1)


def horizontal_speed(points_w, fps, valid=None):
    """(N, K, 3) world -> (N, K) horizontal speed (m/s), central differences."""
    p = points_w[..., :2]
    if valid is not None and not np.all(valid):
        p = fill_gaps(p, valid)
    v = np.gradient(p, axis=0) * fps if len(p) > 1 else np.zeros_like(p)
    return np.linalg.norm(v, axis=-1)


def grounding_offsets(heights, contacts, valid, fps, smooth_hz=2.0):
    """Per-frame vertical root offset (N,) in world metres.

    On frames with a contact the planted foot's lowest sole point is brought
    to z = 0 (the lower of the two when both are planted); between contacts
    the offset is interpolated, then low-pass filtered at ``smooth_hz``, and
    finally raised where needed so no sole point is below the floor.
    """
    n = heights.shape[0]
    planted = np.where(contacts, heights, np.inf).min(1)
    has = np.isfinite(planted) & valid
    if has.sum() >= 2:
        raw = fill_gaps(np.where(has, -planted, 0.0), has)
        off = zero_phase_lowpass(raw, fps, smooth_hz)
    elif has.any():
        off = np.full(n, -planted[has][0])
    else:
        off = np.zeros(n)
    need = -heights.min(1)
    return np.maximum(off, need)


def lock_feet(rotmats, root, skeleton, camera_to_world, valid, fps, mode="auto",
              contacts=None, blend_frames=3, contact_params=None, softness=0.02, seen=None):
    """Grounding and foot locking of a whole clip.

    rotmats (N, 24, 3, 3) local rotations (joint 0 in camera frame);
    root (N, 3) pelvis in camera coordinates; skeleton: :class:`.ground.Skeleton`;
    camera_to_world (4, 4) with the floor at z = 0.
    mode: "off" (returned unchanged), "grounding" (root offset only) or
    "auto" (grounding, then IK locking of planted feet).
    contacts: (N, 2) bool to use instead of detection.
    softness: soft-IK band near full leg extension (:func:`two_bone_ik`).
    seen: (N, 2) bool, feet that the capture saw; a foot it did not see
    (held by core.motion.hidden) is never taken for planted.
    Returns (rotmats float64, root float64, contacts (N, 2) bool).
    """
    rotmats = np.asarray(rotmats, np.float64)
    root = np.asarray(root, np.float64)
    valid = np.asarray(valid, bool)
    n = rotmats.shape[0]
    if mode == "off" or n == 0 or not valid.any():
        return rotmats, root, np.zeros((n, 2), bool) if contacts is None else contacts
    if mode not in ("grounding", "auto"):
        raise ValueError(f"unknown foot locking mode {mode!r} (off, grounding, auto)")
    m = np.asarray(camera_to_world, np.float64)
    up_cam = m[2, :3]  # world z axis in camera coordinates

    glob, j29, soles = posed_skeleton(rotmats, skeleton, root)
    soles_w = transform_points(m, soles)
    ankles_w = transform_points(m, j29[:, FOOT_JOINTS_29[:, 0]])
    heights = foot_heights(soles_w)
    if contacts is None:
        speeds = horizontal_speed(ankles_w, fps, valid)
        contacts = detect_contacts(heights, speeds, valid, fps, **(contact_params or {}))
    contacts = np.asarray(contacts, bool) & valid[:, None]
    if seen is not None:
        contacts &= np.asarray(seen, bool)

    off = np.where(valid, grounding_offsets(heights, contacts, valid, fps), 0.0)
    root = root + off[:, None] * up_cam
    if mode == "grounding":
        return rotmats, root, contacts

    # the root moved: shift everything already computed by the same offset
    j29 = j29 + (off[:, None] * up_cam)[:, None]
    ankles_w[..., 2] += off[:, None]
    heights = heights + off[:, None]
    weights = contact_blend(contacts, blend_frames) * valid[:, None]
    if not weights.any():
        return rotmats, root, contacts
    pins_w = contact_targets(ankles_w, heights, contacts)
    targets_w = ankles_w + weights[..., None] * (pins_w - ankles_w)
    targets = transform_points(np.linalg.inv(m), targets_w)
    out = apply_leg_ik(rotmats, glob, j29, targets, weights, softness=softness)
    return out, root, contacts
