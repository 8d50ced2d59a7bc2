"""IK round trip (pose -> FK -> joints + twists -> IK -> pose) and
degenerate inputs."""
import numpy as np
import pytest
import torch

from hybrik_blender.core import rotations
from hybrik_blender.core.body.model import rest_joints_29
from hybrik_blender.core.body.kinematics import forward_kinematics
from hybrik_blender.core.body.skeleton import CHILDREN_29, PARENTS_29
from hybrik_blender.worker.hybrik import ik


def random_poses(n, seed):
    rng = np.random.default_rng(seed)
    aa = rng.normal(0, 0.35, (n, 24, 3))
    norm = np.linalg.norm(aa, axis=-1, keepdims=True)
    aa = np.where(norm > 1.4, aa / norm * 1.4, aa)
    rot = rotations.axis_angle_to_matrix(aa)
    upright = rotations.axis_angle_to_matrix(np.array([np.pi, 0, 0]))
    yaw = rotations.axis_angle_to_matrix(
        np.stack([np.zeros(n), rng.uniform(-np.pi, np.pi, n), np.zeros(n)], -1))
    rot[:, 0] = upright @ yaw @ rot[:, 0]
    betas = rng.normal(0, 1, (n, 10))
    return rot, betas


def joints_and_twists(model, rot, betas):
    """FK joints (root-relative, 29) and the true twist (cos, sin) of each
    joint about its rest bone, HybrIK's convention rot = swing @ twist."""
    n = len(rot)
    rest = rest_joints_29(model, betas)
    rot29 = np.concatenate([rot, np.broadcast_to(np.eye(3), (n, 5, 3, 3))], 1)
    _, posed = forward_kinematics(rot29, rest, PARENTS_29)
    posed = posed - posed[:, :1]
    bone = rest[:, CHILDREN_29[1:24]] - rest[:, 1:24]
    axis = bone / np.linalg.norm(bone, axis=-1, keepdims=True)
    q = rotations.matrix_to_quaternion(rot[:, 1:24])
    angle = 2 * np.arctan2((q[..., 1:] * axis).sum(-1), q[..., 0])
    phis = np.stack([np.cos(angle), np.sin(angle)], -1)
    return posed, phis


def geodesic(a, b):
    d = np.linalg.norm(np.asarray(a, np.float64) - b, axis=(-2, -1))
    return 2 * np.arcsin(np.clip(d / (2 * np.sqrt(2)), 0, 1))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-4), (torch.float32, 1e-3)])
def test_round_trip(body_model, dtype, tol):
    rot, betas = random_poses(256, seed=11)
    posed, phis = joints_and_twists(body_model, rot, betas)
    tb = ik.TorchBodyModel(body_model, dtype)
    out = ik.solve(tb, torch.tensor(posed, dtype=dtype), torch.tensor(betas, dtype=dtype),
                   torch.tensor(phis, dtype=dtype))
    err = geodesic(out["rot_mats"].numpy(), rot)
    assert err.max() < tol, err.max()
    # un-normalised twists give the same answer
    scaled = phis * np.random.default_rng(2).uniform(0.3, 3, phis.shape[:-1] + (1,))
    out2 = ik.solve(tb, torch.tensor(posed, dtype=dtype), torch.tensor(betas, dtype=dtype),
                    torch.tensor(scaled, dtype=dtype))
    assert geodesic(out2["rot_mats"].numpy(), rot).max() < tol


def test_naive_round_trip(body_model):
    rot, betas = random_poses(64, seed=5)
    posed, phis = joints_and_twists(body_model, rot, betas)
    tb = ik.TorchBodyModel(body_model, torch.float64)
    rest = tb.rest_joints_29(torch.tensor(betas))
    out = ik.naive_ik(torch.tensor(posed), rest, torch.tensor(phis)).numpy()
    assert np.median(geodesic(out, rot)) < 1e-4


def _check_rotations(rot, tol=1e-5):
    r = rot.double().numpy()
    assert np.isfinite(r).all()
    assert np.abs(r @ np.swapaxes(r, -1, -2) - np.eye(3)).max() < tol
    assert np.abs(np.linalg.det(r) - 1).max() < tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_degenerate_inputs(body_model, dtype):
    tb = ik.TorchBodyModel(body_model, dtype)
    rng = np.random.default_rng(3)
    betas = torch.zeros(6, 10, dtype=dtype)
    rest = tb.rest_joints_29(betas)
    pose = torch.zeros(6, 29, 3, dtype=dtype)
    pose[1] = rest[1]                                       # rest pose
    pose[2] = torch.tensor(rng.normal(0, 1e-9, (29, 3)))    # nearly coincident joints
    pose[3] = rest[3]
    pose[3, 12:] = rest[3, 12:] + (rest[3, 9] - rest[3, 12]) * 2   # upper body folded down
    pose[4] = torch.tensor(rng.normal(0, 1, (29, 3)))       # random garbage
    pose[5] = rest[5] * 1e6                                 # huge
    # anti-parallel left arm: the elbow exactly opposite its rest direction
    pose[1, 18] = rest[1, 16] - (rest[1, 18] - rest[1, 16])
    pose[1, [20, 22, 25]] = pose[1, 18].clone()
    phis_zero = torch.zeros(6, 23, 2, dtype=dtype)
    phis_id = torch.zeros(6, 23, 2, dtype=dtype)
    phis_id[..., 0] = 1
    for solver in (ik.hybrik_ik, ik.naive_ik):
        rot = solver(pose, rest, phis_zero)
        assert torch.isfinite(rot).all()
        # an all-zero twist means no twist
        torch.testing.assert_close(rot, solver(pose, rest, phis_id))
    _check_rotations(ik.hybrik_ik(pose, rest, phis_zero), 1e-5 if dtype == torch.float64 else 1e-5)
    # the anti-parallel bone is still aimed correctly
    rot = ik.hybrik_ik(pose, rest, phis_id)
    glob, _ = ik.forward_kinematics(rot, rest[:, :24])
    bone = (glob[1, 16] @ (rest[1, 18] - rest[1, 16]))
    want = pose[1, 18] - pose[1, 16]
    # float32: the shoulder's FK position drifts by ~1e-5 m from its target
    tol = 1e-9 if dtype == torch.float64 else 3e-4
    assert torch.allclose(bone / bone.norm(), want / want.norm(), atol=tol)


def test_swing_rotation_edge_cases():
    a = torch.tensor([[0.0, 1, 0], [0, 1, 0], [0, 1, 0], [1, 2, 3], [0, 0, 0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 2, 0], [0, -3, 0], [0, 0, 0], [-1, -2, -3 + 1e-13], [1, 0, 0]],
                     dtype=torch.float64)
    r = ik.swing_rotation(a, b)
    _check_rotations(r, 1e-12)
    torch.testing.assert_close(r[0], torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(r[1] @ a[1], -a[1])
    torch.testing.assert_close(r[2], torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(r[3] @ a[3], -a[3], atol=1e-9, rtol=0)


def _degenerate_poses(rest):
    """Rest (6, 29, 3) -> targets: rest pose with an anti-parallel left arm,
    nearly coincident joints, a folded upper body, garbage, huge."""
    rng = np.random.default_rng(3)
    pose = np.zeros((6, 29, 3))
    pose[1] = rest[1]
    pose[1, 18] = rest[1, 16] - (rest[1, 18] - rest[1, 16])
    pose[1, [20, 22, 25]] = pose[1, 18]
    pose[2] = rng.normal(0, 1e-9, (29, 3))
    pose[3] = rest[3]
    pose[3, 12:] = rest[3, 12:] + (rest[3, 9] - rest[3, 12]) * 2
    pose[4] = rng.normal(0, 1, (29, 3))
    pose[5] = rest[5] * 1e6
    return pose


def test_numpy_exact_ik_is_the_torch_solver(body_model):
    """core.body.ik.exact_ik (the mediapipe backend's, no torch) against
    ik.hybrik_ik(swing="exact"): random poses, un-normalised twists,
    degenerate targets, all-zero twists."""
    from hybrik_blender.core.body import ik as np_ik
    rot, betas = random_poses(256, seed=11)
    posed, phis = joints_and_twists(body_model, rot, betas)
    phis = phis * np.random.default_rng(2).uniform(0.3, 3, phis.shape[:-1] + (1,))
    rest = rest_joints_29(body_model, betas)
    want = ik.hybrik_ik(torch.tensor(posed), torch.tensor(rest), torch.tensor(phis),
                        swing="exact").numpy()
    got = np_ik.exact_ik(posed, rest, phis)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert geodesic(got, rot).max() < 1e-4
    rest6 = np.broadcast_to(rest_joints_29(body_model, np.zeros(10)), (6, 29, 3))
    pose = _degenerate_poses(rest6)
    for tw in (np.zeros((6, 23, 2)), np.random.default_rng(4).normal(0, 1, (6, 23, 2))):
        want = ik.hybrik_ik(torch.tensor(pose), torch.tensor(np.array(rest6)), torch.tensor(tw),
                            swing="exact").numpy()
        got = np_ik.exact_ik(pose, rest6[:1], tw)      # one rest skeleton for all frames
        assert np.isfinite(got).all()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
        assert np.abs(got @ np.swapaxes(got, -1, -2) - np.eye(3)).max() < 1e-9


def test_numpy_swing_rotation_edge_cases():
    from hybrik_blender.core.body import ik as np_ik
    a = np.array([[0.0, 1, 0], [0, 1, 0], [0, 1, 0], [1, 2, 3], [0, 0, 0]])
    b = np.array([[0.0, 2, 0], [0, -3, 0], [0, 0, 0], [-1, -2, -3 + 1e-13], [1, 0, 0]])
    r = np_ik.swing_rotation(a, b)
    np.testing.assert_allclose(r, ik.swing_rotation(torch.tensor(a), torch.tensor(b)).numpy(),
                               rtol=0, atol=1e-15)
    np.testing.assert_allclose(r[1] @ a[1], -a[1], atol=1e-15)
    np.testing.assert_allclose(r[3] @ a[3], -a[3], atol=1e-9)
