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

Numerics (``swing="official"``, the default): the arithmetic is the
official code's (``hybrik/models/layers/smpl/lbs.py`` at HybrIK 9b8681d),
its small regularising terms included, so the output matches the official
checkpoints' numbers to float rounding, nearly reversed bones too:

* the swing of rest bone ``a`` onto target ``b`` has ``cos = a.b / (|a||b| +
  1e-8)``, ``sin = |a x b| / (|a||b| + 1e-8)`` and the axis ``a x b / (|a x b|
  + 1e-8)``; the twist is ``phi / (|phi| + 1e-8)`` about the unit rest bone;
  the pelvis fit puts det(V U^T) itself, not its sign, into the SVD;
* these terms make the matrices slightly non-orthonormal, by about
  2e-8 / (|a||b|) + 2 (1 - cos) 1e-8 / |a x b|: 1e-4 on the golden HRNet
  run, 1e-2 for a 6 cm bone swung through 179.9 degrees. The official code
  uses them as they are, and so does this one: the chain (G_i = G_parent
  R_i, targets brought into the parent frame with G_parent^T), the FK joints
  and the skinning (posedirs on R - I included) take the unprojected
  matrices. Projecting them there breaks parity: on the test poses with one
  bone swung through 170 degrees (tests/test_ik_reversed.py), by 3.2e-4 in
  rotations when projected inside the chain and by 4.9e-5 m in vertices
  when skinned with projected rotations (bounds: 1e-4, 2e-5 m);
* the rotations handed out are the nearest rotations to those matrices
  (:func:`project_rotations`, the polar factor): :func:`hybrik_ik` returns
  them by default (``project=False``: the matrices), :func:`solve` as
  ``rot_mats`` beside the matrices as ``rot_mats_official``. Projecting moves
  an entry by about half the matrix's |R R^T - I|: 5.5e-5 on the golden
  data (within the 1e-4 bound), 7e-5 for a bone swung through 170 degrees,
  2e-4 at 175, 6e-3 at 179.9, where parity is the matrices' (and the joints'
  and vertices'), not the rotations'. A consumer of the official output
  does the same: the official Blender add-on turns each matrix into a
  quaternion. Takes, and everything downstream, get rotations;
* where the terms stop being small corrections (a distortion estimate above
  :data:`DEGENERATE`: zero-length or (nearly) coincident vectors, exactly or
  nearly exactly reversed bones, an all-zero or vanishing twist) the
  official result is not a rotation at all (an exactly reversed bone gets no
  swing, a zero twist a singular matrix); there the exact swing below is
  used, a documented difference.

With ``swing="exact"`` every rotation is built from unit vectors with an
explicit fallback for zero-length, parallel and anti-parallel vectors and for
an all-zero twist, so the output is always an orthonormal rotation without
NaN (no parity with the official numbers for nearly reversed bones: 3.6e-4
in rotations on one real pose).

Joints are processed one tree level at a time, so a whole level is solved
with a few batched tensor operations.
"""
import numpy as np
import torch

from ...core.body.ik import LEVELS
from ...core.body.skeleton import CHILDREN_29, LEAF_VERTEX_IDS, PARENTS_29

# The IK's child for each joint: the reference forces spine1 for the pelvis
# and the neck for spine3 (the collars are solved relative to it).
_CHILD = CHILDREN_29
_PELVIS_CHILDREN = (3, 1, 2)
FALLBACK_DISTANCE = 0.015   # metres
SWINGS = ("official", "exact")
OFFICIAL_EPS = 1e-8          # the official regularising term
# Above this estimated distortion of the official formula (relative size of
# its regularising terms) the official result is no longer a near-rotation
# and the exact swing / twist is used instead. 1e-2 lies far above what any
# real bone reaches short of an exact reversal (a 6 cm bone swung through
# 179.9 degrees: 3e-3) and far below where the official matrices degenerate.
DEGENERATE = 1e-2


# joints 1..23 grouped by depth in the tree (the numpy solver's grouping)
_LEVELS = [tuple(torch.as_tensor(a) for a in level) for level in LEVELS]
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


def official_twist(axis, phis):
    """The official twist: ``phis / (|phis| + 1e-8)`` about the unit ``axis``.
    A vanishing pair (``1e-8 / |phis|`` above :data:`DEGENERATE`, for which
    the official matrix is far from a rotation, singular for an all-zero one)
    is replaced by its direction first, an all-zero one by (1, 0): no twist,
    exactly as the official code turns (1, 0)."""
    n = phis.norm(dim=-1, keepdim=True)
    vanishing = n * DEGENERATE < OFFICIAL_EPS
    if bool(vanishing.any()):
        eps = _eps(phis.dtype)
        unit = torch.where(n > eps, phis / n.clamp_min(eps),
                           torch.tensor([1.0, 0.0], dtype=phis.dtype, device=phis.device))
        phis = torch.where(vanishing, unit, phis)
        n = phis.norm(dim=-1, keepdim=True)
    cos, sin = (phis / (n + OFFICIAL_EPS)).unbind(-1)
    return _rodrigues(axis, sin, cos)


def official_swing(a, b):
    """The official swing of ``a`` onto ``b`` (..., 3) -> (..., 3, 3), see
    the module docstring; where its distortion estimate exceeds
    :data:`DEGENERATE` it is :func:`swing_rotation`."""
    na = a.norm(dim=-1)
    nb = b.norm(dim=-1)
    v = torch.cross(a, b, dim=-1)
    nv = v.norm(dim=-1)
    dot = (a * b).sum(-1)
    nab = na * nb
    den = nab + OFFICIAL_EPS
    official = _rodrigues(v / (nv + OFFICIAL_EPS)[..., None], nv / den, dot / den)
    # distortion: 1e-8 / (|a||b|) from cos and sin, (1 - cos) 1e-8 / |a x b|
    # from the shortened axis (zero for parallel vectors, where K^2 is unused)
    tiny = torch.finfo(a.dtype).tiny
    one_minus_cos = (1 - dot / nab.clamp_min(tiny)).clamp_min(0)
    distortion = (OFFICIAL_EPS / nab.clamp_min(tiny)
                  + torch.where(one_minus_cos > 0,
                                one_minus_cos * OFFICIAL_EPS / nv.clamp_min(tiny),
                                torch.zeros_like(nv)))
    ok = (distortion <= DEGENERATE) & (nab > 0)
    if bool(ok.all()):
        return official
    return torch.where(ok[..., None, None], official, swing_rotation(a, b))


def _bones(joints):
    """(B, 29, 3) -> vectors from each joint's parent; row 0 keeps the root."""
    out = joints - joints[:, _PARENTS.clamp_min(0)]
    out[:, 0] = joints[:, 0]
    return out


def _twists(rest_bones, phis, swing="exact"):
    axis = _unit(rest_bones[:, torch.as_tensor(_CHILD[1:24])], _eps(phis.dtype))[0]
    twist = official_twist if swing == "official" else twist_rotation
    return twist(axis, phis)                     # (B, 23, 3, 3)


def _check_swing(swing):
    if swing not in SWINGS:
        raise ValueError(f"swing must be one of {SWINGS}, not {swing!r}")


def kabsch(rest_vecs, target_vecs, official=False):
    """Rotation R minimising sum |R r_k - t_k|^2 over (B, K, 3) vector sets,
    without reflections. An all-zero correlation gives the identity.
    ``official``: R = V diag(1, 1, det(V U^T)) U^T with the determinant
    itself (+-1 up to rounding), as the official code has it, not its sign."""
    s = rest_vecs.transpose(1, 2) @ target_vecs      # sum_k r_k t_k^T
    u, _, vh = torch.linalg.svd(s.cpu() if s.device.type != "cpu" else s)
    u, vh = u.to(s.device), vh.to(s.device)
    v = vh.transpose(1, 2)
    d = torch.det(v @ u.transpose(1, 2))
    fix = torch.ones(s.shape[0], 3, dtype=s.dtype, device=s.device)
    fix[:, 2] = d if official else torch.sign(d) + (d == 0).to(d.dtype)
    r = (v * fix[:, None, :]) @ u.transpose(1, 2)
    zero = s.abs().amax((1, 2)) <= _eps(s.dtype) ** 2
    eye = torch.eye(3, dtype=s.dtype, device=s.device).expand_as(r)
    return torch.where(zero[:, None, None] | ~torch.isfinite(r), eye, r)


def hybrik_ik(pose, rest, phis, return_fallback=False, swing="official", project=True):
    """The analytical (inference) solver; see the module docstring.

    ``swing``: "official" (the official arithmetic, regularising terms
    included) or "exact" (exact, always orthonormal swings and twists).
    ``project`` (official only): return the nearest rotations to the official
    matrices (:func:`project_rotations`) instead of the matrices themselves;
    the chain is solved with the matrices either way.
    With ``return_fallback`` also returns (B, 24) bool: where joint i's child
    target was replaced by the predicted bone rescaled to rest length (the
    15 mm rule)."""
    _check_swing(swing)
    official = swing == "official"
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
    glob[:, 0] = local[:, 0] = kabsch(t[:, pc], p[:, pc], official=official)
    placed[:, 0] = rest[:, 0]
    twists = _twists(t, phis, swing)
    swing_fn = official_swing if official else swing_rotation
    fallback = torch.zeros(b, 24, dtype=torch.bool, device=dev)
    for idx, par, child in _LEVELS:
        gp = glob[:, par]                                           # (B, k, 3, 3)
        here = placed[:, par] + (gp @ t[:, idx, :, None])[..., 0]   # FK position of joint
        aim = target[:, child] - here                               # drift-compensated
        pdir, plen = _unit(p[:, child], eps)
        tlen = t[:, child].norm(dim=-1, keepdim=True)
        # the predicted bone at rest length (official: in its order of operations)
        rescaled = (p[:, child] * tlen / plen.clamp_min(eps)[..., None] if official
                    else pdir * tlen)
        far = ((aim - rescaled).norm(dim=-1) > FALLBACK_DISTANCE) & (plen > eps)
        aim = torch.where(far[..., None], rescaled, aim)
        aim_local = (gp.transpose(-1, -2) @ aim[..., None])[..., 0]
        rot = swing_fn(t[:, child], aim_local) @ twists[:, idx - 1]
        local[:, idx] = rot
        glob[:, idx] = gp @ rot
        placed[:, idx] = here
        fallback[:, idx] = far
    if official and project:
        local = project_rotations(local)
    return (local, fallback) if return_fallback else local


def reference_swing(a, b):
    """The reference code's swing with its epsilons: cos and sin divided by
    (|a||b| + 1e-8), the axis by (|a x b| + 1e-8). Used only by the naive solver
    so that HRNet's scale refinement reproduces the official numbers; for
    nearly parallel or short vectors the result is not exactly orthonormal."""
    return _rodrigues(*reference_swing_terms(a, b))


def reference_swing_terms(a, b):
    """(axis, sin, cos) of :func:`reference_swing`, with its epsilons."""
    den = a.norm(dim=-1) * b.norm(dim=-1) + 1e-8
    v = torch.cross(a, b, dim=-1)
    nv = v.norm(dim=-1)
    return v / (nv + 1e-8)[..., None], nv / den, (a * b).sum(-1) / den


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

    It mirrors the official numerics: :func:`reference_swing` of the rest
    bone onto the predicted bone brought into the parent frame (neither
    normalised), the twist ``phi / (|phi| + 1e-8)`` about ``t / (|t| + 1e-8)``,
    so its rotations can be slightly non-orthonormal (more so for degenerate
    skeletons); it only feeds the scale refinement, never the output. It
    never returns NaN for finite input, and an all-zero twist means no twist
    (:func:`official_twist`)."""
    b = pose.shape[0]
    t = _bones(rest)
    p = _bones(pose)
    glob = torch.empty(b, 24, 3, 3, dtype=pose.dtype, device=pose.device)
    local = torch.empty_like(glob)
    glob[:, 0] = local[:, 0] = naive_pelvis(t, p)
    bone = t[:, torch.as_tensor(_CHILD[1:24])]
    twists = official_twist(bone / (bone.norm(dim=-1, keepdim=True) + OFFICIAL_EPS), phis)
    for idx, par, child in _LEVELS:
        gp = glob[:, par]
        aim_local = (gp.transpose(-1, -2) @ p[:, child, :, None])[..., 0]
        rot = reference_swing(t[:, child], aim_local) @ twists[:, idx - 1]
        local[:, idx] = rot
        glob[:, idx] = gp @ rot
    return local


def project_rotations(rot, steps=4):
    """(..., 3, 3) near-rotations -> the nearest rotations (the orthogonal
    polar factor), by Newton-Schulz steps X <- X (3 I - X^T X) / 2: each
    squares the distance from orthonormality, so 4 steps take the official
    solver's matrices (at most ~2e-2 off, see :data:`DEGENERATE`) to float
    rounding. It moves an entry by about the matrix's non-orthonormality."""
    eye3 = 3 * torch.eye(3, dtype=rot.dtype, device=rot.device)
    for _ in range(steps):
        rot = 0.5 * rot @ (eye3 - rot.transpose(-1, -2) @ rot)
    return rot


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


def solve(body, pose, betas, phis, naive=False, vertices=False, swing="official"):
    """IK plus FK (and optionally skinning), the way HybrIK's SMPL layer
    returns them: rotations (B, 24, 3, 3), joints (B, 24, 3) centred on the
    pelvis and, with ``vertices``, vertices and the 17 H36M joints centred on
    the H36M pelvis (``J_regressor_h36m`` row 0) of the posed mesh. ``swing``:
    the analytical solver's numerics (:func:`hybrik_ik`). With the official
    one, FK and skinning use its matrices as they are (as the official layer
    does), returned as ``rot_mats_official``; ``rot_mats`` are their nearest
    rotations (see the module docstring)."""
    rest = body.rest_joints_29(betas).to(pose.dtype)
    phis = phis.to(pose.dtype)
    rot = (naive_ik(pose, rest, phis) if naive else
           hybrik_ik(pose, rest, phis, swing=swing, project=False))
    glob, posed = forward_kinematics(rot, rest[:, :24])
    out = {"rot_mats": rot, "joints": posed - posed[:, :1]}
    if not naive and swing == "official":
        out["rot_mats_official"] = rot
        out["rot_mats"] = project_rotations(rot)
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
