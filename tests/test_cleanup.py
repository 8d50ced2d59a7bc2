"""Motion clean-up: smoothing, shape, floor, foot locking, root modes, measured
on a synthetic walk with known ground truth (core/motion/synthetic.py)."""
import dataclasses
import os

import numpy as np
import pytest

from hybrik_blender.core.motion import cleanup, filters, footlock, ground, synthetic
from hybrik_blender.core.blender_space import CAMERA_TO_BLENDER, homogeneous
from hybrik_blender.core.body.model import load_body_model
from hybrik_blender.core.rotations import axis_angle_to_matrix, rotation_angle

DATA = os.path.join(os.path.dirname(__file__), "data", "synthetic_smpl_neutral.npz")
ALL_OFF = cleanup.CleanupOptions(smoothing="off", shape="per_frame", foot_locking="off",
                                 root_mode="camera")


@pytest.fixture(scope="module")
def model():
    return load_body_model(DATA)


@pytest.fixture(scope="module")
def take(model):
    return synthetic.walk_cycle(model, num_frames=450, tilt_deg=6.0, roll_deg=1.5)


@pytest.fixture(scope="module")
def noisy(take):
    return synthetic.add_noise(take.result, take.skeleton, seed=3)


def metrics(res, take):
    j = synthetic.result_joints(res, take.skeleton)
    return synthetic.mpjpe_mm(j, take.joints29), synthetic.accel_error_mm(j, take.joints29)


def world_metrics(res, matrix, take, mask=None):
    j = ground.transform_points(matrix, synthetic.result_joints(res, take.skeleton))
    soles = ground.transform_points(matrix, synthetic.result_soles(res, take.skeleton))
    contacts = take.contacts if mask is None else take.contacts & mask[:, None]
    return (synthetic.foot_skating_mm(j, contacts),
            synthetic.floor_penetration_m(soles, mask), synthetic.floor_penetration_m(j, mask))


def test_noise_is_realistic(take, noisy):
    mpjpe, accel = metrics(noisy, take)
    assert 10.0 <= mpjpe <= 25.0
    assert accel > 20.0
    assert metrics(take.result, take)[0] < 1e-3


# --- strength 0 / exactness ------------------------------------------------------

def test_strength_zero_is_bit_identical(noisy, model):
    fps = noisy.fps
    assert filters.smooth_rotations(noisy.rotmats, fps, 0.0) is noisy.rotmats
    assert filters.smooth_translation(noisy.root_translation, fps, 0.0) is noisy.root_translation
    assert filters.one_euro_rotations(noisy.rotmats, fps, 0.0) is noisy.rotmats
    assert filters.one_euro_translation(noisy.root_translation, fps, 0.0) is noisy.root_translation
    opts = dataclasses.replace(ALL_OFF, smoothing="offline", rotation_strength=0.0,
                               translation_strength=0.0)
    for o in (ALL_OFF, opts):
        out, m = cleanup.clean_take(noisy, model, o)
        for key in ("rotmats", "betas", "root_translation", "joints29", "valid"):
            a, b = getattr(out, key), getattr(noisy, key)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), key
        np.testing.assert_array_equal(m, homogeneous(CAMERA_TO_BLENDER))


def test_exact_constant_and_linear_signals_pass_through():
    n = 120
    ramp = np.linspace(-1.0, 2.0, n)[:, None] * np.array([0.3, -1.0, 2.0]) + 0.5
    for method in ("gaussian", "butterworth"):
        out = filters.smooth_translation(ramp, 30.0, 1.5, method=method)
        np.testing.assert_allclose(out, ramp, atol=1e-6)
    rot = np.broadcast_to(axis_angle_to_matrix(np.array([0.3, -2.0, 1.0])), (n, 24, 3, 3))
    out = filters.smooth_rotations(rot, 30.0, 2.0)
    np.testing.assert_allclose(out, rot, atol=1e-9)
    # a steady spin (constant angular velocity) has no acceleration to remove
    spin = axis_angle_to_matrix(np.arange(n)[:, None, None] * np.array([0.0, 0.2, 0.0]))
    out = filters.smooth_rotations(np.broadcast_to(spin, (n, 24, 3, 3)), 30.0, 1.0)
    assert rotation_angle(np.swapaxes(out, -1, -2) @ spin).max() < 1e-3


def test_time_last_kernels_match_the_reference_conversions():
    from hybrik_blender.core.rotations import (make_quaternions_continuous,
                                               matrix_to_quaternion, standardize_quaternion)
    rng = np.random.default_rng(4)
    rot = axis_angle_to_matrix(rng.normal(0, 1.5, (200, 3, 3)))
    rot[0, 0] = np.diag([1.0, -1.0, -1.0])  # 180 degrees: the x branch
    q = filters._cf_from_matrix(np.moveaxis(rot.reshape(200, 3, 9), -1, 0))
    np.testing.assert_allclose(standardize_quaternion(np.moveaxis(q, 0, -1)),
                               standardize_quaternion(matrix_to_quaternion(rot)), atol=1e-12)
    np.testing.assert_allclose(np.moveaxis(filters._cf_to_matrix(q), 0, -1).reshape(rot.shape),
                               rot, atol=1e-12)
    flipped = np.moveaxis(q, 0, -1) * rng.choice([-1.0, 1.0], (200, 3, 1))
    cont = filters._cf_continuous(np.moveaxis(flipped, (0, -1), (-1, 0)))
    np.testing.assert_array_equal(np.moveaxis(cont, (0, -1), (-1, 0)),
                                  make_quaternions_continuous(flipped, axis=0))


# --- smoothing metrics -----------------------------------------------------------

@pytest.mark.parametrize("method", ["gaussian", "butterworth"])
def test_smoothing_cuts_acceleration_error_and_keeps_mpjpe(take, noisy, model, method):
    opts = dataclasses.replace(ALL_OFF, smoothing="offline", method=method)
    out, _ = cleanup.clean_take(noisy, model, opts)
    mpjpe0, accel0 = metrics(noisy, take)
    mpjpe1, accel1 = metrics(out, take)
    assert accel0 / accel1 >= 4.0, (accel0, accel1)
    assert mpjpe1 <= mpjpe0, (mpjpe0, mpjpe1)


def test_full_cleanup_metrics(take, noisy, model):
    out, m = cleanup.clean_take(noisy, model)  # defaults: offline, track, auto, world
    mpjpe0, accel0 = metrics(noisy, take)
    mpjpe1, accel1 = metrics(out, take)
    assert accel0 / accel1 >= 4.0
    assert mpjpe1 <= mpjpe0
    skate0, _, _ = world_metrics(noisy, take.camera_to_world, take)
    skate1, pen_soles, pen_joints = world_metrics(out, m, take)
    assert skate0 > 5.0          # the noisy input does skate
    assert skate1 < 5.0, skate1
    assert pen_soles <= 0.01 and pen_joints <= 0.01


def test_rotations_spinning_many_turns_stay_continuous():
    rng = np.random.default_rng(0)
    n = 600
    # a steady 4.5 rad/s spin about a tilted axis: 14 full turns
    truth = (axis_angle_to_matrix(np.arange(n)[:, None] * np.array([0.0, 0.0, 0.15]))
             @ axis_angle_to_matrix(np.array([0.0, 0.3, 0.0])))[:, None]
    noisy = truth @ axis_angle_to_matrix(rng.normal(0, 0.02, (n, 1, 3)))
    out = filters.smooth_rotations(noisy, 30.0, 2.0)
    err0 = rotation_angle(np.swapaxes(noisy, -1, -2) @ truth)
    err1 = rotation_angle(np.swapaxes(out, -1, -2) @ truth)
    assert err1.mean() < 0.5 * err0.mean()
    assert err1.max() < 0.05  # no flip or wrap anywhere


# --- invalid frames --------------------------------------------------------------

def test_invalid_frames_do_not_pollute(take, model):
    holes = synthetic.add_noise(take.result, take.skeleton, seed=5, invalid_fraction=0.1)
    full = synthetic.add_noise(take.result, take.skeleton, seed=5)
    valid = holes.valid
    assert 0.05 < 1 - valid.mean() < 0.2
    out, m = cleanup.clean_take(holes, model)
    np.testing.assert_array_equal(out.valid, valid)
    for key in ("rotmats", "root_translation", "joints29", "betas"):
        assert getattr(out, key)[~valid].tobytes() == getattr(holes, key)[~valid].tobytes()
    gt = take.joints29
    j_in = synthetic.result_joints(holes, take.skeleton)
    j_out = synthetic.result_joints(out, take.skeleton)
    assert synthetic.mpjpe_mm(j_out, gt, valid) < synthetic.mpjpe_mm(j_in, gt, valid)
    assert (synthetic.accel_error_mm(j_in, gt, valid)
            / synthetic.accel_error_mm(j_out, gt, valid)) >= 4.0
    # frames next to a gap are as good as with no gap at all
    near = valid & ~(np.roll(valid, 1) & np.roll(valid, -1))
    j_full = synthetic.result_joints(cleanup.clean_take(full, model)[0], take.skeleton)
    e_near = synthetic.mpjpe_mm(j_out, gt, near)
    assert e_near < 1.5 * synthetic.mpjpe_mm(j_full, gt, near) + 2.0
    skate, pen, _ = world_metrics(out, m, take, valid)
    assert skate < 5.0 and pen <= 0.01


def test_no_valid_frame_is_returned_unchanged(take, model):
    res = dataclasses.replace(take.result, valid=np.zeros(take.result.num_frames, bool))
    out, m = cleanup.clean_take(res, model)
    assert out.rotmats.tobytes() == res.rotmats.tobytes()
    np.testing.assert_array_equal(m, homogeneous(CAMERA_TO_BLENDER))


# --- One Euro ----------------------------------------------------------------------

def test_one_euro_is_causal_and_smooths(take, noisy, model):
    t = 200
    changed = noisy.rotmats.copy()
    changed[t:] = np.eye(3, dtype=np.float32)
    root = noisy.root_translation.copy()
    root[t:] += 1.0
    a = filters.one_euro_rotations(noisy.rotmats, noisy.fps)
    b = filters.one_euro_rotations(changed, noisy.fps)
    assert a[:t].tobytes() == b[:t].tobytes()
    assert not np.allclose(a[t:], b[t:])
    ta = filters.one_euro_translation(noisy.root_translation, noisy.fps)
    tb = filters.one_euro_translation(root, noisy.fps)
    assert ta[:t].tobytes() == tb[:t].tobytes()
    opts = dataclasses.replace(ALL_OFF, smoothing="one_euro")
    out, _ = cleanup.clean_take(noisy, model, opts)
    assert metrics(noisy, take)[1] / metrics(out, take)[1] >= 2.0


def test_one_euro_streaming_class_matches_batch(noisy):
    f = filters.OneEuroRotationFilter()
    batch = filters.one_euro_rotations(noisy.rotmats[:50], noisy.fps)
    for i in range(50):
        step = f.step(noisy.rotmats[i], noisy.time_s[i])
    np.testing.assert_allclose(step, batch[49], atol=1e-6)


# --- shape --------------------------------------------------------------------------

def test_robust_track_shape(take, model):
    truth = np.linspace(-1.0, 1.0, 10)
    res = dataclasses.replace(take.result, betas=np.tile(truth, (take.result.num_frames, 1))
                              .astype(np.float32))
    res = synthetic.add_noise(res, take.skeleton, seed=9, betas_sigma=0.2, betas_outliers=0.15)
    robust = cleanup.robust_betas(res.betas, res.confidence, res.valid)
    mean = res.betas.mean(0)
    assert np.linalg.norm(robust - truth) < 0.5 * np.linalg.norm(mean - truth)
    assert np.linalg.norm(robust - truth) < 0.1
    out, _ = cleanup.clean_take(res, model, dataclasses.replace(ALL_OFF, shape="track"))
    np.testing.assert_allclose(out.betas, np.tile(robust, (res.num_frames, 1)), atol=1e-6)
    out, _ = cleanup.clean_take(res, model, ALL_OFF)
    assert out.betas.tobytes() == res.betas.tobytes()


# --- floor, contacts, IK -------------------------------------------------------------

def test_floor_estimate_matches_ground_truth(take, noisy):
    smooth = filters.smooth_rotations(noisy.rotmats, noisy.fps)
    root = filters.smooth_translation(noisy.root_translation, noisy.fps)
    _, _, soles = ground.posed_skeleton(smooth.astype(float), take.skeleton, root.astype(float))
    floor = ground.estimate_floor(soles, fps=noisy.fps)
    gt = take.camera_to_world
    assert np.degrees(np.arccos(floor.normal @ gt[2, :3])) < 1.0
    assert abs(floor.offset - gt[2, 3]) < 0.02
    m = floor.camera_to_world()
    np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(m[:3, :3]) > 0
    # an untilted camera gives the default axes, raised by the camera height
    flat = ground.floor_camera_to_world([0.0, -1.0, 0.0], 1.5)
    np.testing.assert_allclose(flat[:3, :3], CAMERA_TO_BLENDER, atol=1e-12)
    np.testing.assert_allclose(flat[:3, 3], [0, 0, 1.5])


def test_contact_detection_agrees_with_ground_truth(take):
    m = take.camera_to_world
    glob, j29, soles = ground.posed_skeleton(take.result.rotmats.astype(float), take.skeleton,
                                             take.result.root_translation.astype(float))
    heights = footlock.foot_heights(ground.transform_points(m, soles))
    speeds = footlock.horizontal_speed(ground.transform_points(m, j29[:, [7, 8]]), take.result.fps)
    found = footlock.detect_contacts(heights, speeds, fps=take.result.fps)
    assert (found == take.contacts).mean() > 0.9
    # extra contacts only where the swinging foot is still (or already) slow,
    # next to a real contact
    idx = np.arange(len(found))
    for f in (0, 1):
        real = np.flatnonzero(take.contacts[:, f])
        extra = idx[found[:, f] & ~take.contacts[:, f]]
        if len(extra):
            assert np.abs(extra[:, None] - real[None]).min(1).max() <= 3


def test_hysteresis_and_pruning():
    h = np.array([0.1, 0.02, 0.05, 0.05, 0.05, 0.07, 0.05, 0.01, 0.01, 0.1, 0.1, 0.02])
    heights = np.stack([h, np.full_like(h, 1.0)], -1)
    speeds = np.zeros_like(heights)
    c = footlock.detect_contacts(heights, speeds, min_contact_frames=1, max_gap_frames=0)
    # starts at 0.02 (< on), holds at 0.05 (< off), breaks at 0.07, restarts at 0.01;
    # then one-frame gaps are closed and one-frame contacts dropped
    np.testing.assert_array_equal(c[:, 0], [0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 1])
    assert not c[:, 1].any()
    c = footlock.detect_contacts(heights, speeds, min_contact_frames=2, max_gap_frames=1)
    np.testing.assert_array_equal(c[:, 0], [0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0])


def test_two_bone_ik_reaches_and_keeps_ankle_orientation(take):
    rng = np.random.default_rng(1)
    res = take.result
    glob, j29, _ = ground.posed_skeleton(res.rotmats.astype(float), take.skeleton,
                                         res.root_translation.astype(float))
    targets = j29[:, [7, 8]] + rng.normal(0, 0.05, (res.num_frames, 2, 3))
    new = footlock.apply_leg_ik(res.rotmats, glob, j29, targets)
    g2, j2, _ = ground.posed_skeleton(new, take.skeleton, res.root_translation.astype(float))
    reach = (np.linalg.norm(j29[:, [1, 2]] - j29[:, [4, 5]], axis=-1)
             + np.linalg.norm(j29[:, [4, 5]] - j29[:, [7, 8]], axis=-1))
    ok = np.linalg.norm(targets - j29[:, [1, 2]], axis=-1) < 0.99 * reach  # hinge knee
    assert ok.mean() > 0.5
    np.testing.assert_allclose(j2[:, [7, 8]][ok], targets[ok], atol=1e-7)
    # out of reach: the leg points straight at the target
    miss = _unit(targets - j29[:, [1, 2]]) - _unit(j2[:, [7, 8]] - j29[:, [1, 2]])
    assert np.abs(miss[~ok]).max() < 1e-2
    # (float32 input rotations are orthonormal to ~1e-7 only)
    np.testing.assert_allclose(g2[:, [7, 8, 10, 11]], glob[:, [7, 8, 10, 11]], atol=1e-6)
    untouched = [j for j in range(24) if j not in (1, 2, 4, 5, 7, 8)]
    np.testing.assert_array_equal(new[:, untouched], res.rotmats[:, untouched].astype(float))
    # knees still flex forwards: (hip - knee) x (ankle - knee) . knee x-axis <= 0
    for hip, knee, ankle in ((1, 4, 7), (2, 5, 8)):
        u, v = j2[:, hip] - j2[:, knee], j2[:, ankle] - j2[:, knee]
        assert (np.einsum("ni,ni->n", np.cross(u, v), g2[:, knee, :, 0]) <= 1e-6).all()


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_locking_blends_without_pops(take, noisy, model):
    out, m = cleanup.clean_take(noisy, model)
    smooth, _ = cleanup.clean_take(noisy, model, dataclasses.replace(
        cleanup.CleanupOptions(), foot_locking="off"))
    a = synthetic.result_joints(out, take.skeleton)
    b = synthetic.result_joints(smooth, take.skeleton)
    # locking adds no acceleration spike: the largest joint acceleration stays
    # that of the unlocked motion (a hard switch, blend_frames=0, does not)
    def max_acc(j):
        return np.linalg.norm(j[2:] - 2 * j[1:-1] + j[:-2], axis=-1).max()
    assert max_acc(a) < 1.1 * max_acc(b)
    hard, _ = cleanup.clean_take(noisy, model, dataclasses.replace(
        cleanup.CleanupOptions(), blend_frames=0))
    assert max_acc(synthetic.result_joints(hard, take.skeleton)) > 1.3 * max_acc(b)


# --- root modes ------------------------------------------------------------------------

def test_root_modes(take, noisy, model):
    base = cleanup.CleanupOptions(foot_locking="grounding")
    cam, m_cam = cleanup.clean_take(noisy, model, dataclasses.replace(base, root_mode="camera"))
    world, m_world = cleanup.clean_take(noisy, model, dataclasses.replace(base, root_mode="world"))
    inplace, m_in = cleanup.clean_take(noisy, model, dataclasses.replace(base, root_mode="in_place"))
    np.testing.assert_array_equal(m_cam, homogeneous(CAMERA_TO_BLENDER))
    np.testing.assert_array_equal(m_world, m_in)
    np.testing.assert_array_equal(cam.rotmats, world.rotmats)
    np.testing.assert_array_equal(cam.root_translation, world.root_translation)
    root_w = ground.transform_points(m_in, inplace.root_translation)
    assert np.abs(root_w[:, :2]).max() < 1e-5
    np.testing.assert_allclose(root_w[:, 2],
                               ground.transform_points(m_world, world.root_translation)[:, 2],
                               atol=1e-5)
    moving = ground.transform_points(m_world, world.root_translation)
    assert np.ptp(moving[:, 0]) > 1.0  # the world take does walk around


def test_options_are_validated():
    with pytest.raises(ValueError):
        cleanup.CleanupOptions(root_mode="sideways").validate()
    with pytest.raises(ValueError):
        cleanup.CleanupOptions(rotation_strength=-1).validate()
