#!/usr/bin/env python
"""Benchmark of the HybrIK worker: crops/s per architecture, precision and
batch size against the machine's measured GEMM peak, batched IK frames/s,
and the baseline the official demo runs (one crop at a time, flip test, full
outputs), all measured in the same run.

Variants (the whole pipeline: network, soft-argmax, camera, IK):

* ``fp32``: the network as loaded (BatchNorm layers, NCHW), the baseline;
* ``fp32+fold``: ``--precision fp32`` as it runs: BatchNorm folded;
* ``bf16``: ``--precision bf16``: folded, channels_last, bfloat16 weights
  under CPU autocast (AMP float16 on CUDA), output layers float32;
* ``bf16+compile`` (with ``--compile``): the same through torch.compile.

Each line: crops/s (median), crops per CPU-second, the ratio to fp32 at
batch 1, the GFLOP/s achieved (torch's FLOP counter: ResNet-34 16.4,
HRNet-W48 45.9 GFLOP per crop) and that as a fraction of the peak of a plain
GEMM of the variant's dtype measured at the start. Variants are timed in
interleaved rounds so that a noisy shared machine slows all alike.

Architectures: the SMPL networks (res34_cam, hrnet48_cam) and HybrIK-X's
SMPL-X networks (hrnetx48_rle, hrnetx48; their crops/s include the 3-step
camera refinement and the SMPL-X skinning). Weights are the deterministic
synthetic ones (speed does not depend on the values).

    python scripts/bench_model.py [--device auto|cpu|cuda] [--arch res34_cam hrnet48_cam]
                                  [--batches 1 8] [--compile] [--rounds 5] [--quick]
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hybrik_blender.core.body.model import body_model_from_arrays  # noqa: E402
from hybrik_blender.worker.hybrik import ik, ikx, smplx_layer, speed  # noqa: E402
from hybrik_blender.worker.hybrik.model import HybrIKPipeline  # noqa: E402
from hybrik_blender.worker.hybrik.modelx import HybrIKXPipeline  # noqa: E402
from hybrik_blender.worker.hybrik.nets import build_network  # noqa: E402
from hybrik_blender.worker.hybrik.netsx import ARCHITECTURES_X, build_network_x  # noqa: E402
from hybrik_blender.worker.synthetic import manifest_from_network, synthetic_state  # noqa: E402


def load_body():
    with np.load(os.path.join(ROOT, "tests", "data", "synthetic_smpl_neutral.npz")) as d:
        return body_model_from_arrays({k: d[k] for k in d.files}, source="synthetic")


def load_body_x():
    data = os.path.join(ROOT, "tests", "data")
    return smplx_layer.load_smplx_model(os.path.join(data, "synthetic_smplx_neutral.npz"),
                                        os.path.join(data, "synthetic_smplx_kid_template.npy"))


def timed(fn, iters, sync):
    """(median wall time, median CPU time of this process, all threads)."""
    times, cpu = [], []
    for _ in range(iters):
        sync()
        t, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(times), statistics.median(cpu)


_STATES = {}


def network(arch):
    """A fresh network of ``arch`` with the synthetic weights."""
    if arch in ARCHITECTURES_X:
        net = build_network_x(arch)
        if arch not in _STATES:
            _STATES[arch] = synthetic_state(manifest_from_network(net), arch, seed=1,
                                            rest_points71=load_body_x().rest_points())
    else:
        net = build_network(arch)
        if arch not in _STATES:
            _STATES[arch] = synthetic_state(manifest_from_network(net), arch, seed=1)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in _STATES[arch].items()})
    return net


def pipeline(arch, body, device, precision="fp32", optimize=True, compile=False):
    net = network(arch)
    kw = dict(device=device, precision=precision, optimize=optimize, compile=compile)
    if arch in ARCHITECTURES_X:
        return HybrIKXPipeline(net, load_body_x(), **kw)
    return HybrIKPipeline(net, body, **kw)


def flops_per_crop(arch):
    from torch.utils.flop_counter import FlopCounterMode
    net = network(arch).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        net(torch.zeros(1, 3, 256, 256))
    return fc.get_total_flops()


class Crops:
    """uint8 crops (B, 256, 256, 3) as the capture hands them over on CUDA:
    pinned, copied without blocking, normalised on the GPU (the timed call
    includes that transfer)."""

    def __init__(self, b):
        rng = np.random.default_rng(b)
        self.crops = torch.from_numpy(rng.integers(0, 256, (b, 256, 256, 3), dtype=np.uint8))
        self.crops = self.crops.pin_memory()
        self.shape = (b, 3, 256, 256)

    def __len__(self):
        return self.shape[0]


def inputs(b, device="cpu"):
    """Crops (float32 normalised on the CPU; uint8 :class:`Crops` on CUDA),
    boxes, principal points."""
    boxes = torch.tensor([[100.0, 50.0, 400.0, 350.0]]).repeat(b, 1)
    centre = torch.tensor([[320.0, 240.0]]).repeat(b, 1)
    if torch.device(device).type == "cuda":
        return Crops(b), boxes, centre
    g = torch.Generator().manual_seed(b)
    return torch.randn(b, 3, 256, 256, generator=g), boxes, centre


def call(pipe, x, boxes, centre, **kw):
    """One pipeline call as the capture makes it (CUDA: uint8 crops in)."""
    if isinstance(x, Crops):
        from hybrik_blender.worker.hybrik.preprocess import normalize_crops
        x = normalize_crops(x.crops, device=pipe.device)
    return pipe(x, boxes, centre, **kw)


def bench_ik(device, sync, n):
    body = load_body()
    tb = ik.TorchBodyModel(body, torch.float32, device)
    rng = np.random.default_rng(0)
    betas = torch.tensor(rng.normal(0, 1, (n, 10)), dtype=torch.float32, device=device)
    rest = tb.rest_joints_29(betas)
    pose = rest + torch.tensor(rng.normal(0, 0.02, (n, 29, 3)), dtype=torch.float32, device=device)
    phis = torch.tensor(rng.normal(0, 1, (n, 23, 2)), dtype=torch.float32, device=device)

    def run_ik():
        with torch.inference_mode():
            ik.solve(tb, pose, betas, phis)

    run_ik()
    t, _ = timed(run_ik, 5, sync)
    print(f"IK (hybrid analytical + FK), batch {n}: {n / t:,.0f} frames/s "
          f"(target >= 20,000 on CPU)")


def bench_ikx(device, sync, n):
    rng = np.random.default_rng(0)
    layer = smplx_layer.TorchSMPLX(load_body_x(), torch.float32, device)
    bx = torch.tensor(np.concatenate([rng.normal(0, 1, (n, 10)), np.zeros((n, 1))], 1),
                      dtype=torch.float32, device=device)
    ex = torch.tensor(rng.normal(0, 1, (n, 10)), dtype=torch.float32, device=device)
    restx = layer.rest_points(layer.shaped(bx, ex))
    posex = restx + torch.tensor(rng.normal(0, 0.01, (n, 71, 3)), dtype=torch.float32,
                                 device=device)
    phisx = torch.tensor(rng.normal(0, 1, (n, 54, 2)), dtype=torch.float32, device=device)

    def run_ikx():
        with torch.inference_mode():
            ikx.solve(posex - posex[:, :1], restx, phisx)

    run_ikx()
    t, _ = timed(run_ikx, 3, sync)
    print(f"SMPL-X IK (HybrIK-X analytical), batch {n}: {n / t:,.0f} frames/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=speed.DEVICES, default="auto")
    ap.add_argument("--arch", nargs="+", default=["res34_cam", "hrnet48_cam"])
    ap.add_argument("--batches", nargs="+", type=int, default=None,
                    help="default: 1 8 on the CPU, 1 64 256 on CUDA")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved timing rounds (default 5 on the CPU, 20 on CUDA)")
    ap.add_argument("--compile", action="store_true",
                    help="also time bf16 through torch.compile (inductor), with its first call")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    ap.add_argument("--baseline-frames", type=int, default=None,
                    help="crops of the demo-way baseline (batch 1, flip test, mesh); 0: skip")
    ap.add_argument("--ik-batch", type=int, default=4096, help="0: skip the IK lines")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = speed.resolve_device(args.device)
    cuda = device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    batches = args.batches or ([1, 64, 256] if cuda else [1, 8])
    rounds = args.rounds or (20 if cuda else 5)
    base_frames = (args.baseline_frames if args.baseline_frames is not None
                   else (64 if cuda else 3))
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    native = speed.bf16_native(device)
    print(f"device: {name}; torch {torch.__version__}; native bf16: {native}"
          + (f"; AMP dtype {speed.cuda_amp_dtype()}" if cuda else ""))
    peak32 = speed.gemm_peak(torch.float32, device, n=4096 if cuda else 2048)
    peak16 = speed.gemm_peak(speed.cuda_amp_dtype() if cuda else torch.bfloat16, device,
                             n=8192 if cuda else 2048)
    print(f"measured GEMM peak: fp32 {peak32:,.0f} GFLOP/s, "
          f"{'fp16' if cuda else 'bf16'} {peak16:,.0f} GFLOP/s "
          f"({peak16 / peak32:.1f}x)" + (" (TF32 off)" if cuda else ""))
    if args.ik_batch:
        bench_ik(device, sync, args.ik_batch)
        if any(a in ARCHITECTURES_X for a in args.arch):
            bench_ikx(device, sync, max(1, args.ik_batch // 16))
    body = load_body()

    variants = [("fp32", dict(precision="fp32", optimize=False), False),
                ("fp32+fold", dict(precision="fp32"), False)]
    if native:
        variants.append(("bf16", dict(precision="bf16"), True))
        if args.compile:
            variants.append(("bf16+compile", dict(precision="bf16", compile=True), True))
    summary = []
    for arch in args.arch:
        flops = flops_per_crop(arch)
        pipes = {}
        for vname, kw, _ in variants:
            t = time.perf_counter()
            pipes[vname] = pipeline(arch, body, device, **kw)
            x, boxes, centre = inputs(max(batches), device)
            call(pipes[vname], x, boxes, centre)  # warm-up (and the compile, where asked)
            sync()
            if vname.endswith("compile"):
                prep = pipes[vname].prepared
                print(f"{arch}: {vname}: first call {time.perf_counter() - t:.1f} s "
                      f"(compiled: {prep.compiled}"
                      + (f", {prep.compile_error.splitlines()[0][:120]}" if prep.compile_error
                         else "") + ")")
        print(f"\n{arch}: {flops / 1e9:.1f} GFLOP per crop (network forward)")
        print(f"  {'variant':14s} {'batch':>5s} {'crops/s':>9s} {'per CPU-s':>10s} "
              f"{'vs fp32 b1':>10s} {'GFLOP/s':>8s} {'of peak':>8s}")
        rates = {}
        for b in batches:
            x, boxes, centre = inputs(b, device)
            for vname, _, _ in variants:       # warm this batch size
                call(pipes[vname], x, boxes, centre)
            walls = {v: [] for v, _, _ in variants}
            cpus = {v: [] for v, _, _ in variants}
            reps = max(1, (4 if not cuda else 1) // b)
            for _ in range(rounds):
                for vname, _, _ in variants:
                    def step(p=pipes[vname]):
                        for _ in range(reps):
                            call(p, x, boxes, centre)
                    w, c = timed(step, 1, sync)
                    walls[vname].append(w / reps)
                    cpus[vname].append(c / reps)
            for vname, _, low in variants:
                rate = b / statistics.median(walls[vname])
                cpu_rate = b / max(statistics.median(cpus[vname]), 1e-9)
                rates[(vname, b)] = rate
                base = rates.get(("fp32", batches[0]), rate)
                gflops = rate * flops / 1e9
                peak = peak16 if low else peak32
                print(f"  {vname:14s} {b:5d} {rate:9.2f} {cpu_rate:10.2f} {rate / base:9.2f}x "
                      f"{gflops:8.0f} {100 * gflops / peak:7.1f}%")
        best = max(rates, key=rates.get)
        summary.append((arch, best, rates[best] / rates[("fp32", batches[0])]))
        if base_frames:
            # the official demo's way, one crop per call, flip test, mesh
            p = pipes["fp32"]
            x1, boxes1, centre1 = inputs(1, device)

            def demo():
                for _ in range(base_frames):
                    call(p, x1, boxes1, centre1, flip_test=True, vertices=True)

            demo()
            w, c = timed(demo, 1, sync)
            print(f"  demo's way (fp32, batch 1, flip test, mesh): {base_frames / w:.2f} "
                  f"crops/s ({base_frames / max(c, 1e-9):.2f} per CPU-second); best here "
                  f"({best[0]}, batch {best[1]}) = {rates[best] / (base_frames / w):.2f}x that")
        del pipes
    print()
    for arch, (vname, b), ratio in summary:
        print(f"{arch}: best {vname} at batch {b}: {ratio:.2f}x fp32 batch {batches[0]}")
    if cuda:
        print("CUDA targets (H100/H200 class, AMP, batch >= 64): res34_cam >= 6,000 crops/s, "
              "hrnet48_cam >= 2,000 crops/s")


if __name__ == "__main__":
    main()
