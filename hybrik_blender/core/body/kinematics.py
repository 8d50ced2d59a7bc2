"""Forward kinematics and linear blend skinning for SMPL and SMPL-X, batched
over frames.

Same maths as smplx's ``lbs.py`` in numpy: rotations are parent-relative
3x3 matrices (joint 0 = global orientation), joints are SMPL rest joints.
"""
import numpy as np

from .model import model_joints, shaped_vertices
from .skeleton import PARENTS


def forward_kinematics(rotmats, joints, parents=PARENTS, root_position=None):
    """Global rotations and posed joint positions.

    rotmats (..., J, 3, 3) local rotations; joints (..., J, 3) rest joints.
    root_position (..., 3): where the root joint goes (default: its rest
    position). Returns G (..., J, 3, 3) and posed joints (..., J, 3).
    """
    rotmats = np.asarray(rotmats, dtype=np.float64)
    joints = np.broadcast_to(np.asarray(joints, dtype=np.float64),
                             rotmats.shape[:-2] + (3,))
    glob = np.empty_like(rotmats)
    posed = np.empty(rotmats.shape[:-1], dtype=np.float64)
    glob[..., 0, :, :] = rotmats[..., 0, :, :]
    posed[..., 0, :] = joints[..., 0, :] if root_position is None else root_position
    for i in range(1, len(parents)):
        p = parents[i]
        glob[..., i, :, :] = glob[..., p, :, :] @ rotmats[..., i, :, :]
        bone = joints[..., i, :] - joints[..., p, :]
        posed[..., i, :] = posed[..., p, :] + np.einsum("...ij,...j->...i",
                                                        glob[..., p, :, :], bone)
    return glob, posed


def skinning_transforms(glob, posed_joints, rest_joints_):
    """(..., J, 4, 4) transforms taking rest-pose points to posed points:
    x -> G (x - J_rest) + J_posed."""
    out = np.zeros(glob.shape[:-2] + (4, 4))
    out[..., :3, :3] = glob
    out[..., :3, 3] = posed_joints - np.einsum("...ij,...j->...i", glob, rest_joints_)
    out[..., 3, 3] = 1.0
    return out


def pose_corrective_features(rotmats):
    """(..., J, 3, 3) -> (..., 9 (J - 1)): (R_j - I) flattened for joints
    1..J-1, the weights of the pose blend shapes (207 for SMPL, 486 for
    SMPL-X)."""
    r = np.asarray(rotmats, dtype=np.float64)[..., 1:, :, :] - np.eye(3)
    return r.reshape(r.shape[:-3] + (-1,))


def lbs(model, betas, rotmats, root_position=None, pose_correctives=True, expression=None,
        kid=None):
    """Posed vertices and joints (..., V, 3), (..., J, 3) of an SMPL or SMPL-X
    model; rotmats (..., J, 3, 3) with J = model.num_joints (55 for SMPL-X:
    body, jaw, eyes, fingers), expression and kid as for
    :func:`.model.shaped_vertices`.

    With root_position None the pelvis stays at its rest position (smplx with
    transl = 0); otherwise the pelvis joint is placed at root_position.
    """
    rotmats = np.asarray(rotmats, dtype=np.float64)
    if rotmats.shape[-3] != model.num_joints:
        raise ValueError(f"{rotmats.shape[-3]} rotations for a {model.num_joints}-joint model")
    verts = shaped_vertices(model, betas, expression, kid)
    joints = model_joints(model, betas, expression, kid)
    if pose_correctives:
        feat = pose_corrective_features(rotmats)
        verts = verts + np.einsum("vcp,...p->...vc", model.posedirs, feat)
    glob, posed = forward_kinematics(rotmats, joints, model.parents, root_position)
    a = skinning_transforms(glob, posed, np.broadcast_to(joints, posed.shape))
    t = np.einsum("vj,...jab->...vab", model.weights, a)
    out = np.einsum("...vab,...vb->...va", t[..., :3, :3], verts) + t[..., :3, 3]
    return out, posed
