"""HybrIK-X's hybrid analytical inverse kinematics for SMPL-X, batched.

Inputs: ``pose`` (B, 71, 3) target points in metres (the 55 SMPL-X joints
and the 16 leaves of :data:`LEAF_PARENTS`, any origin), ``rest`` (B, 71, 3)
the same points on the shaped rest mesh (joint regressor and leaf vertices
of ``v_shaped``), ``phis`` (B, 54, 2) twist (cos, sin) of joints 1..54, any
scale. Output: (B, 55, 3, 3) local rotations (parent-relative; joint 0 is
the global orientation in the frame of ``pose``).

The arithmetic is the official one (``hybrik/models/layers/smplx/lbs.py``,
HybrIK commit 9b8681d, in eval mode), small regularising terms included, so
the result matches it to float rounding:

* the twists are normalised as ``phi / (|phi| + 1e-8)``;
* the pelvis and the joints with several children (spine3, head, both
  wrists) are fitted by SVD to all their children: spine3 to the neck and
  both collars, the head to the mouth top and both eyes (not the jaw), each
  wrist to its five finger bases; R = V diag(1, 1, det(V U^T)) U^T with the
  determinant itself, not its sign, in the last entry; their twists are
  ignored;
* every other joint swings its rest bone onto the target bone, with
  ``|a||b| + 1e-8`` under the sine and cosine and ``|a x b| + 1e-8`` under the
  axis, then twists about the unit rest bone by its phi;
* in the analytical solver (``naive=False``, the inference one) the knees
  and elbows (4, 5, 18, 19) aim at the predicted absolute child position
  from where the chain has put them (drift compensation); all other joints
  use the predicted parent-to-child vector;
* the jaw (analytical only) ignores its twist: its angle is the unsigned
  angle between the head-to-mouth-top and jaw-to-mouth-bottom vectors, minus
  the same angle of the rest pose, about the rest-pose axis of those two
  vectors (taken with the mouth top moved to the mouth bottom's x);
  that opening is then reduced by ``10 / 180 * 3.14`` rad (the official
  constant, 9.9954 deg) and clamped at zero.

Joints are processed one tree level at a time, so all joints of a level are
solved with a few batched tensor operations. One documented difference: a
jaw rotation that is exactly the identity gives the identity here, where the
official code divides 0 by 0 (NaN).
"""
import numpy as np
import torch

from ...core.body.skeleton import SMPLX_PARENTS
from .ik import _rodrigues, reference_swing_terms

NUM_JOINTS = 55
NUM_POINTS = 71
# parents of the 16 leaves: big toes, mouth bottom, pupils, left finger tips
# (index, middle, pinky, ring, thumb), right finger tips, mouth top
LEAF_PARENTS = np.array([10, 11, 22, 23, 24, 27, 30, 33, 36, 39, 42, 45, 48, 51, 54, 15],
                        dtype=np.int64)
PARENTS71 = np.concatenate([SMPLX_PARENTS, LEAF_PARENTS])
MOUTH_BOTTOM, MOUTH_TOP, JAW, HEAD = 57, 70, 22, 15
JAW_DEAD_ZONE = 10 / 180 * 3.14      # radians, as the official code writes it
DRIFT_JOINTS = (4, 5, 18, 19)
# the SVD joints' children, the official representative child first
SVD_CHILDREN = {9: (12, 13, 14), 15: (70, 23, 24), 20: (25, 28, 31, 34, 37),
                21: (40, 43, 46, 49, 52)}
PELVIS_CHILDREN = (1, 2, 3)


def children_map(parents=PARENTS71):
    """HybrIK's children table: the only child, -1 for a leaf, -n for n children."""
    out = np.full(len(parents), -1, np.int64)
    for i in range(1, len(parents)):
        p = parents[i]
        if out[p] == -1:
            out[p] = i
        elif out[p] >= 0:
            out[p] = -2
        else:
            out[p] -= 1
    return out


CHILDREN71 = children_map()


def _levels():
    depth = np.zeros(NUM_POINTS, np.int64)
    for i in range(1, NUM_POINTS):
        depth[i] = depth[PARENTS71[i]] + 1
    levels = []
    for d in range(1, depth[:NUM_JOINTS].max() + 1):
        joints = [i for i in range(1, NUM_JOINTS) if depth[i] == d]
        single = [i for i in joints if CHILDREN71[i] >= 0]
        levels.append({
            "single": torch.tensor(single),
            "single_parent": torch.tensor(PARENTS71[single]),
            "single_child": torch.tensor(CHILDREN71[single]),
            "drift": torch.tensor([i in DRIFT_JOINTS for i in single]),
            "jaw_pos": single.index(JAW) if JAW in single else None,
            "svd": [(i, int(PARENTS71[i]), SVD_CHILDREN[i]) for i in joints
                    if CHILDREN71[i] < -1],
            "all": torch.tensor(joints), "all_parent": torch.tensor(PARENTS71[joints]),
        })
    return levels


_LEVELS = _levels()
_PARENTS = torch.as_tensor(PARENTS71)


def _kabsch(rest, target):
    """rest, target (B, K, 3) -> R (B, 3, 3): the official SVD fit
    S = sum_k rest_k target_k^T = U diag V^T, R = V diag(1, 1, det(V U^T)) U^T.
    The SVD runs on the CPU, like the official code's."""
    s = rest.transpose(1, 2) @ target
    dev = s.device
    u, _, vh = torch.linalg.svd(s.cpu() if dev.type != "cpu" else s)
    u, v = u.to(dev), vh.transpose(1, 2).to(dev)
    d = torch.det(v @ u.transpose(1, 2))
    fix = torch.ones(s.shape[0], 3, dtype=s.dtype, device=dev)
    fix[:, 2] = d
    return (v * fix[:, None, :]) @ u.transpose(1, 2)


def _pelvis(rest, target):
    """The pelvis fit; an all-zero correlation (sum of S == 0) gives the identity."""
    s_sum = (rest.transpose(1, 2) @ target).sum((1, 2))
    rot = _kabsch(rest, target)
    eye = torch.eye(3, dtype=rot.dtype, device=rot.device).expand_as(rot)
    return torch.where((s_sum != 0)[:, None, None], rot, eye)


# --- rotation conversions of the jaw (the pytorch3d 0.7.6 ones the official
# code calls): matrix -> quaternion with the best-conditioned of the four
# candidates and a non-negative real part, quaternion -> axis-angle via atan2.

def _matrix_to_quaternion(m):
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.reshape(m.shape[:-2] + (9,)).unbind(-1)
    q_abs = torch.stack([1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22,
                         1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], -1)
    q_abs = torch.where(q_abs > 0, torch.sqrt(q_abs.clamp_min(0)), torch.zeros_like(q_abs))
    cand = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], -1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], -1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], -1)], -2)
    cand = cand / (2.0 * q_abs[..., None].clamp_min(0.1))
    best = q_abs.argmax(-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(best.shape + (1, 4)))[..., 0, :]
    return torch.where(q[..., :1] < 0, -q, q)


def _sin_half_over_angle(angles, half):
    small = angles.abs() < 1e-6
    safe = torch.where(small, torch.ones_like(angles), angles)
    return torch.where(small, 0.5 - angles * angles / 48, torch.sin(half) / safe)


def _quaternion_to_axis_angle(q):
    half = torch.atan2(q[..., 1:].norm(dim=-1, keepdim=True), q[..., :1])
    angles = 2 * half
    return q[..., 1:] / _sin_half_over_angle(angles, half)


def _axis_angle_to_matrix(aa):
    angles = aa.norm(dim=-1, keepdim=True)
    half = angles * 0.5
    q = torch.cat([torch.cos(half), aa * _sin_half_over_angle(angles, half)], -1)
    r, i, j, k = q.unbind(-1)
    two_s = 2.0 / (q * q).sum(-1)
    o = torch.stack([1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
                     two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
                     two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j)],
                    -1)
    return o.reshape(q.shape[:-1] + (3, 3))


def _jaw(head_glob, rel_rest, rel_pose):
    """The analytical jaw rotation (B, 3, 3); see the module docstring."""
    ght = head_glob.transpose(1, 2)
    bottom = (ght @ rel_pose[:, MOUTH_BOTTOM, :, None])[..., 0]
    top = (ght @ rel_pose[:, MOUTH_TOP, :, None])[..., 0]
    _, sin1, cos1 = reference_swing_terms(top, bottom)
    rest_bottom = rel_rest[:, MOUTH_BOTTOM]
    rest_top = torch.cat([rest_bottom[:, :1], rel_rest[:, MOUTH_TOP, 1:]], -1)
    axis2, sin2, cos2 = reference_swing_terms(rest_top, rest_bottom)
    rot = _rodrigues(axis2, sin1, cos1) @ _rodrigues(axis2, sin2, cos2).transpose(1, 2)
    aa = _quaternion_to_axis_angle(_matrix_to_quaternion(rot))
    angle = aa.norm(dim=-1, keepdim=True)
    axis = aa / torch.where(angle > 0, angle, torch.ones_like(angle))
    opened = (angle - JAW_DEAD_ZONE).clamp_min(0)
    return _axis_angle_to_matrix(axis * opened)


def _relative(points, root):
    out = points - points[:, _PARENTS.to(points.device)]
    out[:, 0] = root
    return out


def solve(pose, rest, phis, naive=False):
    """HybrIK-X's IK: (B, 71, 3) targets, (B, 71, 3) rest points, (B, 54, 2)
    twists -> (B, 55, 3, 3) local rotations. ``naive`` is the solver of the
    camera-scale refinement (no drift compensation, no special jaw)."""
    b = pose.shape[0]
    dtype, dev = pose.dtype, pose.device
    rel_rest = _relative(rest, rest[:, 0])
    rel_pose = _relative(pose, rel_rest[:, 0])
    final = pose - pose[:, :1] + rel_rest[:, :1]
    phis = phis / (phis.norm(dim=-1, keepdim=True) + 1e-8)

    glob = torch.empty(b, NUM_JOINTS, 3, 3, dtype=dtype, device=dev)
    local = torch.empty_like(glob)
    placed = torch.empty(b, NUM_JOINTS, 3, dtype=dtype, device=dev)
    pc = list(PELVIS_CHILDREN)
    glob[:, 0] = local[:, 0] = _pelvis(rel_rest[:, pc], rel_pose[:, pc])
    placed[:, 0] = rel_rest[:, 0]
    for lv in _LEVELS:
        idx, par = lv["all"].to(dev), lv["all_parent"].to(dev)
        placed[:, idx] = placed[:, par] + (glob[:, par] @ rel_rest[:, idx, :, None])[..., 0]
        if len(lv["single"]):
            i, p, c = (lv[k].to(dev) for k in ("single", "single_parent", "single_child"))
            gpt = glob[:, p].transpose(-1, -2)
            aim = rel_pose[:, c]
            if not naive and bool(lv["drift"].any()):
                aim = torch.where(lv["drift"].to(dev)[None, :, None],
                                  final[:, c] - placed[:, i], aim)
            aim = (gpt @ aim[..., None])[..., 0]
            bone = rel_rest[:, c]
            rot = _rodrigues(*reference_swing_terms(bone, aim))
            spin = bone / bone.norm(dim=-1, keepdim=True)
            rot = rot @ _rodrigues(spin, phis[:, i - 1, 1], phis[:, i - 1, 0])
            if not naive and lv["jaw_pos"] is not None:
                rot[:, lv["jaw_pos"]] = _jaw(glob[:, HEAD], rel_rest, rel_pose)
            local[:, i] = rot
            glob[:, i] = glob[:, p] @ rot
        for j, p, kids in lv["svd"]:
            k = list(kids)
            gpt = glob[:, p].transpose(-1, -2)
            target = (gpt[:, None] @ rel_pose[:, k, :, None])[..., 0]
            rot = _kabsch(rel_rest[:, k], target)
            local[:, j] = rot
            glob[:, j] = glob[:, p] @ rot
    return local
