"""Inference speed: devices, precisions and the network rewrites that keep
the float32 arithmetic (BatchNorm folding, channels_last) or trade a
measured bit of it for speed (bfloat16).

Precisions (``--precision``):

* ``fp32``: float32 everywhere. The golden parity tests run in it; BatchNorm
  folded into the convolutions changes results by ~1e-6 relative at most.
* ``bf16``: the networks (backbone and heads) in reduced precision: on the
  CPU with bfloat16 weights under ``torch.autocast("cpu", torch.bfloat16)``
  (oneDNN's AVX512-BF16 / AMX kernels, float32 accumulation), on CUDA under
  float16 autocast (AMP, :func:`cuda_amp_dtype`). The head outputs are cast to float32 before
  decoding: the soft-argmax, camera model, refinement and IK stay float32.
* ``auto``: bf16 where the hardware runs it natively (CUDA; a CPU with
  AVX512-BF16 or AMX-BF16) *and* the deviation from fp32, measured on the
  first crops of the run with the checkpoint's own weights, is within
  :data:`BF16_BUDGET`; else fp32 (README "Precision").
"""
import contextlib
import copy
import logging
import os
import time

import torch
from torch import nn

log = logging.getLogger(__name__)

# fp64: the whole pipeline in float64, unprepared: slow (measured 1.6x fp32
# on ResNet-34 crops here, far more on HRNet), but the same results on any
# CPU to ~1e-12, where float32 kernels chosen per instruction set differ by
# ~1e-4 in the rotations; for reproducible reference runs.
PRECISIONS = ("fp32", "bf16", "auto", "fp64")
DEVICES = ("auto", "cpu", "cuda")

# The budget auto holds bf16 to, against fp32 on the same crops: the
# camera-space joints (mm), median and max, and the joint rotations (degrees),
# max. Measured on the first crops of every run (HybrIKPipeline, "auto").
BF16_BUDGET = {"joints_median_mm": 2.0, "joints_max_mm": 5.0, "rotation_max_deg": 1.0}
CHECK_CROPS = 4   # crops the auto check runs in both precisions


def resolve_device(device="auto"):
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'."""
    device = str(device or "auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def cpu_bf16_native():
    """True when this CPU has native bfloat16 arithmetic (AVX512-BF16 or
    AMX-BF16) and oneDNN is there to use it; otherwise bfloat16 would be
    emulated and slower than float32."""
    if not torch.backends.mkldnn.is_available():
        return False
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # noqa: BLE001 - a probe missing from this torch build
            pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            flags = fh.read()
        return " avx512_bf16" in flags or " amx_bf16" in flags
    except OSError:
        return False


def bf16_native(device):
    device = torch.device(device)
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_bf16_native()


def resolve_precision(precision, device):
    """'fp32', 'bf16' or 'auto' -> 'fp32', 'bf16', or 'auto' where the
    device runs bf16 natively (the choice then waits for the measurement on
    the first crops, see :func:`deviation`); auto is fp32 elsewhere."""
    precision = str(precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}'; known: {', '.join(PRECISIONS)}")
    if precision == "auto" and not bf16_native(device):
        return "fp32"
    return precision


def rotation_angle_deg(a, b):
    """Angle (degrees) of the rotation between matching 3x3 matrices."""
    r = a.transpose(-1, -2).double() @ b.double()
    c = ((r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)
    return torch.rad2deg(torch.arccos(c))


def deviation(ref, other):
    """How far ``other`` is from ``ref``: each a dict of ``joints`` (B, J, 3)
    camera-space points in metres and ``rotations`` (B, K, 3, 3); optional
    ``vertices`` (B, V, 3) and ``uvd`` (B, J, 3). Returns floats: joints
    median/max (mm), rotations median/max (degrees), and vertices (mm) and
    uvd (in 256-px crop pixels) median/max where given."""
    d = (ref["joints"].double() - other["joints"].double()).norm(dim=-1) * 1000
    ang = rotation_angle_deg(ref["rotations"], other["rotations"])
    out = {"joints_median_mm": float(d.median()), "joints_max_mm": float(d.max()),
           "rotation_median_deg": float(ang.median()), "rotation_max_deg": float(ang.max())}
    if ref.get("vertices") is not None and other.get("vertices") is not None:
        v = (ref["vertices"].double() - other["vertices"].double()).norm(dim=-1) * 1000
        out.update(vertices_median_mm=float(v.median()), vertices_max_mm=float(v.max()))
    if ref.get("uvd") is not None and other.get("uvd") is not None:
        u = (ref["uvd"].double() - other["uvd"].double()).abs() * 256
        out.update(uvd_median_px=float(u.median()), uvd_max_px=float(u.max()))
    return out


def within_budget(dev, budget=None):
    """True when every budget entry present in ``dev`` is met."""
    budget = BF16_BUDGET if budget is None else budget
    return all(dev[k] <= v for k, v in budget.items())


def cuda_amp_dtype():
    """The autocast dtype of bf16 on CUDA: float16. Tensor cores run it as
    fast as bfloat16 and it keeps 3 more mantissa bits; these networks'
    activations stay far below its range (the CUDA tests check finiteness)."""
    return torch.float16


def to_device(x, device):
    """A CPU tensor onto ``device``: through pinned memory and a non-blocking
    copy for CUDA (the copy overlaps the host's work until the first kernel
    that needs it)."""
    device = torch.device(device)
    if x.device == device or (device.type == "cuda" and x.device.type == "cuda"
                              and device.index is None):
        return x
    if device.type == "cuda" and x.device.type == "cpu":
        if not x.is_pinned():
            x = x.pin_memory()
        return x.to(device, non_blocking=True)
    return x.to(device)


# --- BatchNorm folding --------------------------------------------------------

def _fold(conv, bn):
    """Fold an eval-mode BatchNorm into the (transposed) convolution before
    it, in float64, written back in the convolution's dtype."""
    dtype = conv.weight.dtype
    w = conv.weight.detach().double()
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.detach().double() - bn.running_mean.double() * scale
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(shift)
    if isinstance(conv, nn.ConvTranspose2d):   # weight (in, out / groups, kh, kw)
        if conv.groups != 1:
            raise ValueError("grouped transposed convolutions are not folded")
        w = w * scale.reshape(1, -1, 1, 1)
    else:                                       # weight (out, in / groups, kh, kw)
        w = w * scale.reshape(-1, 1, 1, 1)
    conv.weight = nn.Parameter(w.to(dtype), requires_grad=False)
    conv.bias = nn.Parameter((bias * scale + shift).to(dtype), requires_grad=False)


_CONV = (nn.Conv2d, nn.ConvTranspose2d)
# the attribute pairs of the blocks whose forward calls bn(conv(x))
_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def fold_batchnorm(net):
    """Fold every BatchNorm2d of an eval-mode network into the convolution
    that feeds it, in place: the BN becomes an Identity. Returns the number
    folded. Only for inference (the folded network cannot train)."""
    if net.training:
        raise ValueError("fold_batchnorm needs an eval-mode network")
    count = 0
    for mod in list(net.modules()):
        for c, b in _PAIRS:
            conv, bn = getattr(mod, c, None), getattr(mod, b, None)
            if isinstance(conv, _CONV) and isinstance(bn, nn.BatchNorm2d):
                _fold(conv, bn)
                setattr(mod, b, nn.Identity())
                count += 1
        if isinstance(mod, nn.Sequential):
            keys = list(mod._modules)
            for k0, k1 in zip(keys, keys[1:]):
                conv, bn = mod._modules[k0], mod._modules[k1]
                if isinstance(conv, _CONV) and isinstance(bn, nn.BatchNorm2d):
                    _fold(conv, bn)
                    mod._modules[k1] = nn.Identity()
                    count += 1
    left = [n for n, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"BatchNorm layers not after a convolution: {', '.join(left[:5])}")
    return count


# --- the prepared network -----------------------------------------------------

# Layers that stay float32 in bf16: the ones whose outputs are the network's
# outputs, and the regression path after the pooled feature. bfloat16 keeps
# 8 significant bits, so rounding the heatmap logits (about +-40 with sharp
# peaks: steps of 0.25) or the camera scale (0.9 + a small correction: steps
# of 1/256, i.e. ~2 cm of depth at 4 m) to it would cost far more than the
# rounding inside the backbone. Their inputs are cast up; they are small,
# except the ResNet heatmap layer (see README "Speed").
FLOAT32_LAYERS = ("final_layer", "preact.final_layer", "preact.depth_layer",
                  "preact.final_feat_layer", "fc1", "fc2", "decshape", "decphi", "deccam",
                  "decsigma", "fc_coord", "fc_coord_mouthtop", "decsigma_mouthtop")


def _has(net, name):
    try:
        return isinstance(net.get_submodule(name), nn.Module)
    except AttributeError:
        return False


class Float32(nn.Module):
    """Runs the wrapped layer in float32 whatever autocast says, on NCHW
    tensors: its output is what the decoding reads (a channels_last heatmap
    would be copied there), and oneDNN's float32 kernels take NCHW (a
    channels_last float32 convolution fell back to the slow im2col path)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer.float().to(memory_format=torch.contiguous_format)

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return self.layer(x.float().contiguous())


class HeatmapLogits:
    """The SMPL heatmap logits (B, 29*64, H, W) not computed yet: the 1x1
    heatmap layer's float32 input features (B, C, H, W) NCHW, weight (K, C)
    and bias (K,). :func:`.decode.soft_argmax` computes them one joint at a
    time in cache, straight into the softmax sums, so the 30 MB a crop of
    logits never exist (their fresh pages cost as much as the arithmetic);
    :meth:`materialize` computes them all (the flip test)."""

    def __init__(self, features, weight, bias):
        self.features, self.weight, self.bias = features, weight, bias

    @property
    def shape(self):
        b, _, h, w = self.features.shape
        return (b, self.weight.shape[0], h, w)

    @property
    def device(self):
        return self.features.device

    def materialize(self):
        b, c, h, w = self.features.shape
        x = self.features.reshape(b, c, h * w)
        y = torch.matmul(self.weight, x) + self.bias[:, None]
        return y.reshape(self.shape)


class LazyHeatmap(nn.Module):
    """A 1x1 heatmap convolution that returns :class:`HeatmapLogits`."""

    def __init__(self, conv):
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().float().reshape(conv.out_channels, -1)
                                   .contiguous(), requires_grad=False)
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        self.bias = nn.Parameter(bias.detach().float().clone(), requires_grad=False)

    @staticmethod
    def fits(layer, channels=29 * 64):
        return (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1)
                and layer.stride == (1, 1) and layer.padding == (0, 0) and layer.groups == 1
                and layer.out_channels == channels)

    def forward(self, x):
        x = x.to(torch.float32, memory_format=torch.contiguous_format)
        return HeatmapLogits(x, self.weight, self.bias)


HEATMAP_LAYERS = ("final_layer", "preact.final_layer")


def lazy_heatmaps(net, layers=None):
    """Replace the SMPL heatmap layers (1856 channels, 1x1) by
    :class:`LazyHeatmap`, in place; ``layers``: their float32 originals."""
    for name in HEATMAP_LAYERS:
        if not _has(net, name):
            continue
        parent, _, leaf = name.rpartition(".")
        owner = net.get_submodule(parent) if parent else net
        layer = (layers or {}).get(name, getattr(owner, leaf))
        if isinstance(layer, LazyHeatmap):     # a prepared network's, prepared again
            setattr(owner, leaf, layer.float())
        elif LazyHeatmap.fits(layer):
            setattr(owner, leaf, LazyHeatmap(layer))
    return net


def keep_float32(net, names=FLOAT32_LAYERS, layers=None):
    """Wrap the named sub-modules (those that exist) in :class:`Float32`, in
    place; ``layers``: {name: module} to wrap instead of the network's own
    (their float32 originals, taken before the network went to bfloat16)."""
    for name in names:
        if not _has(net, name):
            continue
        parent, _, leaf = name.rpartition(".")
        owner = net.get_submodule(parent) if parent else net
        if not isinstance(getattr(owner, leaf), (Float32, LazyHeatmap)):
            setattr(owner, leaf, Float32((layers or {}).get(name, getattr(owner, leaf))))
    return net


class PreparedNet:
    """A network made ready for fast float32-input inference on one device
    and precision: BatchNorm folded, channels_last where it measures faster,
    bfloat16 weights for bf16 on the CPU, AMP on CUDA, optionally compiled
    (``torch.compile``, inductor) with a fallback to the eager network when
    compiling fails. Calling it returns the network's dict with every
    floating tensor float32."""

    def __init__(self, net, device, precision, channels_last=None, compile=False):
        self.device = torch.device(device)
        self.precision = precision
        cuda = self.device.type == "cuda"
        self.folded = fold_batchnorm(net)
        # channels_last by default on CUDA and for bf16 on the CPU, where
        # it measures 2-2.5x faster (README "Speed"); fp32 on the CPU stays
        # NCHW: channels_last was at most ~15% faster there and its kernels
        # change a crop's result with the batch it runs in (by ~2e-5 in the
        # rotations, tests/test_hybrikx_golden.py holds that to 1e-5)
        if channels_last is None:
            channels_last = cuda or precision == "bf16"
        self.channels_last = bool(channels_last)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.amp_dtype = None
        if precision == "bf16" and cuda:
            self.amp_dtype = cuda_amp_dtype()
            keep_float32(net)
        elif precision == "bf16":
            self.amp_dtype = torch.bfloat16
            # bfloat16 weights: no per-call weight casts under autocast;
            # the float32 layers keep their float32 weights and the
            # buffers (init_cam 0.9, init_shape) stay exact float32
            originals = {n: copy.deepcopy(net.get_submodule(n)) for n in FLOAT32_LAYERS
                         if _has(net, n)}
            buffers = {k: b.clone() for k, b in net.named_buffers()}
            net = net.to(torch.bfloat16)
            for k, b in buffers.items():
                owner, _, leaf = k.rpartition(".")
                (net.get_submodule(owner) if owner else net)._buffers[leaf] = b
            lazy_heatmaps(net, originals)
            keep_float32(net, layers=originals)
        elif not cuda:
            lazy_heatmaps(net)
        self.net = net
        self.run = net
        self.compiled = False
        self.compile_error = None
        self.compile_seconds = None
        if compile:
            self._compile()

    def _compile(self):
        try:
            self.run = torch.compile(self.net, backend="inductor", dynamic=False)
            self.compiled = True
        except Exception as exc:  # noqa: BLE001
            self.compile_error = f"{type(exc).__name__}: {exc}"
            log.warning("torch.compile failed (%s): running the network eagerly",
                        self.compile_error)
            self.run = self.net

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def input(self, x):
        """A float32 crop batch as this network wants it: on its device
        (non-blocking from pinned memory), channels_last, bf16 on the CPU."""
        x = to_device(x, self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.precision == "bf16" and self.device.type == "cpu":
            x = x.to(torch.bfloat16)
        return x

    def __call__(self, x):
        x = self.input(x)
        with self._autocast():
            if self.compiled:
                try:
                    t = time.perf_counter()
                    out = self.run(x)
                    if self.compile_seconds is None:
                        self.compile_seconds = time.perf_counter() - t
                except Exception as exc:  # noqa: BLE001 - compile errors surface at the call
                    self.compile_error = f"{type(exc).__name__}: {exc}"
                    log.warning("the compiled network failed (%s): running it eagerly",
                                self.compile_error.splitlines()[0][:300])
                    self.compiled = False
                    self.run = self.net
                    out = self.net(x)
            else:
                out = self.run(x)
        return {k: (v.float() if isinstance(v, torch.Tensor) and v.is_floating_point()
                    and v.dtype != torch.float32 else v) for k, v in out.items()}


def compile_default():
    """torch.compile is off unless HYBRIK_COMPILE=1 (README: on this 2-core
    CPU it measured no faster than the folded eager network, and its first
    call costs tens of seconds)."""
    return os.environ.get("HYBRIK_COMPILE", "") == "1"


# --- the measured peak --------------------------------------------------------

def gemm_peak(dtype=torch.float32, device="cpu", n=2048, iters=8):
    """GFLOP/s of a plain n x n matrix product in ``dtype``: the machine's
    practical peak that benchmarks divide by (median of ``iters``)."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        a @ b
        sync()
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            a @ b
            sync()
            times.append(time.perf_counter() - t)
    times.sort()
    return 2.0 * n ** 3 / times[len(times) // 2] / 1e9
