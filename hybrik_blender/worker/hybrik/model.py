"""The HybrIK pipeline: normalised crops -> SMPL pose, shape and camera.

Typical use (the capture worker)::

    from hybrik_blender.worker.hybrik.checkpoint import load_hybrik
    from hybrik_blender.worker.hybrik import preprocess

    pipe = load_hybrik("hybrik_hrnet48_w3dpw.pth", device="cpu")
    crop, box, _ = preprocess.crop_person(frame_rgb, tight_box)
    x = preprocess.normalize_crops(np.stack(crops))
    out = pipe(x, boxes, img_centers)            # dict of tensors, batched
    result = pipe.to_result(out, ...)             # or assemble it yourself

All outputs are batched tensors; names follow the reference model's outputs.
"""
import logging

import numpy as np
import torch

from . import decode, ik, speed
from .speed import to_device
from .nets import build_network

log = logging.getLogger(__name__)


class HybrIKPipeline:
    """Network + decoding + camera + hybrid IK, batched over crops.

    ``net``: a network from :mod:`.nets` (its state loaded); ``body``: a
    :class:`~hybrik_blender.core.body.model.BodyModel` (or a
    :class:`.ik.TorchBodyModel`). ``chunk``: crops per network call (the IK
    always runs on the whole batch). ``swing``: the analytical IK's numerics
    (SMPL networks), "official" (default: the official checkpoints' numbers)
    or "exact" (see :func:`.ik.hybrik_ik`).

    ``precision``: "fp32", "bf16", "auto" or "fp64" (see :mod:`.speed`); None, the
    default, is fp32 on the CPU and AMP on CUDA (``amp=False`` there: fp32).
    Only the network runs in reduced precision; decoding, camera and IK run
    in float32 (float64 for a float64 input).

    At the first float32 call the network is prepared for inference in place
    (:class:`.speed.PreparedNet`: BatchNorm folded, channels_last, bfloat16
    weights for bf16 on the CPU, ``compile`` for torch.compile). A float64
    input runs ``net`` as it is, without autocast: call ``net.double()``
    before any float32 call for the exact float64 reference. ``optimize``
    False keeps the network as given (the unprepared float32 baseline)."""

    def __init__(self, net, body, device="cpu", amp=None, channels_last=None, chunk=None,
                 precision=None, compile=None, optimize=True, budget=None, swing="official"):
        ik._check_swing(swing)
        self.swing = swing
        self.device = torch.device(speed.resolve_device(device))
        cuda = self.device.type == "cuda"
        # crops per network call; None: 4 on the CPU, the whole batch on a GPU
        self.chunk = (4 if self.device.type == "cpu" else None) if chunk is None else chunk
        self.arch = net.arch
        if precision is None:
            precision = "bf16" if (amp if amp is not None else cuda) else "fp32"
        elif amp is False:
            precision = "fp32"
        self.requested_precision = precision
        # "auto" until the first float32 call measures bf16 against fp32
        self.precision = speed.resolve_precision(precision, self.device)
        self.budget = speed.BF16_BUDGET if budget is None else budget
        self.precision_check = None
        self.channels_last = channels_last
        self.compile = speed.compile_default() if compile is None else bool(compile)
        self.optimize = optimize and self.precision != "fp64"
        self.net = net.to(self.device).eval()
        self.prepared = None
        self.body = self._torch_body(body)
        if self.precision == "fp64":
            # the exact path throughout: float64 weights, body and crops
            self.net.double()
            self.body = self.body.to(dtype=torch.float64)

    @property
    def amp(self):
        """True when the network runs in reduced precision (bf16 autocast on
        the CPU, AMP on CUDA)."""
        return self.precision == "bf16"

    def _torch_body(self, body):
        """The body model as the torch tensors the IK uses (subclasses with
        another body model override this)."""
        if not isinstance(body, ik.TorchBodyModel):
            body = ik.TorchBodyModel(body, torch.float32, self.device)
        return body

    def prepare(self):
        """Prepare the network now (it is otherwise done at the first
        float32 call); returns the :class:`.speed.PreparedNet`. While auto
        has not decided yet, this is the fp32 one."""
        if self.prepared is None and self.precision == "fp64":
            return None   # fp64 runs the network as it is
        if self.prepared is None:
            self.prepared = speed.PreparedNet(
                self.net, self.device, "bf16" if self.precision == "bf16" else "fp32",
                channels_last=self.channels_last, compile=self.compile)
            self.net = self.prepared.net
        return self.prepared

    def describe(self):
        """What runs, for logs and the result's model field: e.g.
        "bf16 on cpu", "fp32 (auto) on cpu" or "amp float16 on cuda"."""
        what = self.precision
        if self.amp and self.device.type == "cuda":
            what = f"amp {str(speed.cuda_amp_dtype()).replace('torch.', '')}"
        if self.requested_precision == "auto" and self.precision != "auto":
            what += " (auto)"
        return f"{what} on {self.device.type}"

    # -- auto: bf16 where its measured deviation is within the budget ------------

    def check_points(self, x, boxes, img_center, flip_test):
        """The outputs the auto check compares (see :func:`.speed.deviation`):
        camera-space joints and joint rotations of one call."""
        out = self._forward(x, boxes, img_center, flip_test=flip_test)
        return {"joints": out["joints29_cam"], "rotations": out["rot_mats"]}

    def decide_precision(self, x, boxes, img_center, flip_test=False):
        """auto: run the first crops (at most :data:`.speed.CHECK_CROPS`) in
        fp32 and in bf16 and keep bf16 when it is within ``budget``; records
        the measurement in ``precision_check``. Returns the chosen precision."""
        if self.precision != "auto":
            return self.precision
        import copy
        n = min(len(x), speed.CHECK_CROPS)
        x, boxes, img_center = x[:n], boxes[:n], img_center[:n]
        self.precision = "fp32"
        fp32 = self.prepare()
        ref = self.check_points(x, boxes, img_center, flip_test)
        self.precision = "bf16"
        self.prepared = speed.PreparedNet(copy.deepcopy(self.net), self.device, "bf16",
                                          channels_last=self.channels_last,
                                          compile=self.compile)
        dev = speed.deviation(ref, self.check_points(x, boxes, img_center, flip_test))
        ok = speed.within_budget(dev, self.budget)
        if not ok:
            self.precision, self.prepared = "fp32", fp32
        self.net = self.prepared.net
        self.precision_check = {"crops": n, "chosen": self.precision, "budget": dict(self.budget),
                                **{k: round(v, 4) for k, v in dev.items()}}
        log.info("precision auto: %s (bf16 vs fp32 on %d crops: joints median %.2f mm, "
                 "max %.2f mm, rotations max %.2f deg; budget %s)", self.precision, n,
                 dev["joints_median_mm"], dev["joints_max_mm"], dev["rotation_max_deg"],
                 self.budget)
        return self.precision

    def _as_input(self, x):
        return x.double() if self.precision == "fp64" else x

    def _decide_first(self, x, boxes, img_center, flip_test):
        if self.precision == "auto" and self.optimize and x.dtype == torch.float32 and len(x):
            dtype = torch.float32
            self.decide_precision(
                x, torch.as_tensor(boxes, dtype=dtype).reshape(-1, 4),
                torch.as_tensor(img_center, dtype=dtype).reshape(-1, 2), flip_test)

    def _net(self, x):
        if x.dtype == torch.float32 and self.optimize:
            return self.prepare()(x)
        # the exact path: the network as it is, in the input's dtype
        x = to_device(x, self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _heads(self, x, flip_test):
        out = self._net(x)
        if flip_test:
            fout = self._net(x.flip(3))
            uvd, peak, marg = decode.soft_argmax_flip(out["heat"], fout["heat"])
            out = decode.merge_flip(self.arch, out, fout)
        else:
            uvd, peak, marg = decode.soft_argmax(out["heat"])
        del out["heat"]
        out.update(uvd=uvd, peak=peak, marg=marg)
        return out

    @torch.inference_mode()
    def __call__(self, x, boxes, img_center, flip_test=False, vertices=False, marginals=False):
        """x (B, 3, 256, 256) normalised crops; boxes (B, 4) square boxes xyxy
        in image pixels (from :func:`.preprocess.crop_person`); img_center
        (B, 2) principal points (W/2, H/2 for an unknown camera).

        Returns a dict of tensors: uvd, maxvals, sigma, phi, betas, camera
        (raw head), cam_scale, cam_root (metres), transl (= cam_root),
        xyz29 (root-relative, units of 2.2 m), rot_mats (B, 24, 3, 3): the
        rotations nearest to the official IK's matrices, rot_mats_official:
        those matrices as the official code computes them (slightly
        non-orthonormal, see :mod:`.ik`), joints24 (IK FK joints, metres,
        root-centred), joints29_cam (the 29 predicted joints in the camera
        frame, metres) and, with ``vertices``, vertices and joints17
        (centred on the H36M pelvis); joints and vertices come from the
        official matrices, as in the official layer."""
        x = self._as_input(x)
        self._decide_first(x, boxes, img_center, flip_test)
        return self._forward(x, boxes, img_center, flip_test, vertices, marginals)

    def _forward(self, x, boxes, img_center, flip_test=False, vertices=False, marginals=False):
        x = to_device(x, self.device)
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        boxes = torch.as_tensor(boxes, dtype=dtype, device=self.device).reshape(-1, 4)
        img_center = torch.as_tensor(img_center, dtype=dtype, device=self.device).reshape(-1, 2)
        # network + soft-argmax in chunks: the heatmap logits are 30 MB per crop,
        # so on the CPU large batches run faster in cache-sized pieces
        step = self.chunk or x.shape[0]
        parts = [self._heads(x[i:i + step], flip_test) for i in range(0, x.shape[0], step)]
        out = {k: (None if parts[0][k] is None else
                   tuple(torch.cat([p[k][j] for p in parts]) for j in range(3))
                   if isinstance(parts[0][k], tuple) else torch.cat([p[k] for p in parts]))
               for k in parts[0]}
        uvd, peak, marg = out["uvd"], out["peak"], out["marg"]
        res = {"uvd": uvd, "maxvals": peak, "sigma": out["sigma"], "phi": out["phi"],
               "betas": out["shape"], "camera": out["cam"], "feat": out["feat"]}
        if marginals:
            res["marginals"] = marg
        offset = decode.box_offset(boxes, img_center)
        scale = out["cam"][:, 0]
        if self.arch == "hrnet48_cam" and out["sigma"] is not None:
            xyz0, _ = decode.back_project(uvd, scale, offset)
            naive = ik.solve(self.body, xyz0 * decode.DEPTH_FACTOR, out["shape"], out["phi"],
                             naive=True)
            res["refine_ik_input"] = xyz0 * decode.DEPTH_FACTOR
            res["refine_ik_joints"] = naive["joints"]
            res["refine_ik_rot_mats"] = naive["rot_mats"]
            scale = decode.refine_scale(uvd, out["sigma"], scale, offset, naive["joints"])
        xyz, root = decode.back_project(uvd, scale, offset)
        sol = ik.solve(self.body, xyz * decode.DEPTH_FACTOR, out["shape"], out["phi"],
                       vertices=vertices, swing=self.swing)
        res.update(cam_scale=scale, cam_root=root, transl=root - sol["joints"][:, 0],
                   xyz29=xyz, rot_mats=sol["rot_mats"],
                   rot_mats_official=sol.get("rot_mats_official", sol["rot_mats"]),
                   joints24=sol["joints"],
                   joints29_cam=xyz * decode.DEPTH_FACTOR + root[:, None])
        if vertices:
            res["vertices"] = sol["vertices"]
            if "joints17" in sol:
                res["joints17"] = sol["joints17"]
        return res

    def confidence(self, out):
        """(B,) a 0..1 score per crop: mean of 1 - sigma (or of the heatmap
        peaks when the checkpoint has no sigma head)."""
        if out.get("sigma") is not None:
            return (1 - out["sigma"]).mean(-1).clamp(0, 1)
        return out["maxvals"].mean(-1).clamp(0, 1)

    def frame_arrays(self, out):
        """numpy per-frame fields of :class:`hybrik_blender.core.formats.result.Result`
        (rotmats, betas, root_translation, joints29, confidence) from one
        call's output; add frame_index, time_s, bbox, valid and the clip
        fields to build the Result."""
        return {
            "rotmats": out["rot_mats"].float().cpu().numpy(),
            "betas": out["betas"].float().cpu().numpy(),
            "root_translation": out["cam_root"].float().cpu().numpy(),
            "joints29": out["joints29_cam"].float().cpu().numpy(),
            "confidence": self.confidence(out).float().cpu().numpy(),
            # the 2D evidence: u, v in box widths from the box centre, and
            # 1 - sigma per joint (1 without a sigma head)
            "uv29": out["uvd"][..., :2].float().cpu().numpy(),
            "uv29_confidence": (1 - out["sigma"] if out.get("sigma") is not None
                                else torch.ones_like(out["uvd"][..., 0])
                                ).clamp(0, 1).float().cpu().numpy(),
        }


def build_pipeline(arch, state_dict, body, device="cpu", **kw):
    """Network of ``arch`` with ``state_dict`` loaded (strict, except an
    absent decsigma) wrapped in a pipeline."""
    with_sigma = any(k.startswith("decsigma.") for k in state_dict)
    net = build_network(arch, with_sigma=with_sigma)
    net.load_state_dict({k: torch.as_tensor(np.asarray(v)) if not torch.is_tensor(v) else v
                         for k, v in state_dict.items()})
    return HybrIKPipeline(net, body, device=device, **kw)
