"""Deterministic synthetic walk with known foot contacts, noise, and metrics.

Used by the clean-up tests and benchmark as ground truth. The walk is built
from the body model itself:

* a Y-up world (SMPL's own frame, floor y = 0); the pelvis follows a circle
  (``radius``; ``None`` for a straight line) at ``speed`` m/s, bobbing up
  at mid-stance and swaying sideways, with a little yaw/roll oscillation;
* each foot alternates stance (``stance`` of the gait cycle, flat and
  perfectly still on the floor: these frames are the known contacts) and
  swing (quintic smootherstep along the path, a sin^2 lift, toe pitch);
* the legs are solved with the same analytic two-bone IK the foot locking
  uses, so planted feet stay exactly on their footprints; spine, arms and
  head get smooth sinusoidal motion;
* a static camera ``distance`` m from the circle's centre at
  ``camera_height``, pitched down by ``tilt_deg`` and rolled by
  ``roll_deg``, looks at it; the take is expressed in its coordinates
  (x right, y down, z forward), like HybrIK's output.

Everything is closed-form in time, so a clip of any length is reproducible
frame by frame; ``add_noise`` is seeded.
"""
import dataclasses

import numpy as np

from ..blender_space import SMPL_TO_BLENDER, homogeneous
from .footlock import FOOT_JOINTS_29, apply_leg_ik
from .ground import Skeleton, posed_skeleton, transform_points
from ..body.kinematics import forward_kinematics
from ..formats.result import Result
from ..rotations import axis_angle_to_matrix
from ..body.skeleton import NUM_BETAS, PARENTS


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticTake:
    result: Result              # clean take in camera coordinates
    contacts: np.ndarray        # (N, 2) bool: left, right foot planted
    camera_to_world: np.ndarray  # (4, 4) ground truth, Blender Z-up, floor z = 0
    joints29: np.ndarray        # (N, 29, 3) float64, camera coordinates
    skeleton: Skeleton


def _rx(a):
    return axis_angle_to_matrix(np.stack([a, 0 * a, 0 * a], -1))


def _ry(a):
    return axis_angle_to_matrix(np.stack([0 * a, a, 0 * a], -1))


def _rz(a):
    return axis_angle_to_matrix(np.stack([0 * a, 0 * a, a], -1))


def _smootherstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x ** 3 * (x * (6.0 * x - 15.0) + 10.0)


def _path(s, radius):
    """Position (x, z), heading yaw and left normal (x, z) at arc length s."""
    if radius is None:
        pos = np.stack([np.zeros_like(s), s], -1)
        yaw = np.zeros_like(s)
    else:
        a = s / radius
        pos = np.stack([radius * np.cos(a), radius * np.sin(a)], -1)
        tangent = np.stack([-np.sin(a), np.cos(a)], -1)
        yaw = np.arctan2(tangent[:, 0], tangent[:, 1])
    left = np.stack([np.cos(yaw), -np.sin(yaw)], -1)
    return pos, yaw, left


def walk_cycle(model, num_frames=300, fps=30.0, betas=None, speed=0.8, cycle_s=1.0,
               stance=0.6, radius=1.5, distance=4.0, camera_height=1.3, tilt_deg=5.0,
               roll_deg=1.0, lift_m=0.08, foot_pitch=0.15):
    """Build a :class:`SyntheticTake` (see the module docstring)."""
    betas = np.zeros(NUM_BETAS) if betas is None else np.asarray(betas, np.float64)
    sk = Skeleton.from_model(model, betas)
    J = sk.joints
    n = int(num_frames)
    t = np.arange(n) / float(fps)
    stride = speed * cycle_s
    up = np.array([0.0, 1.0, 0.0])

    sole_low = sk.soles[:, 1].min()
    ankle_h = J[7, 1] - sole_low
    thigh = np.linalg.norm(J[4] - J[1])
    shin = np.linalg.norm(J[7] - J[4])
    reach = thigh + shin
    half_step = 0.5 * stride * stance + 0.04
    h_end = np.sqrt((0.985 * reach) ** 2 - half_step ** 2)
    h_mid = min(0.975 * reach, h_end + 0.03)

    # feet
    rotmats = np.tile(np.eye(3), (n, 24, 1, 1))
    ankle_pos = np.empty((n, 2, 3))
    ankle_rot = np.empty((n, 2, 3, 3))
    contacts = np.empty((n, 2), bool)
    for f, (offset, side) in enumerate(((0.0, 1.0), (0.5, -1.0))):
        x = t / cycle_s + offset
        cyc = np.floor(x)
        phi = x - cyc
        u = np.clip((phi - stance) / (1.0 - stance), 0.0, 1.0)
        contacts[:, f] = phi < stance
        s = stride * (cyc + _smootherstep(u)) + stride * (0.5 * stance - offset)
        pos, yaw, left = _path(s, radius)
        lateral = side * abs(J[7 + f, 0])
        lift = lift_m * np.sin(np.pi * u) ** 2
        ankle_pos[:, f] = np.stack([pos[:, 0] + lateral * left[:, 0], ankle_h + lift,
                                    pos[:, 1] + lateral * left[:, 1]], -1)
        pitch = foot_pitch * np.sin(2.0 * np.pi * u) * np.sin(np.pi * u)
        ankle_rot[:, f] = _ry(yaw) @ _rx(pitch)

    # pelvis
    w = 2.0 * np.pi * t / cycle_s
    phase_l = (t / cycle_s) % 1.0
    bump = 0.5 - 0.5 * np.cos(4.0 * np.pi * (phase_l - 0.5 * (stance - 0.5)))
    pos, yaw, left = _path(speed * t, radius)
    sway = 0.015 * np.sin(w - np.pi * stance + 0.5 * np.pi)
    hip_drop = J[0, 1] - J[1, 1]
    pelvis = np.stack([pos[:, 0] + sway * left[:, 0],
                       ankle_h + h_end + (h_mid - h_end) * bump + hip_drop,
                       pos[:, 1] + sway * left[:, 1]], -1)
    yaw_osc = 0.06 * np.sin(w)
    rotmats[:, 0] = _ry(yaw + yaw_osc) @ _rx(np.full(n, 0.05)) @ _rz(0.03 * np.cos(w))

    # upper body
    for j in (3, 6, 9):
        rotmats[:, j] = _ry(-0.35 * yaw_osc) @ _rx(0.02 * np.sin(2 * w))
    rotmats[:, 12] = _ry(-0.2 * yaw_osc)
    rotmats[:, 15] = _rx(0.05 * np.sin(2 * w + 0.3))
    swing = 0.3 * np.sin(w)
    rotmats[:, 16] = _rx(swing) @ _rz(np.full(n, -1.25))
    rotmats[:, 17] = _rx(-swing) @ _rz(np.full(n, 1.25))
    rotmats[:, 18] = _ry(-0.35 - 0.15 * np.sin(w))
    rotmats[:, 19] = _ry(0.35 - 0.15 * np.sin(w))
    rotmats[:, 20] = _rz(0.1 * np.sin(w + 1.0))
    rotmats[:, 21] = _rz(-0.1 * np.sin(w + 1.0))

    # legs: a pre-bent knee gives the IK its flexion plane; ankles get their
    # wanted world orientation, then the IK places them on the footprints
    rotmats[:, 4] = _rx(np.full(n, 0.3))
    rotmats[:, 5] = _rx(np.full(n, 0.3))
    glob, _ = forward_kinematics(rotmats, J, PARENTS, pelvis)
    for f in (0, 1):
        rotmats[:, 7 + f] = np.swapaxes(glob[:, 4 + f], -1, -2) @ ankle_rot[:, f]
    glob, posed = forward_kinematics(rotmats, J, PARENTS, pelvis)
    rotmats = apply_leg_ik(rotmats, glob, posed, ankle_pos)
    glob, posed = forward_kinematics(rotmats, J, PARENTS, pelvis)
    miss = np.abs(posed[:, [7, 8]] - ankle_pos).max()
    if miss > 1e-6:
        raise ValueError(f"synthetic walk: the legs cannot reach the footprints ({miss:.3g} m); "
                         "lower the speed or the stance fraction")

    # camera: at (0, h, -distance) looking along +z, pitched down, rolled
    tau, rho = np.radians(tilt_deg), np.radians(roll_deg)
    r0, d0, f0 = np.array([-1.0, 0, 0]), -up, np.array([0, 0, 1.0])
    fwd = np.cos(tau) * f0 + np.sin(tau) * d0
    down = np.cos(tau) * d0 - np.sin(tau) * f0
    right = np.cos(rho) * r0 + np.sin(rho) * down
    down = np.cos(rho) * down - np.sin(rho) * r0
    cam_rot = np.stack([right, down, fwd], -1)  # camera -> world (columns)
    cam_pos = np.array([0.0, camera_height, -distance])
    world_to_cam = np.linalg.inv(homogeneous(cam_rot, cam_pos))

    cam_rotmats = rotmats.copy()
    cam_rotmats[:, 0] = cam_rot.T @ rotmats[:, 0]
    root_cam = transform_points(world_to_cam, pelvis)
    _, joints29, _ = posed_skeleton(cam_rotmats, sk, root_cam)

    focal, size = 1000.0, (1920, 1080)
    uv = joints29[..., :2] / joints29[..., 2:3] * focal + np.array(size) / 2.0
    bbox = np.concatenate([uv.min(1), uv.max(1)], -1)
    result = Result(
        frame_index=np.arange(n, dtype=np.int64), time_s=t,
        rotmats=cam_rotmats.astype(np.float32),
        betas=np.tile(betas.astype(np.float32), (n, 1)),
        root_translation=root_cam.astype(np.float32), joints29=joints29.astype(np.float32),
        bbox=bbox.astype(np.float32), confidence=np.full(n, 0.9, np.float32),
        valid=np.ones(n, bool), fps=float(fps), image_size=size,
        focal_length=(focal, focal), principal_point=(size[0] / 2.0, size[1] / 2.0),
        source="synthetic walk", backend="synthetic", model=str(model.source))
    c2w = homogeneous(SMPL_TO_BLENDER) @ homogeneous(cam_rot, cam_pos)
    return SyntheticTake(result=result, contacts=contacts, camera_to_world=c2w,
                         joints29=joints29, skeleton=sk)


def add_noise(result, skeleton, seed=0, rotation_deg=0.6, root_mm=(6.0, 6.0, 12.0),
              betas_sigma=0.15, betas_outliers=0.05, invalid_fraction=0.0):
    """A noisy copy of a result, like a per-frame estimator's output.

    rotation_deg: std of an isotropic random rotation applied to every local
    rotation (per axis, degrees); root_mm: std of the root translation noise
    per camera axis (depth is the least certain); betas: Gaussian noise plus a
    fraction of outlier frames with large shape errors and low confidence.
    invalid_fraction: frames dropped (valid False, placeholders), in short
    runs. joints29 is recomputed from the noisy pose with ``skeleton``.
    """
    rng = np.random.default_rng(seed)
    n = result.num_frames
    noise = axis_angle_to_matrix(rng.normal(0.0, np.radians(rotation_deg), (n, 24, 3)))
    rot = result.rotmats.astype(np.float64) @ noise
    root = result.root_translation + rng.normal(0.0, 1.0, (n, 3)) * np.asarray(root_mm) / 1000.0
    betas = result.betas + rng.normal(0.0, betas_sigma, result.betas.shape)
    conf = np.clip(rng.uniform(0.6, 1.0, n), 0, 1)
    # outliers (occlusion, truncation) are biased one way, not zero-mean
    out = rng.random(n) < betas_outliers
    direction = rng.normal(0.0, 1.0, result.betas.shape[1])
    betas[out] += 2.0 * direction / np.linalg.norm(direction) * np.sqrt(result.betas.shape[1]) \
        + rng.normal(0.0, 0.5, (out.sum(), result.betas.shape[1]))
    conf[out] = rng.uniform(0.2, 0.5, out.sum())
    valid = result.valid.copy()
    if invalid_fraction > 0:
        starts = rng.random(n) < invalid_fraction / 3.0
        drop = starts | np.roll(starts, 1) | np.roll(starts, 2)
        drop[:1] = False
        valid &= ~drop
    _, joints29, _ = posed_skeleton(rot, skeleton, root)
    return Result.from_frames(
        valid=valid, frame_index=result.frame_index, time_s=result.time_s, rotmats=rot,
        betas=betas, root_translation=root, joints29=joints29, bbox=result.bbox,
        confidence=conf, fps=result.fps, image_size=result.image_size,
        focal_length=result.focal_length, principal_point=result.principal_point,
        source=result.source, backend=result.backend, model=result.model)


# --- metrics ------------------------------------------------------------------

def result_joints(result, skeleton):
    """(N, 29, 3) camera-space joints of a result's pose for one skeleton."""
    _, j29, _ = posed_skeleton(result.rotmats.astype(np.float64), skeleton,
                               result.root_translation.astype(np.float64))
    return j29


def result_soles(result, skeleton):
    _, _, soles = posed_skeleton(result.rotmats.astype(np.float64), skeleton,
                                 result.root_translation.astype(np.float64))
    return soles


def mpjpe_mm(pred, gt, mask=None):
    """Mean per-joint position error (mm) over the frames in mask."""
    err = np.linalg.norm(np.asarray(pred) - np.asarray(gt), axis=-1)
    if mask is not None:
        err = err[np.asarray(mask, bool)]
    return float(err.mean() * 1000.0)


def accel_error_mm(pred, gt, mask=None):
    """Mean |second difference of pred - that of gt| (mm/frame^2), over
    frames whose two neighbours are also in mask (as in VIBE, SmoothNet)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    acc_p = pred[2:] - 2 * pred[1:-1] + pred[:-2]
    acc_g = gt[2:] - 2 * gt[1:-1] + gt[:-2]
    err = np.linalg.norm(acc_p - acc_g, axis=-1)
    if mask is not None:
        m = np.asarray(mask, bool)
        err = err[m[2:] & m[1:-1] & m[:-2]]
    return float(err.mean() * 1000.0)


def foot_skating_mm(joints29_world, contacts):
    """Mean horizontal displacement (mm/frame) of the ankle, foot and toe
    joints between consecutive frames where the foot is planted in both.
    joints29_world: Z-up world coordinates."""
    steps = []
    for f in (0, 1):
        both = contacts[1:, f] & contacts[:-1, f]
        p = joints29_world[:, FOOT_JOINTS_29[f], :2]
        d = np.linalg.norm(p[1:] - p[:-1], axis=-1)[both]
        steps.append(d.ravel())
    steps = np.concatenate(steps)
    return float(steps.mean() * 1000.0) if len(steps) else 0.0


def floor_penetration_m(points_world, mask=None):
    """How far (m, >= 0) the lowest point goes below z = 0."""
    z = np.asarray(points_world)[..., 2]
    if mask is not None:
        z = z[np.asarray(mask, bool)]
    return float(max(0.0, -z.min()))
