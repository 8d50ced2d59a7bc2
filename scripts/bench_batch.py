"""Benchmark: a batch of videos one after the other vs on a local Ray cluster.

Generates --videos clips (default 8; a real photo of a person moving across a
--size frame, --frames frames each), then, in the same run:

* sequential: one process captures them one after the other with the
  single-video code, the backend built once and reused (the fair baseline,
  not one process per video);
* Ray: ``worker batch`` on a local cluster of --workers CPUs with as many
  model workers, timed from the start of the cluster to the last result;
  the time without the cluster start-up is printed too.

Prints both wall times and the speed-up (goal on a 2-core machine: >= 1.6x),
and checks that both runs wrote the same results. The mediapipe backend by
default; --backend hybrik uses a random-weight checkpoint (CPU).

Usage: python scripts/bench_batch.py [--videos 8] [--frames 450] [--size 320x240] [--workers 2]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(ROOT, "tests", "data")


def make_clip(path, n, size, seed):
    img = cv2.imread(os.path.join(DATA, "astronaut.png"))
    w, h = size
    person = cv2.resize(img, (int(h * 0.8), int(h * 0.8)))
    wr = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    for i in range(n):
        f = np.full((h, w, 3), 40 + 5 * seed, np.uint8)
        x = int((w - person.shape[1]) * (0.5 + 0.4 * np.sin(i / 40 + seed)))
        y = h - person.shape[0]
        f[y:, x:x + person.shape[1]] = person
        wr.write(f)
    wr.release()
    return path


def random_checkpoint(folder):
    import torch
    from hybrik_blender.worker.synthetic import synthetic_state
    from tests.conftest import synthetic_arrays
    from tests.helpers import hybrik_smpl_buffers
    state = synthetic_state(os.path.join(DATA, "checkpoint_keys_res34_cam.json"), "res34_cam", 1)
    state = {k: torch.from_numpy(v) for k, v in state.items()}
    state.update(hybrik_smpl_buffers(synthetic_arrays(posedirs_scale=0)))
    path = os.path.join(folder, "hybrik_res34_random.pth")
    torch.save({"model": state}, path)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=450)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backend", choices=("mediapipe", "hybrik"), default="mediapipe")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))

    from hybrik_blender.core.formats.result import load_result
    from hybrik_blender.worker import batch
    from hybrik_blender.worker import capture as cap

    tmp = tempfile.mkdtemp(prefix="bench-batch-")
    clips = os.path.join(tmp, "clips")
    os.makedirs(clips)
    videos = [make_clip(os.path.join(clips, f"clip{i}.avi"), args.frames, size, i)
              for i in range(args.videos)]
    checkpoint = random_checkpoint(tmp) if args.backend == "hybrik" else None
    print(f"{args.videos} videos of {args.frames} frames at {size[0]}x{size[1]}, "
          f"{args.backend} backend, {os.cpu_count()} CPU cores", flush=True)

    # sequential: one process, one backend, one video after the other
    seq_dir = os.path.join(tmp, "sequential")
    os.makedirs(seq_dir)
    t0 = time.perf_counter()
    opts = dict(backend=args.backend, checkpoint=checkpoint, device="cpu")
    backend = cap.load_backend(cap.CaptureOptions(video="", out="", **opts))
    for v in videos:
        out = os.path.join(seq_dir, os.path.splitext(os.path.basename(v))[0] + ".npz")
        cap.run_capture(cap.CaptureOptions(video=v, out=out, **opts), backend=backend)
    t_seq = time.perf_counter() - t0
    print(f"sequential            {t_seq:7.1f} s  "
          f"({args.videos * args.frames / t_seq:6.1f} frames/s)", flush=True)

    # Ray: a local cluster with one model worker per CPU
    ray_dir = os.path.join(tmp, "ray")
    events = []
    t0 = time.perf_counter()
    summary = batch.run_batch(batch.BatchOptions(
        inputs=[clips], out_dir=ray_dir, ray_address="local", num_cpus=args.workers,
        workers=args.workers, backend=args.backend, checkpoint=checkpoint),
        progress=lambda e: events.append((time.perf_counter(), e)))
    t_ray = time.perf_counter() - t0
    t_first = next(t for t, e in events if e["event"] == "workers")
    assert summary["done"] == args.videos, summary
    print(f"Ray, {args.workers} workers         {t_ray:7.1f} s  "
          f"({args.videos * args.frames / t_ray:6.1f} frames/s), of which "
          f"{t_first - t0:.1f} s starting the cluster and the workers", flush=True)

    same = all(np.array_equal(load_result(os.path.join(seq_dir, f)).rotmats,
                              load_result(os.path.join(ray_dir, f)).rotmats)
               for f in sorted(os.listdir(seq_dir)))
    speedup = t_seq / t_ray
    print(f"speed-up              {speedup:7.2f}x  (without the start-up: "
          f"{t_seq / (t_ray - (t_first - t0)):.2f}x; goal >= 1.6x)")
    print(f"same results          {'yes' if same else 'NO'}")
    print(json.dumps({"sequential_s": round(t_seq, 2), "ray_s": round(t_ray, 2),
                      "ray_startup_s": round(t_first - t0, 2), "speedup": round(speedup, 2),
                      "same_results": same}))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
