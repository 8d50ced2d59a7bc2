"""HybrIK's hybrid analytical inverse kinematics in torch, batched over frames.

Inputs everywhere: ``pose`` (B, 29, 3) target joints in metres (24 SMPL
joints + 5 leaves, any origin), ``rest`` (B, 29, 3) the shaped rest joints of
the body model (:func:`rest_joints_29`), ``phis`` (B, 23, 2) twist (cos, sin)
per joint 1..23, any scale. Output: (B, 24, 3, 3) local rotations in SMPL
convention (parent-relative, joint 0 = global orientation in the frame of
``pose``).

Two solvers:

* :func:`hybrik_ik` - the inference solver: Kabsch fit of the pelvis, then
  each joint swings its rest bone toward the target child (compensating the
  drift accumulated up the chain, with the 15 mm rescaled-bone fallback) and
  twists about it by the predicted angle;
* :func:`naive_ik` - the simpler solver used by HRNet's scale refinement:
  only the predicted parent->child bone directions, pelvis from the spine and
  the hip midpoint.

Unlike the reference code, every rotation is built from unit vectors with an
explicit fallback for zero-length, parallel and anti-parallel vectors and for
an all-zero twist, so the output is always an orthonormal rotation without NaN.
Joints are processed one tree level at a time, so a whole level is solved
with a few batched tensor operations.
"""
import numpy as np
import torch

from ...core.body.skeleton import CHILDREN_29, LEAF_VERTEX_IDS, PARENTS_29

# The IK's child for each joint: the reference forces spine1 for the pelvis
# and the neck for spine3 (the collars are solved relative to it).
_CHILD = CHILDREN_29
_PELVIS_CHILDREN = (3, 1, 2)
FALLBACK_DISTANCE = 0.015   # metres


def _levels():
    depth = np.zeros(len(PARENTS_29), np.int64)
    for i in range(1, len(PARENTS_29)):
        depth[i] = depth[PARENTS_29[i]] + 1
    out = []
    for d in range(1, depth.max() + 1):
        idx = [i for i in range(1, 24) if depth[i] == d and _CHILD[i] >= 0]
        if idx:
            out.append((torch.tensor(idx), torch.tensor(PARENTS_29[idx]),
                        torch.tensor(_CHILD[idx])))
    return out


_LEVELS = _levels()          # joints 1..23 grouped by depth in the tree
_PARENTS = torch.as_tensor(PARENTS_29)


def _eps(dtype):
    return 1e-12 if dtype == torch.float64 else 1e-7


def skew(v):
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(v.shape + (3,))


def _rodrigues(axis, sin, cos):
    """Rotation about unit ``axis`` (..., 3) by the angle with (sin, cos) (...)."""
    k = skew(axis)
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    return eye + sin[..., None, None] * k + (1 - cos)[..., None, None] * (k @ k)


def _unit(v, eps):
    n = v.norm(dim=-1, keepdim=True)
    return v / n.clamp_min(eps), n[..., 0]


def _perpendicular(u):
    """A unit vector perpendicular to unit ``u`` (deterministic)."""
    # cross with the coordinate axis least aligned with u
    e = torch.zeros_like(u)
    e.scatter_(-1, u.abs().argmin(-1, keepdim=True), 1.0)
    return _unit(torch.cross(u, e, dim=-1), 1e-30)[0]


def swing_rotation(a, b):
    """Minimal rotation taking the direction of ``a`` onto that of ``b``
    (..., 3) -> (..., 3, 3). Zero-length ``b`` gives the identity; anti-parallel
    vectors give a half turn about an axis perpendicular to ``a``."""
    eps = _eps(a.dtype)
    ua, na = _unit(a, eps)
    ub, nb = _unit(b, eps)
    degenerate = (na <= eps) | (nb <= eps)
    v = torch.cross(ua, ub, dim=-1)
    s = v.norm(dim=-1)
    c = (ua * ub).sum(-1)
    s = torch.where(degenerate, torch.zeros_like(s), s)
    c = torch.where(degenerate, torch.ones_like(c), c)
    tiny = s <= 1e-6
    axis = torch.where(tiny[..., None], _perpendicular(ua), v / s.clamp_min(1e-30)[..., None])
    # near-parallel: identity; near-antiparallel: exact half turn
    s = torch.where(tiny, torch.zeros_like(s), s)
    c = torch.where(tiny, torch.sign(c) + (c == 0).to(c.dtype), c)
    return _rodrigues(axis, s, c)


def twist_rotation(axis, phis):
    """Rotation about the unit ``axis`` (..., 3) by the angle whose (cos, sin)
    is ``phis`` (..., 2) after normalisation; an all-zero pair means no twist."""
    eps = _eps(phis.dtype)
    n = phis.norm(dim=-1)
    ok = n > eps
    safe = torch.where(ok[..., None], phis / n.clamp_min(eps)[..., None],
                       torch.tensor([1.0, 0.0], dtype=phis.dtype, device=phis.device))
    return _rodrigues(axis, safe[..., 1], safe[..., 0])


def _bones(joints):
    """(B, 29, 3) -> vectors from each joint's parent; row 0 keeps the root."""
    out = joints - joints[:, _PARENTS.clamp_min(0)]
    out[:, 0] = joints[:, 0]
    return out


def _twists(rest_bones, phis):
    axis = _unit(rest_bones[:, torch.as_tensor(_CHILD[1:24])], _eps(phis.dtype))[0]
    return twist_rotation(axis, phis)           # (B, 23, 3, 3)


def kabsch(rest_vecs, target_vecs):
    """Rotation R minimising sum |R r_k - t_k|^2 over (B, K, 3) vector sets,
    without reflections. An all-zero correlation gives the identity."""
    s = rest_vecs.transpose(1, 2) @ target_vecs      # sum_k r_k t_k^T
    u, _, vh = torch.linalg.svd(s.cpu() if s.device.type != "cpu" else s)
    u, vh = u.to(s.device), vh.to(s.device)
    v = vh.transpose(1, 2)
    d = torch.det(v @ u.transpose(1, 2))
    fix = torch.ones(s.shape[0], 3, dtype=s.dtype, device=s.device)
    fix[:, 2] = torch.sign(d) + (d == 0).to(d.dtype)
    r = (v * fix[:, None, :]) @ u.transpose(1, 2)
    zero = s.abs().amax((1, 2)) <= _eps(s.dtype) ** 2
    eye = torch.eye(3, dtype=s.dtype, device=s.device).expand_as(r)
    return torch.where(zero[:, None, None] | ~torch.isfinite(r), eye, r)


def hybrik_ik(pose, rest, phis, return_fallback=False):
    """The analytical (inference) solver; see the module docstring.

    With ``return_fallback`` also returns (B, 24) bool: where joint i's child
    target was replaced by the predicted bone rescaled to rest length (the
    15 mm rule)."""
    b = pose.shape[0]
    dtype, dev = pose.dtype, pose.device
    t = _bones(rest)                                 # rest bones, t[0] = rest pelvis
    p = _bones(pose)                                 # predicted bones
    target = pose - pose[:, :1] + rest[:, :1]        # predicted joints, pelvis on rest pelvis
    eps = _eps(dtype)
    pc = list(_PELVIS_CHILDREN)
    glob = torch.empty(b, 24, 3, 3, dtype=dtype, device=dev)
    local = torch.empty_like(glob)
    placed = torch.empty(b, 24, 3, dtype=dtype, device=dev)
    glob[:, 0] = local[:, 0] = kabsch(t[:, pc], p[:, pc])
    placed[:, 0] = rest[:, 0]
    twists = _twists(t, phis)
    fallback = torch.zeros(b, 24, dtype=torch.bool, device=dev)
    for idx, par, child in _LEVELS:
        gp = glob[:, par]                                           # (B, k, 3, 3)
        here = placed[:, par] + (gp @ t[:, idx, :, None])[..., 0]   # FK position of joint
        aim = target[:, child] - here                               # drift-compensated
        pdir, plen = _unit(p[:, child], eps)
        rescaled = pdir * t[:, child].norm(dim=-1, keepdim=True)
        far = ((aim - rescaled).norm(dim=-1) > FALLBACK_DISTANCE) & (plen > eps)
        aim = torch.where(far[..., None], rescaled, aim)
        aim_local = (gp.transpose(-1, -2) @ aim[..., None])[..., 0]
        rot = swing_rotation(t[:, child], aim_local) @ twists[:, idx - 1]
        local[:, idx] = rot
        glob[:, idx] = gp @ rot
        placed[:, idx] = here
        fallback[:, idx] = far
    return (local, fallback) if return_fallback else local


def reference_swing(a, b):
    """The reference code's swing with its epsilons: cos and sin divided by
    (|a||b| + 1e-8), the axis by (|a x b| + 1e-8). Used only by the naive solver
    so that HRNet's scale refinement reproduces the official numbers; for
    nearly parallel or short vectors the result is not exactly orthonormal."""
    na = a.norm(dim=-1)
    nb = b.norm(dim=-1)
    v = torch.cross(a, b, dim=-1)
    nv = v.norm(dim=-1)
    den = na * nb + 1e-8
    return _rodrigues(v / (nv + 1e-8)[..., None], nv / den, (a * b).sum(-1) / den)


def naive_pelvis(rest_bones, pose_bones):
    """Pelvis orientation of the naive solver: swing the rest spine onto the
    predicted one, then turn about it so the hip midpoints, projected onto
    the plane perpendicular to the spine, line up."""
    spine_t, spine_p = rest_bones[:, 3], pose_bones[:, 3]
    r_spine = reference_swing(spine_t, spine_p)
    axis = spine_p / (spine_p.norm(dim=-1, keepdim=True) + 1e-8)
    hips_t = (r_spine @ ((rest_bones[:, 1] + rest_bones[:, 2]) / 2)[..., None])[..., 0]
    hips_p = (pose_bones[:, 1] + pose_bones[:, 2]) / 2

    def flat(v):
        return v - (v * axis).sum(-1, keepdim=True) * axis

    return reference_swing(flat(hips_t), flat(hips_p)) @ r_spine


def naive_ik(pose, rest, phis):
    """The naive solver of HRNet's scale refinement; see the module docstring.

    It mirrors the reference numerics (:func:`reference_swing`), so its
    rotations can be slightly non-orthonormal for degenerate skeletons; it
    only feeds the scale refinement, never the output. It never returns NaN
    for finite input, and an all-zero twist means no twist."""
    b = pose.shape[0]
    t = _bones(rest)
    p = _bones(pose)
    glob = torch.empty(b, 24, 3, 3, dtype=pose.dtype, device=pose.device)
    local = torch.empty_like(glob)
    glob[:, 0] = local[:, 0] = naive_pelvis(t, p)
    twists = _twists(t, phis)
    unit_t = t / t.norm(dim=-1, keepdim=True).clamp_min(_eps(pose.dtype))
    unit_p = p / (p.norm(dim=-1, keepdim=True) + 1e-8)
    for idx, par, child in _LEVELS:
        gp = glob[:, par]
        aim_local = (gp.transpose(-1, -2) @ unit_p[:, child, :, None])[..., 0]
        rot = reference_swing(unit_t[:, child], aim_local) @ twists[:, idx - 1]
        local[:, idx] = rot
        glob[:, idx] = gp @ rot
    return local


def forward_kinematics(local, rest24):
    """(B, 24, 3, 3) local rotations, (B, 24, 3) rest joints -> global
    rotations (B, 24, 3, 3) and posed joints (B, 24, 3) with the pelvis left
    at its rest position."""
    t = _bones(rest24 if rest24.shape[1] == 29 else
               torch.cat([rest24, rest24[:, :5]], 1))[:, :24]
    glob = torch.empty_like(local)
    posed = torch.empty_like(rest24[:, :24])
    glob[:, 0] = local[:, 0]
    posed[:, 0] = rest24[:, 0]
    for idx, par, _ in _LEVELS_FK:
        gp = glob[:, par]
        glob[:, idx] = gp @ local[:, idx]
        posed[:, idx] = posed[:, par] + (gp @ t[:, idx, :, None])[..., 0]
    return glob, posed


def _fk_levels():
    depth = np.zeros(24, np.int64)
    for i in range(1, 24):
        depth[i] = depth[PARENTS_29[i]] + 1
    return [(torch.tensor(ix), torch.tensor(PARENTS_29[ix]), None)
            for d in range(1, depth.max() + 1)
            for ix in [[i for i in range(1, 24) if depth[i] == d]]]


_LEVELS_FK = _fk_levels()


class TorchBodyModel:
    """The core :class:`~hybrik_blender.core.body.model.BodyModel` as torch
    tensors for batched rest joints and skinning."""

    def __init__(self, model, dtype=torch.float32, device="cpu"):
        def T(a):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)
        self.dtype, self.device = dtype, device
        self.model = model
        ids = LEAF_VERTEX_IDS
        # rest joints are linear in betas: (29, 3) template + (29, 3, 10) directions
        self.joint_template = T(np.concatenate([model.joint_template, model.v_template[ids]]))
        self.joint_shapedirs = T(np.concatenate([model.joint_shapedirs, model.shapedirs[ids]]))
        self.v_template = T(model.v_template)
        self.shapedirs = T(model.shapedirs.reshape(-1, model.num_betas))      # (V*3, 10)
        self.posedirs = T(model.posedirs.reshape(-1, model.posedirs.shape[-1]).T)  # (207, V*3)
        self.has_posedirs = bool(np.any(model.posedirs))
        self.weights = T(model.weights)
        self.h36m = None if model.J_regressor_h36m is None else T(model.J_regressor_h36m)

    def to(self, dtype=None, device=None):
        return TorchBodyModel(self.model, dtype or self.dtype, device or self.device)

    def rest_joints_29(self, betas):
        """(B, 10) -> (B, 29, 3) shaped rest joints including the leaves."""
        return self.joint_template + torch.einsum("jcb,nb->njc", self.joint_shapedirs,
                                                  betas.to(self.dtype))

    def skin(self, betas, local, glob=None, posed=None, rest24=None):
        """Posed vertices (B, V, 3) with the pelvis at its rest position."""
        betas = betas.to(self.dtype)
        b = betas.shape[0]
        if glob is None:
            rest24 = self.rest_joints_29(betas)[:, :24]
            glob, posed = forward_kinematics(local, rest24)
        verts = self.v_template + (betas @ self.shapedirs.T).reshape(b, -1, 3)
        if self.has_posedirs:
            eye = torch.eye(3, dtype=self.dtype, device=local.device)
            feat = (local[:, 1:] - eye).reshape(b, -1)
            verts = verts + (feat @ self.posedirs).reshape(b, -1, 3)
        trans = posed - (glob @ rest24[..., None])[..., 0]
        a = torch.cat([glob.reshape(b, 24, 9), trans], -1)            # (B, 24, 12)
        t = torch.einsum("vj,bjk->bvk", self.weights, a)
        rot = t[..., :9].reshape(b, -1, 3, 3)
        return (rot @ verts[..., None])[..., 0] + t[..., 9:]


def solve(body, pose, betas, phis, naive=False, vertices=False):
    """IK plus FK (and optionally skinning), the way HybrIK's SMPL layer
    returns them: rotations (B, 24, 3, 3), joints (B, 24, 3) centred on the
    pelvis and, with ``vertices``, vertices and the 17 H36M joints centred on
    the H36M pelvis (``J_regressor_h36m`` row 0) of the posed mesh."""
    rest = body.rest_joints_29(betas).to(pose.dtype)
    rot = (naive_ik if naive else hybrik_ik)(pose, rest, phis.to(pose.dtype))
    glob, posed = forward_kinematics(rot, rest[:, :24])
    out = {"rot_mats": rot, "joints": posed - posed[:, :1]}
    if vertices:
        v = body.skin(betas, rot, glob, posed, rest[:, :24])
        if body.h36m is not None:
            j17 = torch.einsum("jv,bvc->bjc", body.h36m, v)
            centre = j17[:, :1]
            out["joints17"] = j17 - centre
        else:
            centre = posed[:, :1]
        out["vertices"] = v - centre
    return out
