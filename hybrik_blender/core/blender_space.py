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

SMPL-X bones (:func:`rest_bones_x`) follow the same rule for the 22 body
joints; the wrists aim at the middle-finger knuckle, each finger joint at the
next one and the last at the finger-tip vertex; the jaw aims at the lower lip
(vertex 8947), each eye at its pupil (9448 / 9929). Finger bones (thumbs
included) are rolled with Z towards the back of the hand (world up in the
T-pose, palms down), so that their local X axis is the flexion axis, as in
Rigify and Mixamo hands. The jaw and eyes point forward, so they take Z up.
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
from .body.skeleton import CHILDREN_29, NUM_JOINTS, PARENTS, SMPLX_HAND_SLICE, SMPLX_NUM_JOINTS

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
    return _bones(joints29, CHILDREN_29[:NUM_JOINTS])


# SMPL-X rest points: the 55 joints, then 16 tail points (see
# core.body.model.smplx_tail_vertex_ids): head top, left/right big toe, lower
# lip, left/right pupil, left then right finger tips (index, middle, pinky,
# ring, thumb: SMPL-X's chain order).
SMPLX_TAIL_NAMES = ("head_top", "left_big_toe", "right_big_toe", "lower_lip", "left_pupil",
                    "right_pupil") + tuple(f"{side}_{f}_tip" for side in ("left", "right")
                                           for f in ("index", "middle", "pinky", "ring", "thumb"))
SMPLX_NUM_POINTS = SMPLX_NUM_JOINTS + len(SMPLX_TAIL_NAMES)  # 71


def _smplx_children():
    child = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 56, 57, 15, 16, 17, 55, 18, 19, 20, 21,
             28, 43, 58, 59, 60]
    for side in range(2):
        for finger in range(5):
            first = 25 + 15 * side + 3 * finger
            child += [first + 1, first + 2, 61 + 5 * side + finger]
    return np.array(child, dtype=np.int64)


# Tail point of each SMPL-X bone, an index into the 71 rest points.
SMPLX_CHILDREN = _smplx_children()


def _bones(points, children, finger_bones=()):
    """Heads, tails and roll hints in Blender coordinates for rest points in
    the model frame; bones shorter than 1 cm get a 5 cm tail pointing up."""
    j = np.asarray(points, dtype=np.float64) @ SMPL_TO_BLENDER.T
    heads = j[:len(children)]
    tails = j[children].copy()
    length = np.linalg.norm(tails - heads, axis=1)
    short = length < 0.01
    tails[short] = heads[short] + 0.05 * _UP
    direction = (tails - heads) / np.linalg.norm(tails - heads, axis=1, keepdims=True)
    z_hint = np.where(np.abs(direction @ _FRONT)[:, None] > 0.9, _UP, _FRONT)
    z_hint[list(finger_bones)] = _UP
    return heads, tails, z_hint


def rest_bones_x(points71):
    """Bone heads, tails and roll hints (Blender coordinates) for the 55
    SMPL-X bones; points71: (71, 3) rest joints and tail points, model frame."""
    points71 = np.asarray(points71, dtype=np.float64)
    if points71.shape != (SMPLX_NUM_POINTS, 3):
        raise ValueError(f"SMPL-X rest points have shape {points71.shape}, expected (71, 3)")
    fingers = range(SMPLX_HAND_SLICE.start, SMPLX_HAND_SLICE.stop)
    return _bones(points71, SMPLX_CHILDREN, fingers)


def blender_skinning(rotmats, joints, root_position, parents=PARENTS, camera_to_world=None):
    """SMPL skinning transforms expressed in Blender world coordinates.

    rotmats (N, J, 3, 3): local rotations, joint 0 in the camera frame
    (J = 24 for SMPL, 55 for SMPL-X with the matching parents).
    joints (N|1, J, 3): rest joints for the frame's shape.
    root_position (N, 3): pelvis position in camera coordinates.
    camera_to_world (4, 4) or (N, 4, 4) per frame (a moving camera): pose of
    the capture camera in Blender's world (rigid; OpenCV camera axes).
    Default: at the origin looking down +Y, i.e.
    ``homogeneous(CAMERA_TO_BLENDER)``.
    Returns (N, J, 4, 4) maps from Blender rest-mesh points to world points.
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
    """Pose-bone basis matrices (N, J, 4, 4) that reproduce `skin` exactly.

    rest_matrices: (J, 4, 4) ``bone.matrix_local`` of the armature.
    skin: (N, 24, 4, 4) wanted deform transforms (Blender armature space).
    """
    b = np.asarray(rest_matrices, dtype=np.float64)
    parent_skin = np.concatenate([np.broadcast_to(np.eye(4), skin[:, :1].shape),
                                  skin[:, parents[1:]]], axis=1)
    rel = rigid_inverse(parent_skin) @ skin
    return rigid_inverse(b) @ rel @ b


def pose_channels(rest_matrices, rotmats, joints, root_position, parents=PARENTS,
                  camera_to_world=None):
    """Quaternions (N, J, 4), hemisphere-continuous in time, and locations
    (N, J, 3) for the pose bones.

    Equal to :func:`bone_basis` of :func:`blender_skinning` (the definition),
    computed without the forward kinematics: for a non-root bone the parent's
    skinning transform cancels, ``A_parent^-1 A_i = [R_i, (I - R_i) J_i]``
    with R_i the local rotation and J_i the frame's rest joint, so with
    ``C_i = S B_i = [Rc_i, t_i]`` (S the Blender -> model axes, t_i the
    armature's rest joint in the model frame)::

        Basis_i = [Rc_i^T R_i Rc_i,  Rc_i^T (R_i - I)(t_i - J_i)]

    whose translation is zero whenever the frame's rest joints are the
    armature's. Only the root needs its full transform (camera and root
    position). Every product is a per-(frame, joint) 3x3 one, which keeps
    10,000 frames of 55 joints well under a second.
    """
    b = np.asarray(rest_matrices, dtype=np.float64)
    rot = np.asarray(rotmats, dtype=np.float64)
    nj = b.shape[0]
    if rot.shape[-3] != nj or len(parents) != nj:
        raise ValueError(f"{rot.shape[-3]} rotations and {len(parents)} parents for "
                         f"{nj} bones")
    joints = np.asarray(joints, dtype=np.float64)
    c = homogeneous(SMPL_TO_BLENDER.T) @ b
    rc, tc = c[:, :3, :3], c[:, :3, 3]
    rc_t = np.ascontiguousarray(np.swapaxes(rc, -1, -2))
    basis_rot = rc_t @ rot @ rc
    offset = np.broadcast_to(tc - joints, rot.shape[:-1])[..., None]
    locs = (rc_t @ (rot @ offset - offset))[..., 0]
    if camera_to_world is None:
        camera_to_world = homogeneous(CAMERA_TO_BLENDER)
    j0 = np.broadcast_to(joints[..., 0, :], rot.shape[:1] + (3,))
    a0 = homogeneous(rot[:, 0], np.asarray(root_position, np.float64)
                     - np.einsum("nab,nb->na", rot[:, 0], j0))
    root = rigid_inverse(b[0]) @ (np.asarray(camera_to_world, np.float64) @ a0
                                  @ homogeneous(SMPL_TO_BLENDER.T)) @ b[0]
    basis_rot[:, 0] = root[:, :3, :3]
    locs[:, 0] = root[:, :3, 3]
    quats = make_quaternions_continuous(matrix_to_quaternion(basis_rot), axis=0)
    return quats, locs
