"""Fit the captured character to the 2D evidence, batched over frames.

The backends estimate 3D joints that do not quite reproject onto the person:
mediapipe's metric world landmarks are not consistent with its image
landmarks, HybrIK's camera has its own focal length per crop, and the
character's fixed bone lengths cannot follow every landmark. The refinement
minimises, per frame, the reprojection error of the visible joints through
the real capture camera, measured in units of ``sigma_box`` x the person box
height and weighted by the evidence confidence (:func:`evidence_weight`),
with a Huber cut at ``huber`` sigmas against wrong landmarks:

1. **root translation** (x, y and depth, which sets the image scale of the
   skeleton), Gauss-Newton, with a weak prior that keeps the depth where
   there is too little evidence to fix it (sigma ``depth_prior`` x depth);
2. **shape**, where a body model is given: one set of betas for the clip
   (the joints are linear in the betas for given rotations), jointly with
   every frame's translation (the frames are eliminated by their Schur
   complement, so the system stays 10 x 10), prior sigma ``beta_prior``
   around the backend's betas;
3. **pose**: small corrections of the local rotations of every joint that
   has visible evidence below it in the tree, jointly with the translation,
   Levenberg-Marquardt per frame, with a prior of sigma ``rotation_prior_deg``
   on the total change of each joint, so joints without evidence keep their
   rotation and the 3D pose changes only as much as the picture demands.

Joints are differentiated in closed form: turning joint j by a small local
rotation vector d moves a descendant k by ``(G_j d) x (p_k - p_j)``.
"""
import dataclasses

import numpy as np

from ..body.model import rest_joints_29
from ..body.skeleton import LEAF_VERTEX_IDS, PARENTS_29
from ..rotations import axis_angle_to_matrix, matrix_to_axis_angle
from .metric import fk29, project, reprojection_error

CHUNK = 1024  # frames per batched linear solve


def evidence_weight(confidence, low=0.3, high=0.7):
    """0..1 weight of 2D evidence: 0 below `low`, 1 above `high`, smooth in
    between (smoothstep)."""
    x = np.clip((np.asarray(confidence, np.float64) - low) / (high - low), 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _ancestors():
    """(29, 24) bool: joint j is a proper ancestor of joint k."""
    out = np.zeros((29, 24), bool)
    for k in range(29):
        p = PARENTS_29[k]
        while p >= 0:
            out[k, p] = True
            p = PARENTS_29[p]
    return out


ANCESTORS = _ancestors()


@dataclasses.dataclass
class RefineOptions:
    sigma_box: float = 0.01          # 1 sigma of the 2D residual, fraction of box height
    huber: float = 3.0               # sigmas
    depth_prior: float = 0.25        # sigma of the depth change, fraction of the depth
    rotation_prior_deg: float = 15.0
    beta_prior: float = 1.0
    translation_iterations: int = 6
    beta_iterations: int = 5
    pose_iterations: int = 8
    shape: bool = True
    pose: bool = True


def _projection_jacobian(p, focal):
    """d pixel / d point, (..., 2, 3)."""
    z = np.maximum(p[..., 2], 1e-3)
    o = np.zeros_like(z)
    fx, fy = focal
    return np.stack([np.stack([fx / z, o, -fx * p[..., 0] / z ** 2], -1),
                     np.stack([o, fy / z, -fy * p[..., 1] / z ** 2], -1)], -2)


def _residuals(joints, uv, w, focal, principal, sigma, huber):
    """Scaled residuals (N, 29, 2) and robust weights (N, 29)."""
    r = (project(joints, focal, principal) - uv) / sigma[:, None, None]
    mag = np.linalg.norm(r, axis=-1)
    rw = w * np.minimum(1.0, huber / np.maximum(mag, 1e-12))
    return r, rw


def _cost(joints, uv, w, focal, principal, sigma, huber):
    r, _ = _residuals(joints, uv, w, focal, principal, sigma, huber)
    mag = np.linalg.norm(r, axis=-1)
    rho = np.where(mag <= huber, mag ** 2, 2 * huber * mag - huber ** 2)
    return np.sum(w * rho, -1)


def _depth_prior(root, root0, opt):
    s = opt.depth_prior * np.maximum(root0[:, 2], 0.05)
    return (root[:, 2] - root0[:, 2]) / s, 1.0 / s


def refine_translation(rot, rest29, root, uv, w, focal, principal, sigma, opt):
    """Root translation (N, 3) by Gauss-Newton on the robust 2D residuals."""
    root0 = np.asarray(root, np.float64)
    root = root0.copy()
    rel, _ = fk29(rot, rest29, np.zeros_like(root))
    for _ in range(opt.translation_iterations):
        p = rel + root[:, None]
        r, rw = _residuals(p, uv, w, focal, principal, sigma, opt.huber)
        jac = _projection_jacobian(p, focal) / sigma[:, None, None, None]    # (N,29,2,3)
        h = np.einsum("nk,nkai,nkaj->nij", rw, jac, jac)
        g = np.einsum("nk,nkai,nka->ni", rw, jac, r)
        dr, ds = _depth_prior(root, root0, opt)
        h[:, 2, 2] += ds ** 2
        g[:, 2] += dr * ds
        h += 1e-9 * np.eye(3)
        root = root - np.linalg.solve(h, g[..., None])[..., 0]
        root[:, 2] = np.maximum(root[:, 2], 0.05)
    return root


def refine_betas(model, rot, betas0, root, uv, w, focal, principal, sigma, opt):
    """One shape for the clip and every frame's translation; see the module
    docstring. Returns (betas (10,), root (N, 3))."""
    nb = model.num_betas
    beta = np.asarray(betas0, np.float64).copy()
    beta0 = beta.copy()
    root0 = np.asarray(root, np.float64)
    root = root0.copy()
    s29 = np.concatenate([model.joint_shapedirs, model.shapedirs[LEAF_VERTEX_IDS]])  # (29,3,B)
    parents = PARENTS_29
    for _ in range(opt.beta_iterations):
        rest = rest_joints_29(model, beta)[None]
        p, glob = fk29(rot, rest, root)
        # d joints / d betas, by the same recursion as the forward kinematics
        d = np.zeros(p.shape + (nb,))
        for k in range(1, 29):
            q = parents[k]
            d[:, k] = d[:, q] + np.einsum("nab,bc->nac", glob[:, q], s29[k] - s29[q])
        r, rw = _residuals(p, uv, w, focal, principal, sigma, opt.huber)
        jp = _projection_jacobian(p, focal) / sigma[:, None, None, None]
        jb = np.einsum("nkai,nkic->nkac", jp, d)                            # (N,29,2,B)
        att = np.einsum("nk,nkai,nkaj->nij", rw, jp, jp)
        atb = np.einsum("nk,nkai,nkac->nic", rw, jp, jb)
        abb = np.einsum("nk,nkac,nkad->cd", rw, jb, jb)
        gt = np.einsum("nk,nkai,nka->ni", rw, jp, r)
        gb = np.einsum("nk,nkac,nka->c", rw, jb, r)
        dr, ds = _depth_prior(root, root0, opt)
        att[:, 2, 2] += ds ** 2
        gt[:, 2] += dr * ds
        att += 1e-9 * np.eye(3)
        inv = np.linalg.inv(att)
        red = abb - np.einsum("nic,nij,njd->cd", atb, inv, atb)
        red += np.eye(nb) / opt.beta_prior ** 2
        rg = gb - np.einsum("nic,nij,nj->c", atb, inv, gt) + (beta - beta0) / opt.beta_prior ** 2
        db = -np.linalg.solve(red, rg)
        dt = -np.einsum("nij,nj->ni", inv, gt + np.einsum("nic,c->ni", atb, db))
        beta = beta + db
        root = root + dt
        root[:, 2] = np.maximum(root[:, 2], 0.05)
    return beta, root


def _rotation_jacobian(jp, p, glob, active):
    """d pixel_k / d delta_j, (N, 29, 2, A, 3), for the rotation increments
    delta_j of the active joints (right-multiplied: R_j <- R_j exp(delta_j)).

    A joint k below j moves by d p_k = (G_j delta_j) x (p_k - p_j), so
    d p_k / d delta_j = -[p_k - p_j]x G_j, whose column c is G_j[:, c] x
    (p_k - p_j); zero where j is not an ancestor of k. jp (N, 29, 2, 3) is
    d pixel / d point."""
    d = p[:, :, None, :] - p[:, None, active, :]                              # (N,29,A,3)
    g = glob[:, None, active]                                                 # (N,1,A,3,3)
    dx, dy, dz = (d[..., i, None] for i in range(3))
    dj = np.stack([g[..., 1, :] * dz - g[..., 2, :] * dy,
                   g[..., 2, :] * dx - g[..., 0, :] * dz,
                   g[..., 0, :] * dy - g[..., 1, :] * dx], -2)               # (N,29,A,3,3)
    dj *= ANCESTORS[:, active][None, :, :, None, None]
    return np.swapaxes(jp[:, :, None] @ dj, 2, 3)


def _pose_step(rot, rot0, rest, root, root0, uv, w, focal, principal, sigma, active, opt,
               damping):
    """One Levenberg-Marquardt step for (translation, active joints' rotations)."""
    p, glob = fk29(rot, rest, root)
    r, rw = _residuals(p, uv, w, focal, principal, sigma, opt.huber)
    jp = _projection_jacobian(p, focal) / sigma[:, None, None, None]         # (N,29,2,3)
    n, na = len(p), len(active)
    jac = np.concatenate([jp, _rotation_jacobian(jp, p, glob, active).reshape(n, 29, 2, 3 * na)],
                         -1)                                                  # (N,29,2,3+3A)
    jw = jac * np.sqrt(rw)[..., None, None]
    jw = jw.reshape(n, 58, -1)
    h = np.swapaxes(jw, 1, 2) @ jw
    g = ((rw[..., None] * r).reshape(n, 1, 58) @ jac.reshape(n, 58, -1))[:, 0]
    # priors: total rotation change per joint, depth
    dev = matrix_to_axis_angle(np.swapaxes(rot0[:, active], -1, -2) @ rot[:, active])
    sr = np.radians(opt.rotation_prior_deg)
    idx = np.arange(3, 3 + 3 * na)
    h[:, idx, idx] += 1.0 / sr ** 2
    g[:, 3:] += dev.reshape(n, -1) / sr ** 2
    dr, ds = _depth_prior(root, root0, opt)
    h[:, 2, 2] += ds ** 2
    g[:, 2] += dr * ds
    diag = np.einsum("nii->ni", h)
    h = h + (damping[:, None] * diag + 1e-9)[..., None] * np.eye(h.shape[1])
    step = -np.linalg.solve(h, g[..., None])[..., 0]
    new_root = root + step[:, :3]
    new_rot = rot.copy()
    new_rot[:, active] = rot[:, active] @ axis_angle_to_matrix(step[:, 3:].reshape(n, na, 3))
    return new_rot, new_root


def _pose_cost(rot, rot0, rest, root, root0, uv, w, focal, principal, sigma, active, opt):
    p, _ = fk29(rot, rest, root)
    c = _cost(p, uv, w, focal, principal, sigma, opt.huber)
    dev = matrix_to_axis_angle(np.swapaxes(rot0[:, active], -1, -2) @ rot[:, active])
    c = c + np.sum(dev ** 2, (-1, -2)) / np.radians(opt.rotation_prior_deg) ** 2
    dr, _ = _depth_prior(root, root0, opt)
    return c + dr ** 2


def refine_pose(rot, rest29, root, uv, w, focal, principal, sigma, opt):
    """Local rotations and root translation, per frame; returns (rot, root)."""
    rot = np.asarray(rot, np.float64).copy()
    root = np.asarray(root, np.float64).copy()
    seen = (w > 0).any(0)                                    # joints with evidence in the clip
    active = np.flatnonzero(ANCESTORS[seen].any(0))
    if not len(active):
        return rot, root
    out_rot, out_root = rot.copy(), root.copy()
    rest29 = np.asarray(rest29, np.float64)
    for a in range(0, len(rot), CHUNK):
        sl = slice(a, a + CHUNK)
        rs = rest29 if len(rest29) == 1 else rest29[sl]
        args = (rs, uv[sl], w[sl], focal, principal, sigma[sl], active, opt)
        r0, t0 = rot[sl], root[sl]
        cur_r, cur_t = r0.copy(), t0.copy()
        cost = _pose_cost(cur_r, r0, rs, cur_t, t0, *args[1:])
        damping = np.full(len(r0), 1e-3)
        for _ in range(opt.pose_iterations):
            new_r, new_t = _pose_step(cur_r, r0, rs, cur_t, t0, *args[1:], damping)
            new_cost = _pose_cost(new_r, r0, rs, new_t, t0, *args[1:])
            better = new_cost < cost
            cur_r[better], cur_t[better] = new_r[better], new_t[better]
            cost = np.where(better, new_cost, cost)
            damping = np.where(better, damping * 0.3, damping * 10.0)
        out_rot[sl], out_root[sl] = cur_r, cur_t
    return out_rot, out_root


def align_to_evidence(rotmats, rest29, root, uv, confidence, valid, focal, principal, bbox,
                      model=None, betas=None, options=None):
    """The whole refinement (see the module docstring) on the valid rows.

    rotmats (N, 24, 3, 3), rest29 (N|1, 29, 3) the skeleton the character
    uses (ignored for the shape step, which rebuilds it from `model` and
    `betas` (10,)), root (N, 3), uv (N, 29, 2) and confidence (N, 29) the 2D
    evidence, bbox (N, 4). Returns a dict with rotmats, root_translation,
    betas (10,) or None, rest29 (1|N, 29, 3), joints29 (N, 29, 3) and the
    alignment before and after (:class:`.metric.AlignmentError`)."""
    opt = options or RefineOptions()
    valid = np.asarray(valid, bool)
    rot = np.asarray(rotmats, np.float64).copy()
    root = np.asarray(root, np.float64).copy()
    rest29 = np.asarray(rest29, np.float64)
    if rest29.ndim == 2:
        rest29 = rest29[None]
    uv = np.asarray(uv, np.float64)
    w = evidence_weight(confidence) * valid[:, None]
    h = np.asarray(bbox, np.float64)[:, 3] - np.asarray(bbox, np.float64)[:, 1]
    sigma = np.maximum(opt.sigma_box * h, 1.0)
    before_j, _ = fk29(rot, rest29, root)
    before = reprojection_error(before_j, uv, confidence, focal, principal, bbox, valid)
    out_betas = None if betas is None else np.asarray(betas, np.float64)
    v = np.flatnonzero(valid)
    if len(v):
        rs = rest29 if len(rest29) == 1 else rest29[v]
        args = (uv[v], w[v], focal, principal, sigma[v], opt)
        r_v = refine_translation(rot[v], rs, root[v], *args)
        if model is not None and opt.shape and out_betas is not None:
            out_betas, r_v = refine_betas(model, rot[v], out_betas, r_v, *args)
            rest29 = rest_joints_29(model, out_betas)[None]
            rs = rest29
        if opt.pose:
            rot[v], r_v = refine_pose(rot[v], rs, r_v, *args)
        root[v] = r_v
    joints, _ = fk29(rot, rest29, root)
    after = reprojection_error(joints, uv, confidence, focal, principal, bbox, valid)
    return {"rotmats": rot, "root_translation": root, "betas": out_betas, "rest29": rest29,
            "joints29": joints, "before": before, "after": after}
