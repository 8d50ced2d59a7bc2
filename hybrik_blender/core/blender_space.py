"""Axis conventions and the exact SMPL -> Blender bone conversion.

Frames
------
* SMPL model frame: +Y up, the body faces +Z, the subject's left is +X.
* Camera frame (HybrIK, OpenCV): x right, y down, z forward; HybrIK's global
  orientation maps the model frame into it.
* Blender world: Z up. The mesh is built in Blender coordinates as
  ``SMPL_TO_BLENDER @ v`` (a +90 degree turn about X: the body stands on Z and
  faces -Y, Blender's front view). The capture camera sits at the origin
  looking down +Y with +Z up, so camera points map by ``CAMERA_TO_BLENDER``
  (a -90 degree turn about X: x -> x, y(down) -> -z, z(forward) -> +y).

Bones
-----
Each bone runs from its joint to its child joint (pelvis -> spine1, spine3 ->
neck, head/hands/feet -> the HybrIK leaf vertices) with its Z axis rolled
towards the body's front, which reads well in the viewport and in engines.
Rotations are not copied verbatim; instead every frame's SMPL skinning
transform A_i (rest point -> posed point, in Blender world) is turned into the
pose-bone channels that make Blender's deform matrix equal A_i exactly.
Blender evaluates, with B_i the bone's rest matrix (``bone.matrix_local``)
and Basis_i its pose channels::

    Pose_i = Pose_parent @ (B_parent^-1 @ B_i) @ Basis_i,   deform_i = Pose_i @ B_i^-1

Setting deform_i = A_i for all bones gives ``Basis_i = B_i^-1 A_parent^-1 A_i B_i``
(A_parent = I for the root). Its rotation is the SMPL local rotation R_i
conjugated by the bone's rest orientation, so any rest orientation is exact;
its translation is zero for every non-root bone as long as the rest skeleton
was built with the same betas as the frame, and otherwise (per-frame betas)
it moves the bone so that the skin is still exact.
"""
import numpy as np

from .body.kinematics import forward_kinematics, skinning_transforms
from .rotations import make_quaternions_continuous, matrix_to_quaternion
from .body.skeleton import CHILDREN_29, NUM_JOINTS, PARENTS

SMPL_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
CAMERA_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

_FRONT = np.array([0.0, -1.0, 0.0])
_UP = np.array([0.0, 0.0, 1.0])


def homogeneous(rot, trans=None):
    """(..., 3, 3) and (..., 3) -> (..., 4, 4)."""
    rot = np.asarray(rot, dtype=np.float64)
    out = np.zeros(rot.shape[:-2] + (4, 4))
    out[..., :3, :3] = rot
    if trans is not None:
        out[..., :3, 3] = trans
    out[..., 3, 3] = 1.0
    return out


def rigid_inverse(m):
    """Inverse of (..., 4, 4) rigid transforms."""
    rt = np.swapaxes(m[..., :3, :3], -1, -2)
    return homogeneous(rt, -np.einsum("...ij,...j->...i", rt, m[..., :3, 3]))


def rest_bones(joints29):
    """Bone heads, tails and roll hints (Blender coordinates) for 24 SMPL bones.

    joints29: (29, 3) rest joints and leaves in the SMPL frame.
    """
    j = np.asarray(joints29, dtype=np.float64) @ SMPL_TO_BLENDER.T
    heads = j[:NUM_JOINTS]
    tails = j[CHILDREN_29[:NUM_JOINTS]]
    vec = tails - heads
    length = np.linalg.norm(vec, axis=1)
    short = length < 0.01
    tails[short] = heads[short] + 0.05 * _UP
    direction = (tails - heads) / np.linalg.norm(tails - heads, axis=1, keepdims=True)
    z_hint = np.where(np.abs(direction @ _FRONT)[:, None] > 0.9, _UP, _FRONT)
    return heads, tails, z_hint


def blender_skinning(rotmats, joints, root_position, parents=PARENTS, camera_to_world=None):
    """SMPL skinning transforms expressed in Blender world coordinates.

    rotmats (N, 24, 3, 3): local rotations, joint 0 in the camera frame.
    joints (N|1, 24, 3): SMPL rest joints for the frame's betas.
    root_position (N, 3): pelvis position in camera coordinates.
    camera_to_world (4, 4) or (N, 4, 4) per frame (a moving camera): pose of
    the capture camera in Blender's world (rigid; OpenCV camera axes).
    Default: at the origin looking down +Y, i.e.
    ``homogeneous(CAMERA_TO_BLENDER)``.
    Returns (N, 24, 4, 4) maps from Blender rest-mesh points to world points.
    """
    glob, posed = forward_kinematics(rotmats, joints, parents, root_position)
    a = skinning_transforms(glob, posed, np.broadcast_to(joints, posed.shape))
    if camera_to_world is None:
        camera_to_world = homogeneous(CAMERA_TO_BLENDER)
    m = np.asarray(camera_to_world, np.float64)
    if m.ndim == 3:
        m = m[:, None]
    return m @ a @ homogeneous(SMPL_TO_BLENDER.T)


def bone_basis(rest_matrices, skin, parents=PARENTS):
    """Pose-bone basis matrices (N, 24, 4, 4) that reproduce `skin` exactly.

    rest_matrices: (24, 4, 4) ``bone.matrix_local`` of the armature.
    skin: (N, 24, 4, 4) wanted deform transforms (Blender armature space).
    """
    b = np.asarray(rest_matrices, dtype=np.float64)
    parent_skin = np.concatenate([np.broadcast_to(np.eye(4), skin[:, :1].shape),
                                  skin[:, parents[1:]]], axis=1)
    rel = rigid_inverse(parent_skin) @ skin
    return rigid_inverse(b) @ rel @ b


def pose_channels(rest_matrices, rotmats, joints, root_position, parents=PARENTS,
                  camera_to_world=None):
    """Quaternions (N, 24, 4), hemisphere-continuous in time, and locations
    (N, 24, 3) for the pose bones."""
    skin = blender_skinning(rotmats, joints, root_position, parents, camera_to_world)
    basis = bone_basis(rest_matrices, skin, parents)
    quats = make_quaternions_continuous(matrix_to_quaternion(basis[..., :3, :3]), axis=0)
    return quats, basis[..., :3, 3]
