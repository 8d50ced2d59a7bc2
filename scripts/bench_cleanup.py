"""Benchmark of the motion clean-up (hybrik_blender.core.motion.cleanup).

Builds a synthetic walk (core/motion/synthetic.py) of --frames frames with realistic
noise and prints frames per second (median of --runs runs) for:

* smoothing alone: clean_take(smoothing="offline", shape="track",
  foot_locking="off", root_mode="camera"), joints29 recomputed;
* the whole clean-up with foot locking: the defaults (offline smoothing,
  track shape, floor fit, grounding + IK locking, world root);
* the causal One Euro filter (rotations + root, frame by frame);
* baseline, same run: a naive per-frame / per-joint Python loop doing the
  same offline rotation smoothing (Gaussian-weighted quaternion average per
  frame and joint), timed on a slice and reported per frame;
* baseline, same run: Euler-angle filtering (XYZ angles from the matrices,
  the same zero-phase filter, back to matrices), the usual shortcut and
  what this module avoids (wrap-around at +-180 degrees).

It also prints the quality metrics against ground truth for the take.

Usage: python scripts/bench_cleanup.py [--frames 10000] [--runs 5] --model PATH
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hybrik_blender.core.motion import cleanup, filters, ground, synthetic
from hybrik_blender.core import rotations  # noqa: E402
from hybrik_blender.core.body.model import load_body_model  # noqa: E402

DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "tests", "data", "synthetic_smpl_neutral.npz")


def timed(fn, runs):
    times = []
    out = None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def naive_smooth(rotmats, fps, strength=1.0):
    """Per-frame, per-joint loop: Gaussian-weighted quaternion average over
    the window (the same cutoff as the offline filter), renormalised."""
    cutoff = filters.ROTATION_BASE_CUTOFF_HZ / strength
    sigma = np.sqrt(np.log(2.0)) / (2.0 * np.pi * cutoff) * fps
    radius = int(np.ceil(4 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    n, joints = rotmats.shape[:2]
    out = np.empty((n, joints, 3, 3))
    for t in range(n):
        for j in range(joints):
            ref = rotations.matrix_to_quaternion(rotmats[t, j])
            acc = np.zeros(4)
            for k, w in zip(range(t - radius, t + radius + 1), taps):
                q = rotations.matrix_to_quaternion(rotmats[min(max(k, 0), n - 1), j])
                acc += w * (q if q @ ref >= 0 else -q)
            out[t, j] = rotations.quaternion_to_matrix(acc / np.linalg.norm(acc))
    return out


def euler_xyz(rot):
    r = np.asarray(rot, np.float64)
    y = np.arcsin(np.clip(r[..., 0, 2], -1.0, 1.0))
    x = np.arctan2(-r[..., 1, 2], r[..., 2, 2])
    z = np.arctan2(-r[..., 0, 1], r[..., 0, 0])
    return np.stack([x, y, z], -1)


def from_euler_xyz(e):
    cx, cy, cz = np.cos(e[..., 0]), np.cos(e[..., 1]), np.cos(e[..., 2])
    sx, sy, sz = np.sin(e[..., 0]), np.sin(e[..., 1]), np.sin(e[..., 2])
    out = np.empty(e.shape[:-1] + (3, 3))
    out[..., 0, 0], out[..., 0, 1], out[..., 0, 2] = cy * cz, -cy * sz, sy
    out[..., 1, 0] = cx * sz + sx * sy * cz
    out[..., 1, 1] = cx * cz - sx * sy * sz
    out[..., 1, 2] = -sx * cy
    out[..., 2, 0] = sx * sz - cx * sy * cz
    out[..., 2, 1] = sx * cz + cx * sy * sz
    out[..., 2, 2] = cx * cy
    return out


def euler_smooth(rotmats, fps, strength=1.0):
    cutoff = filters.ROTATION_BASE_CUTOFF_HZ / strength
    return from_euler_xyz(filters.zero_phase_lowpass(euler_xyz(rotmats), fps, cutoff))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--naive-frames", type=int, default=200,
                    help="frames timed for the naive loop baseline (it is slow)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    args = ap.parse_args(argv)

    model = load_body_model(args.model)
    take = synthetic.walk_cycle(model, num_frames=args.frames)
    noisy = synthetic.add_noise(take.result, take.skeleton, seed=0)
    n = args.frames
    print(f"clip: {n} frames at {noisy.fps:g} fps, synthetic walk + noise; "
          f"median of {args.runs} runs; numpy {np.__version__}")

    smooth_opts = cleanup.CleanupOptions(foot_locking="off", root_mode="camera")
    full_opts = cleanup.CleanupOptions()
    t_smooth, (smoothed, _) = timed(lambda: cleanup.clean_take(noisy, model, smooth_opts),
                                    args.runs)
    t_full, (full, matrix) = timed(lambda: cleanup.clean_take(noisy, model, full_opts), args.runs)
    one_euro_opts = cleanup.CleanupOptions(smoothing="one_euro", foot_locking="off",
                                           root_mode="camera")
    t_euro, _ = timed(lambda: cleanup.clean_take(noisy, model, one_euro_opts),
                      max(1, args.runs // 2))
    t_euler, _ = timed(lambda: euler_smooth(noisy.rotmats, noisy.fps), args.runs)
    m = min(args.naive_frames, n)
    t_naive, _ = timed(lambda: naive_smooth(noisy.rotmats[:m], noisy.fps), 1)

    def row(name, seconds, frames=n):
        print(f"  {name:<52s} {frames / seconds:>12,.0f} frames/s  ({seconds * 1000:8.1f} ms "
              f"for {frames} frames)")

    print("throughput")
    row("smoothing alone (offline, track shape, joints29)", t_smooth)
    row("whole clean-up with foot locking (defaults)", t_full)
    row("causal One Euro (frame-by-frame loop)", t_euro)
    row("baseline: Euler-angle filtering (rotations only)", t_euler)
    row("baseline: naive per-frame/per-joint loop (rotations)", t_naive, m)
    print(f"  speed-up of the vectorised smoothing over the naive loop: "
          f"{(m / t_naive and (n / t_smooth) / (m / t_naive)):,.0f}x")
    print(f"  targets: smoothing >= 50,000 frames/s: {'met' if n / t_smooth >= 50000 else 'MISSED'}; "
          f"with foot locking >= 5,000 frames/s: {'met' if n / t_full >= 5000 else 'MISSED'}")

    gt = take.joints29
    print("quality against ground truth (mm; accel in mm/frame^2; skating mm/frame)")
    for name, res, mat in (("noisy input", noisy, take.camera_to_world),
                           ("smoothing alone", smoothed, take.camera_to_world),
                           ("whole clean-up", full, matrix)):
        j = synthetic.result_joints(res, take.skeleton)
        jw = ground.transform_points(mat, j)
        soles = ground.transform_points(mat, synthetic.result_soles(res, take.skeleton))
        print(f"  {name:<16s} MPJPE {synthetic.mpjpe_mm(j, gt):6.2f}  accel "
              f"{synthetic.accel_error_mm(j, gt):6.2f}  skating "
              f"{synthetic.foot_skating_mm(jw, take.contacts):6.2f}  below floor "
              f"{synthetic.floor_penetration_m(soles) * 1000:6.2f}")


if __name__ == "__main__":
    main()
