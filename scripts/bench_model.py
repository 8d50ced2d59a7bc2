#!/usr/bin/env python
"""Benchmark of the HybrIK worker: crops/s per architecture and batch size,
batched IK frames/s, and the baseline the official demo runs (one crop at a
time, flip test, full outputs) measured in the same run.

Architectures: the SMPL networks (res34_cam, hrnet48_cam) and HybrIK-X's
SMPL-X networks (hrnetx48_rle = HRNetSMPLXCamKidReg, the demo's model;
hrnetx48 = HRNetSMPLXCamKid). HybrIK-X crops/s include its 3-step camera
refinement (3 naive IK solves), the analytical IK and the SMPL-X skinning.

Weights are the deterministic synthetic ones (speed does not depend on the
values); the body models are the synthetic SMPL and SMPL-X models in
tests/data. With a GPU: CUDA, float16 autocast and channels_last.

    python scripts/bench_model.py [--arch res34_cam hrnet48_cam hrnetx48_rle hrnetx48]
                                  [--batches 1 8 32]
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
from hybrik_blender.worker.hybrik import ik, ikx, smplx_layer  # noqa: E402
from hybrik_blender.worker.hybrik.model import HybrIKPipeline  # noqa: E402
from hybrik_blender.worker.hybrik.modelx import HybrIKXPipeline  # noqa: E402
from hybrik_blender.worker.hybrik.nets import build_network  # noqa: E402
from hybrik_blender.worker.hybrik.netsx import ARCHITECTURES_X, build_network_x  # noqa: E402
from hybrik_blender.worker.synthetic import manifest_from_network, synthetic_state  # noqa: E402


def load_body():
    with np.load(os.path.join(ROOT, "tests", "data", "synthetic_smpl_neutral.npz")) as d:
        return body_model_from_arrays({k: d[k] for k in d.files}, source="synthetic")


def timed(fn, iters, sync):
    """Median wall time of ``fn``; the median CPU time of this process (all
    threads) is left in ``timed.cpu``: on a shared machine crops per
    CPU-second stay comparable when wall-clock rates do not."""
    times, cpu = [], []
    for _ in range(iters):
        sync()
        t, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    timed.cpu = statistics.median(cpu)
    return statistics.median(times)


def load_body_x():
    data = os.path.join(ROOT, "tests", "data")
    return smplx_layer.load_smplx_model(os.path.join(data, "synthetic_smplx_neutral.npz"),
                                        os.path.join(data, "synthetic_smplx_kid_template.npy"))


def pipeline(arch, body, device):
    if arch in ARCHITECTURES_X:
        body = load_body_x()
        net = build_network_x(arch)
        state = synthetic_state(manifest_from_network(net), arch, seed=1,
                                rest_points71=body.rest_points())
        net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        return HybrIKXPipeline(net, body, device=device)
    net = build_network(arch)
    state = synthetic_state(manifest_from_network(net), arch, seed=1)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return HybrIKPipeline(net, body, device=device)


def inputs(b, device):
    g = torch.Generator().manual_seed(b)
    x = torch.randn(b, 3, 256, 256, generator=g).to(device)
    boxes = torch.tensor([[100.0, 50.0, 400.0, 350.0]]).repeat(b, 1)
    centre = torch.tensor([[320.0, 240.0]]).repeat(b, 1)
    return x, boxes, centre


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+",
                    default=["res34_cam", "hrnet48_cam", "hrnetx48_rle", "hrnetx48"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    ap.add_argument("--crops", type=int, default=None,
                    help="crops to time per batch size (default: 32 on CPU, 1024 on GPU)")
    ap.add_argument("--baseline-frames", type=int, default=None)
    ap.add_argument("--ik-batch", type=int, default=4096)
    args = ap.parse_args()

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    crops = args.crops or (1024 if cuda else 32)
    base_frames = args.baseline_frames or (64 if cuda else 3)
    name = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}"
          + ("; float16 autocast, channels_last" if cuda else ""))
    body = load_body()

    # batched IK (+ FK), the inference solver
    tb = ik.TorchBodyModel(body, torch.float32, device)
    n = args.ik_batch
    rng = np.random.default_rng(0)
    betas = torch.tensor(rng.normal(0, 1, (n, 10)), dtype=torch.float32, device=device)
    rest = tb.rest_joints_29(betas)
    pose = rest + torch.tensor(rng.normal(0, 0.02, (n, 29, 3)), dtype=torch.float32, device=device)
    phis = torch.tensor(rng.normal(0, 1, (n, 23, 2)), dtype=torch.float32, device=device)

    def run_ik():
        with torch.inference_mode():
            ik.solve(tb, pose, betas, phis)

    run_ik()
    t_ik = timed(run_ik, 5, sync)
    print(f"IK (hybrid analytical + FK), batch {n}: {n / t_ik:,.0f} frames/s "
          f"(target >= 20,000 on CPU)")

    # HybrIK-X: SMPL-X IK alone, and IK + skinning + 127 joints (the layer call)
    if any(a in ARCHITECTURES_X for a in args.arch):
        layer = smplx_layer.TorchSMPLX(load_body_x(), torch.float32, device)
        nx = max(1, args.ik_batch // 16)
        bx = torch.tensor(np.concatenate([rng.normal(0, 1, (nx, 10)), np.zeros((nx, 1))], 1),
                          dtype=torch.float32, device=device)
        ex = torch.tensor(rng.normal(0, 1, (nx, 10)), dtype=torch.float32, device=device)
        restx = layer.rest_points(layer.shaped(bx, ex))
        posex = restx + torch.tensor(rng.normal(0, 0.01, (nx, 71, 3)), dtype=torch.float32,
                                     device=device)
        phisx = torch.tensor(rng.normal(0, 1, (nx, 54, 2)), dtype=torch.float32, device=device)

        def run_ikx():
            with torch.inference_mode():
                ikx.solve(posex - posex[:, :1], restx, phisx)

        def run_layer(full):
            with torch.inference_mode():
                layer.hybrik(bx, ex, posex - posex[:, :1], phisx, vertices=full)

        run_ikx()
        t = timed(run_ikx, 3, sync)
        print(f"SMPL-X IK (HybrIK-X analytical), batch {nx}: {nx / t:,.0f} frames/s")
        for full, what in ((True, "the whole mesh"), (False, "the output vertices only")):
            run_layer(full)
            t = timed(lambda: run_layer(full), 3, sync)
            print(f"SMPL-X layer (IK + FK + skinning of {what} + 127 joints), batch {nx}: "
                  f"{nx / t:,.0f} frames/s")

    for arch in args.arch:
        pipe = pipeline(arch, body, device)
        results = {}
        for b in args.batches:
            x, boxes, centre = inputs(b, device)
            iters = max(1, crops // b)

            def step():
                pipe(x, boxes, centre)

            step()                       # warm-up
            results[b] = b / timed(step, iters, sync)
            print(f"{arch}: batch {b:3d}: {results[b]:8.2f} crops/s "
                  f"({b / max(timed.cpu, 1e-9):.2f} per CPU-second)")
        if arch in ARCHITECTURES_X:   # where the time goes: network vs SMPL-X solve
            b = max(args.batches)
            x, boxes, centre = inputs(b, device)
            heads = pipe.heads(x)
            t_net = timed(lambda: pipe.heads(x), 1, sync)
            t_solve = timed(lambda: pipe.solve(heads, boxes, centre), 3, sync)
            print(f"{arch}: batch {b}: network {1000 * t_net / b:.1f} ms/crop, refinement + "
                  f"IK + skinning {1000 * t_solve / b:.2f} ms/crop "
                  f"({100 * t_solve / (t_net + t_solve):.1f}% of the crop's time)")
        # baseline: the official demo's way, one crop per call, flip test, mesh
        x1, boxes1, centre1 = inputs(1, device)

        def base():
            for _ in range(base_frames):
                pipe(x1, boxes1, centre1, flip_test=True, vertices=True)

        base()
        base_rate = base_frames / timed(base, 1, sync)
        base_cpu = base_frames / max(timed.cpu, 1e-9)
        best = max(results.values())
        print(f"{arch}: baseline batch-1 loop with flip test: {base_rate:8.2f} crops/s "
              f"({base_cpu:.2f} per CPU-second); "
              f"best batched / baseline = {best / base_rate:.2f}x; "
              f"batch {max(args.batches)} / baseline = {results[max(args.batches)] / base_rate:.2f}x")


if __name__ == "__main__":
    main()
