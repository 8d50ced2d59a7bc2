import numpy as np
import pytest

from hybrik_blender.core import rotations as R
from hybrik_blender.core.blender_space import (CAMERA_TO_BLENDER, SMPL_TO_BLENDER, bone_basis,
                                               homogeneous, rigid_inverse)


def test_conversions_round_trip_including_near_pi():
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(500, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, np.pi, 490), np.pi - np.logspace(-9, -3, 10)])
    aa = axes * angles[:, None]
    m = R.axis_angle_to_matrix(aa)
    assert np.abs(m @ np.swapaxes(m, 1, 2) - np.eye(3)).max() < 1e-12
    q = R.matrix_to_quaternion(m)
    assert np.abs(R.quaternion_to_matrix(q) - m).max() < 1e-12
    assert np.abs(R.axis_angle_to_matrix(R.matrix_to_axis_angle(m)) - m).max() < 1e-9
    assert np.allclose(R.rotation_angle(m), angles, atol=1e-7)
    assert np.allclose(R.axis_angle_to_matrix(np.zeros(3)), np.eye(3))


def test_quaternion_continuity_removes_flips_only():
    rng = np.random.default_rng(1)
    t = np.linspace(0, 6, 200)
    q = np.stack([np.cos(t), np.sin(t), 0 * t, 0 * t], -1)  # passes through w = 0
    flipped = q * rng.choice([-1.0, 1.0], size=(200, 1))
    fixed = R.make_quaternions_continuous(flipped[:, None], axis=0)[:, 0]
    assert np.all(np.sum(fixed[1:] * fixed[:-1], -1) > 0)
    assert np.allclose(np.abs(np.sum(fixed * q, -1)), 1)


def test_axis_conventions():
    # SMPL up (+Y) is Blender up (+Z); SMPL front (+Z) faces Blender -Y.
    assert np.allclose(SMPL_TO_BLENDER @ [0, 1, 0], [0, 0, 1])
    assert np.allclose(SMPL_TO_BLENDER @ [0, 0, 1], [0, -1, 0])
    # camera looks down +Y with image-down = -Z
    assert np.allclose(CAMERA_TO_BLENDER @ [0, 0, 1], [0, 1, 0])
    assert np.allclose(CAMERA_TO_BLENDER @ [0, 1, 0], [0, 0, -1])
    for m in (SMPL_TO_BLENDER, CAMERA_TO_BLENDER):
        assert np.isclose(np.linalg.det(m), 1)


def test_bone_basis_reproduces_skinning_for_any_rest_orientation():
    """Chaining Blender's pose evaluation over the basis gives back the
    wanted deform transforms, whatever the bones' rest rotations."""
    rng = np.random.default_rng(2)
    parents = np.array([-1, 0, 1, 1, 3])
    rest = homogeneous(R.axis_angle_to_matrix(rng.normal(0, 2, (5, 3))), rng.normal(0, 1, (5, 3)))
    skin = homogeneous(R.axis_angle_to_matrix(rng.normal(0, 2, (4, 5, 3))),
                       rng.normal(0, 1, (4, 5, 3)))
    basis = bone_basis(rest, skin, parents)
    pose = np.empty_like(skin)
    for i, p in enumerate(parents):
        local = rest[i] if p < 0 else rigid_inverse(rest[p]) @ rest[i]
        pose[:, i] = (local if p < 0 else pose[:, p] @ local) @ basis[:, i]
    assert np.abs(pose @ rigid_inverse(rest) - skin).max() < 1e-12


@pytest.mark.parametrize("per_frame_joints", [False, True])
def test_pose_channels_equal_the_skinning_definition(per_frame_joints):
    """The FK-free pose channels equal bone_basis(blender_skinning(...)) for
    the 55-joint SMPL-X tree, random rest orientations, camera and joints."""
    from hybrik_blender.core.blender_space import blender_skinning, pose_channels
    from hybrik_blender.core.body.skeleton import SMPLX_PARENTS
    rng = np.random.default_rng(4)
    n, j = 6, 55
    rest = homogeneous(R.axis_angle_to_matrix(rng.normal(0, 2, (j, 3))), rng.normal(0, 1, (j, 3)))
    rot = R.axis_angle_to_matrix(rng.normal(0, 1, (n, j, 3)))
    joints = rng.normal(0, 1, (n if per_frame_joints else 1, j, 3))
    root = rng.normal(0, 1, (n, 3))
    cam = homogeneous(R.axis_angle_to_matrix(rng.normal(0, 1, 3)), rng.normal(0, 1, 3))
    basis = bone_basis(rest, blender_skinning(rot, joints, root, SMPLX_PARENTS, cam), SMPLX_PARENTS)
    quats, locs = pose_channels(rest, rot, joints, root, SMPLX_PARENTS, cam)
    assert np.abs(locs - basis[..., :3, 3]).max() < 1e-12
    assert np.abs(R.quaternion_to_matrix(quats) - basis[..., :3, :3]).max() < 1e-12
    with pytest.raises(ValueError, match="rotations and 24 parents"):
        pose_channels(rest, rot, joints, root)
