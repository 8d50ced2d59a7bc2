"""The HybrIK-X pipeline: normalised crops -> SMPL-X pose, shape, expression
and camera, batched. The arithmetic follows the official ``forward`` of
``HRNetSMPLXCamKidReg`` / ``HRNetSMPLXCamKid`` (HybrIK commit 9b8681d, eval
mode) step by step:

1. Network heads (:mod:`.netsx`). Regression model: the finger rows of the
   regressed points are offsets from their wrist and are added to it (the
   official ``HAND_REL``); heatmap model: uv from a soft-argmax over each
   64x64 softmax map, d from a 64-bin softmax, ``maxvals`` the product of the
   two peaks. Flip test (optional, as in the official demo): the mirrored crop's
   outputs are mirrored back and averaged; phi by mean with sin negated,
   the camera scale by harmonic mean.
2. Camera-scale refinement, 3 iterations: back-project with the current
   scale, run the *naive* IK, solve the 1-D weighted least-squares depth
   that reprojects the IK joints onto the predicted uv (weights
   ``max(0, 1 - 10 sigma)``), scale = 1 / that. The regression model uses
   joints 0-54, the heatmap model 0-21. An iteration whose normal equation is
   exactly singular (all weights zero) keeps the scale: the regression model
   does this officially (it catches the RuntimeError); the heatmap model would
   raise there, here it behaves the same way, as it does for a step that
   would give a non-finite scale. In a batch this is decided per crop (the
   official code would skip the iteration for the whole batch).
3. Back-projection with the refined scale: ``cam_depth = 1000 / (256 s +
   1e-9)``, the float32 depth factor 2.2000000477 m; the analytical IK on the
   root-relative skeleton times 2.2 (a Python float, which only differs from
   the float32 one in a float64 run), skinning, the 127 output joints.

Outputs keep the official names (see :meth:`HybrIKXPipeline.__call__`).
"""
import numpy as np
import torch

from . import ik, netsx, smplx_layer
from .model import HybrIKPipeline
from .speed import to_device

FOCAL_LENGTH = 1000
INPUT_SIZE = 256.0
DEPTH_FACTOR = float(np.float32(2.2))   # BBOX_3D_SHAPE 2200 mm * 1e-3 as a float32 tensor
IK_SCALE = 2.2
REFINE_STEPS = 3
REFINE_JOINTS = {"hrnetx48_rle": 55, "hrnetx48": 22}
LEFT_WRIST, RIGHT_WRIST = 20, 21
LEFT_FINGERS, RIGHT_FINGERS = slice(25, 40), slice(40, 55)

BODY_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (23, 24))
HAND_PAIRS = tuple((25 + i, 40 + i) for i in range(15))
LEAF_PAIRS = ((55, 56), (58, 59)) + tuple((60 + i, 65 + i) for i in range(5))


def _swap(n, pairs, offset=0):
    idx = list(range(n))
    for a, b in pairs:
        idx[a - offset], idx[b - offset] = b - offset, a - offset
    return idx


SWAP_71 = _swap(71, BODY_PAIRS + HAND_PAIRS + LEAF_PAIRS)
SWAP_PHI = _swap(54, BODY_PAIRS + HAND_PAIRS, offset=1)    # phi row k = joint k + 1

# joints29 of the result for an SMPL-X take: the predicted point of each SMPL
# joint (SMPL's hand joints 22/23 ~ the middle-finger knuckles), the head top
# from the posed mesh, then the middle-finger tips and the big toes
JOINTS29_FROM_71 = list(range(22)) + [28, 43, None, 61, 66, 55, 56]
# each rotation joint's children among the 71 points (for joint_confidence)
_CHILDREN = {i: [] for i in range(55)}
for _c, _p in enumerate(smplx_layer.ikx.PARENTS71):
    if _c and _p < 55 and not (_p == 15 and _c == 22):
        _CHILDREN[int(_p)].append(_c)


def bbox_center(boxes, img_center):
    """(B, 4) square boxes xyxy, (B, 2) principal points -> (B, 1, 2) offset
    of the box centre in box widths/heights (the official arithmetic)."""
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = (cx - img_center[:, 0]) / w
    cy = (cy - img_center[:, 1]) / h
    return torch.stack((cx, cy), 1)[:, None]


def camera_depth(scale):
    return FOCAL_LENGTH / (INPUT_SIZE * scale + 1e-9)


def back_project(uvd, scale, centre):
    """uvd (B, 71, 3), scale (B, 1, 1), box offset (B, 1, 2) -> root-relative
    points in units of 2.2 m and the root's x, y (and z = 2.2 d_0, without
    the camera distance) in metres."""
    depth = camera_depth(scale)
    z = uvd[:, :, 2:]
    xy = ((uvd[:, :, :2] + centre) * INPUT_SIZE / FOCAL_LENGTH) * (z * DEPTH_FACTOR + depth)
    xyz = torch.cat([xy / DEPTH_FACTOR, z], -1)
    root = xyz[:, 0] * DEPTH_FACTOR
    return xyz - xyz[:, :1], root


def soft_argmax_25d(prob_uv, prob_z):
    """Softmax maps (B, K, H, W) and (B, K, D) -> uvd (B, K, 3), the
    marginals over W, H, D, and the peak product (B, K)."""
    b, k, h, w = prob_uv.shape
    mx = prob_uv.sum(2)
    my = prob_uv.sum(3)
    def expect(p):
        r = torch.arange(p.shape[-1], dtype=torch.float32, device=p.device)
        return (p * r).sum(-1) / float(p.shape[-1]) - 0.5
    cx, cy, cz = expect(mx), expect(my), expect(prob_z)
    peak = prob_uv.reshape(b, k, -1).amax(-1) * prob_z.amax(-1)
    return torch.stack([cx, cy, cz], -1), (mx, my, prob_z), peak


def mirror_heat_uv(logits):
    """uv logits of a mirrored crop back in the original orientation: W
    reversed, left/right swapped, shifted one pixel toward +W keeping column
    0 (the official code shifts in place over overlapping slices, which is
    undefined; this is the intended shift, with a copy)."""
    v = logits.flip(-1)[:, SWAP_71]
    out = torch.empty_like(v)
    out[..., 1:] = v[..., :-1]
    out[..., 0] = v[..., 0]
    return out


class HybrIKXPipeline(HybrIKPipeline):
    """HybrIK-X network + decoding + camera + SMPL-X hybrid IK, batched over
    crops; the same devices, autocast and chunking as :class:`HybrIKPipeline`
    (the network alone runs under autocast; decoding, refinement and IK in
    float32, or float64 for a float64 input).

    ``net``: a network of :mod:`.netsx` with its state loaded; ``body``: an
    :class:`~.smplx_layer.SMPLXModel` or :class:`~.smplx_layer.TorchSMPLX`."""

    body_model = "smplx"

    def _torch_body(self, body):
        if not isinstance(body, smplx_layer.TorchSMPLX):
            body = smplx_layer.TorchSMPLX(body, torch.float32, self.device)
        return body

    # -- network outputs --------------------------------------------------

    def _decode(self, out, flip=None):
        """Raw outputs (and those of the mirrored crop) -> shape, phi, cam,
        sigma, uvd (finger rows absolute), maxvals; plus the raw finger
        offsets (regression) or the marginals (heatmap model)."""
        res = {"feat": out["feat"]}
        shape, phi, cam, sigma = out["shape"], out["phi"], out["cam"], out["sigma"]
        if flip is not None:
            shape = (flip["shape"] + shape) / 2
            fphi = flip["phi"][:, SWAP_PHI].clone()
            fphi[..., 1] = -fphi[..., 1]
            phi = (phi + fphi) / 2
            cam = 2 / (1 / flip["cam"] + 1 / cam)
        if self.arch == "hrnetx48_rle":
            coord = out["coord"]
            if flip is not None:
                fc = flip["coord"][:, SWAP_71].clone()
                fc[..., 0] = -fc[..., 0]
                coord = (coord + fc) / 2
                sigma = (sigma + flip["sigma"][:, SWAP_71]) / 2
            uvd = coord.clone()
            res["hand_offsets"] = torch.cat([coord[:, LEFT_FINGERS], coord[:, RIGHT_FINGERS]], 1)
            uvd[:, LEFT_FINGERS] = coord[:, LEFT_FINGERS] + coord[:, LEFT_WRIST:LEFT_WRIST + 1]
            uvd[:, RIGHT_FINGERS] = coord[:, RIGHT_FINGERS] + coord[:, RIGHT_WRIST:RIGHT_WRIST + 1]
            maxvals = 1 - sigma
        else:
            b, k = out["heat_uv"].shape[:2]
            puv = torch.softmax(out["heat_uv"].reshape(b, k, -1), -1)
            pz = torch.softmax(out["heat_z"], -1)
            if flip is not None:
                fuv = mirror_heat_uv(flip["heat_uv"]).reshape(b, k, -1)
                puv = (puv + torch.softmax(fuv, -1)) / 2
                pz = (pz + torch.softmax(flip["heat_z"][:, SWAP_71], -1)) / 2
                sigma = (sigma + flip["sigma"][:, SWAP_71]) / 2
            uvd, marg, maxvals = soft_argmax_25d(puv.reshape(out["heat_uv"].shape), pz)
            res["marginals"] = marg
        res.update(shape=shape, phi=phi, cam=cam, sigma=sigma, uvd=uvd, maxvals=maxvals)
        return res

    def _heads(self, x, flip_test):
        out = self._net(x)
        return self._decode(out, self._net(x.flip(3)) if flip_test else None)

    # -- the camera-scale refinement ----------------------------------------

    def _refine(self, uvd, sigma, scale, centre, shape, phi, trace):
        k = REFINE_JOINTS[self.arch]
        weight = (1 - sigma * 10).clamp_min(0)[:, :k]
        uv = uvd[:, :k, :2] + centre
        for _ in range(REFINE_STEPS):
            xyz, root = back_project(uvd, scale, centre)
            sol = self.body.hybrik(shape[:, :11], shape[:, 11:], xyz * IK_SCALE, phi, naive=True,
                                   joints_only=True)
            pts = sol["joints55"][:, :k] + root[:, None]
            ax, ay = uv[..., 0] * weight, uv[..., 1] * weight
            bx = (pts[..., 0] - INPUT_SIZE * uv[..., 0] / FOCAL_LENGTH * pts[..., 2]) * weight
            by = (pts[..., 1] - INPUT_SIZE * uv[..., 1] / FOCAL_LENGTH * pts[..., 2]) * weight
            ata = (ax * ax).sum(-1) + (ay * ay).sum(-1)
            atb = (ax * bx).sum(-1) + (ay * by).sum(-1)
            new = 1.0 / ((1.0 / torch.where(ata != 0, ata, torch.ones_like(ata))) * atb)
            ok = (ata != 0) & torch.isfinite(new)
            if trace is not None:
                trace.append({"init": scale[:, 0, 0], "ik_input": xyz * IK_SCALE,
                              "ik_joints55": sol["joints55"], "ik_rot_mats": sol["rot_mats"],
                              "ok": ok})
            scale = torch.where(ok[:, None, None], new[:, None, None], scale)
        return scale, weight

    # -- the whole forward ----------------------------------------------------

    @torch.inference_mode()
    def heads(self, x, flip_test=False):
        """The network and its decoding, in chunks: x (B, 3, 256, 256) ->
        dict of feat, shape (B, 21), phi, cam, sigma, uvd (B, 71, 3), maxvals
        (and hand_offsets or marginals)."""
        x = to_device(x, self.device)
        step = self.chunk or x.shape[0]
        parts = [self._heads(x[i:i + step], flip_test) for i in range(0, x.shape[0], step)]
        return {k: (tuple(torch.cat([p[k][j] for p in parts]) for j in range(len(parts[0][k])))
                    if isinstance(parts[0][k], tuple) else torch.cat([p[k] for p in parts]))
                for k in parts[0]}

    @torch.inference_mode()
    def __call__(self, x, boxes, img_center, flip_test=False, vertices=False, trace=False):
        """x (B, 3, 256, 256) normalised crops; boxes (B, 4) square boxes
        xyxy in image pixels; img_center (B, 2) principal points.

        Returns a dict of tensors with the official output names:
        pred_uvd_jts (B, 71, 3), pred_sigma, maxvals, pred_shape_full (B, 21),
        pred_beta (B, 11), pred_expression (B, 10), pred_phi (B, 54, 2),
        pred_camera (B, 1), cam_scale (B, 1), cam_root (B, 3) (metres, camera
        frame), transl, pred_xyz_hybrik (B, 71, 3) and pred_xyz_hybrik_struct
        (units of 2.2 m), pred_xyz_full (B, 127, 3), pred_uv_full (B, 127, 2),
        pred_theta_mat (B, 55, 3, 3), pred_theta_quat (B, 55, 4), pred_vertices
        (B, V, 3) (with ``vertices``; without, only the vertices the other
        outputs read are skinned), img_feat; the regression model also
        pred_lh_uvd, pred_rh_uvd (raw finger offsets), the heatmap model the
        marginals; with ``trace`` the refinement's intermediate values."""
        x = self._as_input(x)
        self._decide_first(x, boxes, img_center, flip_test)
        return self.solve(self.heads(x, flip_test), boxes, img_center, vertices, trace)

    def check_points(self, x, boxes, img_center, flip_test):
        """The auto check's outputs: the 71 points in the camera frame and
        the 55 joint rotations (fingers included)."""
        out = self.solve(self.heads(x, flip_test), boxes, img_center)
        return {"joints": out["pred_xyz_hybrik"] * DEPTH_FACTOR + out["cam_root"][:, None],
                "rotations": out["pred_theta_mat"]}

    @torch.inference_mode()
    def solve(self, heads, boxes, img_center, vertices=False, trace=False):
        """Refinement, back-projection, IK and skinning on decoded heads
        (:meth:`heads`); float64 heads give a float64 solution (with a
        float64 body layer)."""
        shape, phi, sigma, uvd = heads["shape"], heads["phi"], heads["sigma"], heads["uvd"]
        dtype = uvd.dtype
        boxes = torch.as_tensor(boxes, dtype=dtype, device=uvd.device).reshape(-1, 4)
        img_center = torch.as_tensor(img_center, dtype=dtype, device=uvd.device).reshape(-1, 2)
        centre = bbox_center(boxes, img_center)
        steps = [] if trace else None
        scale, weight = self._refine(uvd, sigma, heads["cam"][:, :1, None], centre, shape, phi,
                                     steps)
        xyz, root = back_project(uvd, scale, centre)
        root = torch.cat([root[:, :2], root[:, 2:] + camera_depth(scale)[:, 0]], -1)
        sol = self.body.hybrik(shape[:, :11], shape[:, 11:], xyz * IK_SCALE, phi,
                               vertices=vertices)
        struct_full = sol["joints"] / IK_SCALE
        transl = root - sol["joints"][:, 0]
        full = struct_full * IK_SCALE + transl[:, None]
        uv_full = full[..., :2] / full[..., 2:] * FOCAL_LENGTH / INPUT_SIZE - centre
        res = {
            "pred_uvd_jts": uvd, "pred_sigma": sigma, "maxvals": heads["maxvals"],
            "pred_shape_full": shape, "pred_beta": shape[:, :11],
            "pred_expression": shape[:, 11:], "pred_phi": phi, "pred_camera": heads["cam"],
            "cam_scale": scale[:, 0], "cam_root": root, "transl": transl,
            "pred_xyz_hybrik": xyz,
            "pred_xyz_hybrik_struct": torch.cat([sol["joints55"], sol["leaves"]], 1) / IK_SCALE,
            "pred_xyz_full": struct_full, "pred_uv_full": uv_full,
            "pred_theta_mat": sol["rot_mats"], "pred_theta_quat": sol["theta_quat"],
            "update_scale_weight": weight, "head_top": sol["head_top"], "bbox_center": centre,
        }
        if "feat" in heads:
            res["img_feat"] = heads["feat"]
        if vertices:
            res["pred_vertices"] = sol["vertices"]
        if "hand_offsets" in heads:
            res["pred_lh_uvd"], res["pred_rh_uvd"] = heads["hand_offsets"].split(15, 1)
        if "marginals" in heads:
            res["marginals"] = heads["marginals"]
        if trace:
            res["trace"] = steps
        return res

    # -- result fields ----------------------------------------------------------

    def confidence(self, out):
        """(B,) a 0..1 score per crop: mean of 1 - sigma over the 71 points."""
        return (1 - out["pred_sigma"]).mean(-1).clamp(0, 1)

    @staticmethod
    def joint_confidence(sigma):
        """(B, 55) 0..1 per rotation joint from sigma: a rotation rests on the
        joint and on the child points that aim it, so it is as certain as the
        least certain of the joint and the mean of its children (the capture
        writes it for the fingers; the body's joint_confidence is the shared
        one of the 29 SMPL-equivalent points, see worker/refine.py)."""
        kids = torch.stack([sigma[:, _CHILDREN[i]].mean(-1) for i in range(55)], -1)
        return (1 - torch.maximum(sigma[:, :55], kids)).clamp(0, 1)

    def frame_arrays(self, out):
        """numpy per-frame fields of a result v2 take (``body_model``
        "smplx"): rotmats (24: SMPL-X body joints 0-21, identity 22-23),
        betas (10), kid, expression, hand_rotmats (30), jaw_rotmat,
        eye_rotmats, root_translation (the pelvis, camera frame), joints29
        (camera frame: predicted points, see ``JOINTS29_FROM_71``),
        confidence, hand_confidence (30); and the capture's 2D evidence of
        the 29 SMPL-equivalent points: uv29 (box widths from the box centre,
        as ``pred_uvd_jts``) with uv29_confidence = 1 - sigma (the head top,
        which the network does not predict, is the projection of the posed
        mesh's, with confidence 0)."""
        n = lambda t: t.float().cpu().numpy()  # noqa: E731
        # a take holds rotations: the nearest ones to the official matrices
        # (which are slightly non-orthonormal, see worker/hybrik/ik.py)
        rot = ik.project_rotations(out["pred_theta_mat"])
        b = rot.shape[0]
        eye = torch.eye(3, dtype=rot.dtype, device=rot.device).expand(b, 2, 3, 3)
        root = out["cam_root"]
        pts = out["pred_xyz_hybrik"] * DEPTH_FACTOR + root[:, None]
        head_top = out["head_top"] + root
        j29 = torch.stack([head_top if i is None else pts[:, i] for i in JOINTS29_FROM_71], 1)
        uvd, sigma = out["pred_uvd_jts"], out["pred_sigma"]
        top_uv = (head_top[:, :2] / head_top[:, 2:] * FOCAL_LENGTH / INPUT_SIZE
                  - out["bbox_center"][:, 0])
        uv29 = torch.stack([top_uv if i is None else uvd[:, i, :2] for i in JOINTS29_FROM_71], 1)
        zero = torch.zeros_like(sigma[:, 0])
        conf29 = torch.stack([zero if i is None else 1 - sigma[:, i] for i in JOINTS29_FROM_71],
                             1)
        conf = self.joint_confidence(sigma)
        return {
            "rotmats": n(torch.cat([rot[:, :22], eye], 1)),
            "betas": n(out["pred_beta"][:, :10]), "kid": n(out["pred_beta"][:, 10]),
            "expression": n(out["pred_expression"]),
            "hand_rotmats": n(rot[:, 25:55]), "jaw_rotmat": n(rot[:, 22]),
            "eye_rotmats": n(rot[:, 23:25]),
            "root_translation": n(root), "joints29": n(j29),
            "confidence": n(self.confidence(out)), "hand_confidence": n(conf[:, 25:55]),
            "uv29": n(uv29), "uv29_confidence": n(conf29.clamp(0, 1)),
        }

    @staticmethod
    def placeholder_row():
        """Finite per-frame values for a frame without a person."""
        return {"rotmats": np.tile(np.eye(3), (24, 1, 1)), "betas": np.zeros(10), "kid": 0.0,
                "expression": np.zeros(10), "hand_rotmats": np.tile(np.eye(3), (30, 1, 1)),
                "jaw_rotmat": np.eye(3), "eye_rotmats": np.tile(np.eye(3), (2, 1, 1)),
                "root_translation": np.zeros(3), "joints29": np.zeros((29, 3)),
                "confidence": 0.0, "hand_confidence": np.zeros(30),
                "uv29": np.zeros((29, 2)), "uv29_confidence": np.zeros(29)}


def build_pipeline_x(arch, state_dict, body, device="cpu", **kw):
    """Network of ``arch`` with ``state_dict`` loaded (strict; body-model
    buffers ignored) wrapped in a pipeline."""
    net = netsx.build_network_x(arch)
    net.load_state_dict({k: torch.as_tensor(np.asarray(v)) if not torch.is_tensor(v) else v
                         for k, v in state_dict.items() if not k.startswith("smplx_layer.")})
    return HybrIKXPipeline(net, body, device=device, **kw)
