"""Motion clean-up on an SMPL-X take: the body is cleaned as for SMPL (same
22 body joints), the SMPL-X mesh ends up on the floor, fingers, face and the
children's coefficient are smoothed or held, nothing of the take is lost."""
import dataclasses

import numpy as np
import pytest

from hybrik_blender.core import rotations
from hybrik_blender.core.body.kinematics import lbs
from hybrik_blender.core.body.pose import smplx_rotmats
from hybrik_blender.core.motion import cleanup, ground, synthetic


@pytest.fixture(scope="module")
def take(smplx_model):
    return synthetic.walk_cycle(smplx_model, num_frames=240, tilt_deg=6.0, roll_deg=1.5)


def _finger_motion(n, fps, seed):
    """Slow finger curling (ground truth) and a noisy copy of it."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None, None] / fps
    amp = rng.uniform(0.1, 0.6, (1, 30, 1)) * np.array([1.0, 0.2, 0.2])
    aa = amp * np.sin(2 * np.pi * 0.5 * t + rng.uniform(0, 6, (1, 30, 1)))
    clean = rotations.axis_angle_to_matrix(aa)
    noisy = clean @ rotations.axis_angle_to_matrix(rng.normal(0, np.radians(3), (n, 30, 3)))
    return clean, noisy


@pytest.fixture(scope="module")
def noisy_x(take):
    res = synthetic.add_noise(take.result, take.skeleton, seed=3)
    n = res.num_frames
    rng = np.random.default_rng(4)
    clean_hands, hands = _finger_motion(n, res.fps, 5)
    expr = 0.5 + rng.normal(0, 0.3, (n, 10))
    kid = np.clip(0.02 * rng.normal(0, 1, n), 0, None)
    noisy = dataclasses.replace(
        res, body_model="smplx", hand_rotmats=hands.astype(np.float32),
        jaw_rotmat=rotations.axis_angle_to_matrix(
            np.c_[0.2 + rng.normal(0, 0.05, n), np.zeros((n, 2))]).astype(np.float32),
        eye_rotmats=np.tile(np.eye(3, dtype=np.float32), (n, 2, 1, 1)),
        expression=expr.astype(np.float32), kid=kid.astype(np.float32))
    return noisy, clean_hands


def test_smplx_take_is_cleaned_like_smpl_and_stands_on_the_floor(take, noisy_x, smplx_model):
    noisy, clean_hands = noisy_x
    out, world = cleanup.clean_take(noisy, smplx_model)
    sk = take.skeleton
    j0, j1 = (synthetic.result_joints(r, sk) for r in (noisy, out))
    assert synthetic.accel_error_mm(j0, take.joints29) / \
        synthetic.accel_error_mm(j1, take.joints29) >= 4.0
    assert synthetic.mpjpe_mm(j1, take.joints29) <= synthetic.mpjpe_mm(j0, take.joints29)
    skate = synthetic.foot_skating_mm(ground.transform_points(world, j1), take.contacts)
    assert skate < 5.0
    # the floor fit agrees with the ground truth camera height and tilt
    assert abs(world[2, 3] - take.camera_to_world[2, 3]) < 0.03
    up_true = take.camera_to_world[2, :3]
    assert np.degrees(np.arccos(np.clip(world[2, :3] @ up_true, -1, 1))) < 1.5

    # the full SMPL-X mesh (fingers, face, kid shape, correctives) on the floor
    stance = np.nonzero(take.contacts.any(1))[0][::12]
    rot = smplx_rotmats(out, rows=stance)
    verts, _ = lbs(smplx_model, out.betas[stance], rot, out.root_translation[stance],
                   expression=out.expression[stance], kid=out.kid[stance])
    z = ground.transform_points(world, verts)[..., 2].min(axis=1)
    assert z.min() > -0.012 and z.max() < 0.03, z

    # one shape per take: betas and the children's coefficient held constant
    assert np.ptp(out.betas, axis=0).max() == 0 and np.ptp(out.kid) == 0
    assert 0 <= out.kid[0] < 0.02
    # fingers smoothed towards the truth, face fields kept and smoothed
    err = lambda r: np.degrees(rotations.rotation_angle(  # noqa: E731
        np.swapaxes(r, -1, -2) @ clean_hands)).mean()
    assert err(out.hand_rotmats) < 0.6 * err(noisy.hand_rotmats)
    assert np.std(np.diff(out.expression, axis=0)) < 0.3 * np.std(np.diff(noisy.expression, axis=0))
    assert out.jaw_rotmat.shape == noisy.jaw_rotmat.shape and out.body_model == "smplx"


def test_strength_zero_and_off_leave_smplx_fields_untouched(noisy_x, smplx_model):
    noisy, _ = noisy_x
    for opts in (cleanup.CleanupOptions(rotation_strength=0.0, shape="per_frame"),
                 cleanup.CleanupOptions(smoothing="off", shape="per_frame")):
        out, _ = cleanup.clean_take(noisy, smplx_model, opts)
        for key in ("hand_rotmats", "jaw_rotmat", "eye_rotmats", "expression", "kid"):
            assert np.array_equal(getattr(out, key), getattr(noisy, key)), key


def test_one_euro_smooths_fingers_causally(noisy_x, smplx_model):
    noisy, _ = noisy_x
    opts = cleanup.CleanupOptions(smoothing="one_euro", foot_locking="off", root_mode="camera")
    out, _ = cleanup.clean_take(noisy, smplx_model, opts)
    cut = 100
    head, _ = cleanup.clean_take(dataclasses.replace(
        noisy, **{k: getattr(noisy, k)[:cut] for k in (
            "frame_index", "time_s", "rotmats", "betas", "root_translation", "joints29", "bbox",
            "confidence", "valid", "hand_rotmats", "jaw_rotmat", "eye_rotmats", "expression",
            "kid")}), smplx_model, opts)
    assert np.abs(out.hand_rotmats[:cut] - head.hand_rotmats).max() < 1e-6
    d0 = np.abs(np.diff(noisy.hand_rotmats, axis=0)).mean()
    assert np.abs(np.diff(out.hand_rotmats, axis=0)).mean() < 0.6 * d0

