"""Benchmark: importing a result onto a full SMPL character in Blender.

Bulk path (the add-on's): 24 bone quaternions + root location, 10 shape keys
and 207 pose correctives, all keyed per frame through keyframe_points.add +
foreach_set. Baseline, measured in the same run: the per-frame
``keyframe_insert`` way that other SMPL bridges use, on a shorter clip (it is
too slow for 10,000 frames). Prints frames per second and the ratio.

Usage: python scripts/bench_import.py [--frames 1000 10000] [--baseline-frames 200]
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import bpy  # noqa: E402

from hybrik_blender.blender.animation import import_result  # noqa: E402
from hybrik_blender.blender.character import (POSE_KEY_NAMES, SHAPE_KEY_NAMES,  # noqa: E402
                                              build_character)
from hybrik_blender.core.body.model import body_model_from_arrays, rest_joints  # noqa: E402
from hybrik_blender.core.blender_space import pose_channels  # noqa: E402
from hybrik_blender.core.body.kinematics import pose_corrective_features  # noqa: E402
from hybrik_blender.core.body.skeleton import JOINT_NAMES  # noqa: E402
from tests.conftest import synthetic_arrays  # noqa: E402
from tests.helpers import make_result, random_motion  # noqa: E402


def bulk(model, result):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    t = time.perf_counter()
    import_result(result, model, per_frame_betas=True)
    return time.perf_counter() - t


def per_frame_insert(model, result):
    """The same channels keyed the slow way: one keyframe_insert per channel per frame."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    t = time.perf_counter()
    rig, mesh = build_character(model, result.betas[0])
    from hybrik_blender.blender.character import rest_matrices
    joints = rest_joints(model, result.betas.astype(np.float64))
    quats, locs = pose_channels(rest_matrices(rig), result.rotmats, joints,
                                result.root_translation)
    corr = pose_corrective_features(result.rotmats)
    blocks = mesh.data.shape_keys.key_blocks
    for f in range(result.num_frames):
        frame = f + 1
        for i, name in enumerate(JOINT_NAMES):
            pb = rig.pose.bones[name]
            pb.rotation_quaternion = quats[f, i]
            pb.location = locs[f, i]
            pb.keyframe_insert("rotation_quaternion", frame=frame)
            pb.keyframe_insert("location", frame=frame)
        for k, name in enumerate(SHAPE_KEY_NAMES):
            blocks[name].value = result.betas[f, k]
            blocks[name].keyframe_insert("value", frame=frame)
        for k, name in enumerate(POSE_KEY_NAMES):
            blocks[name].value = corr[f, k]
            blocks[name].keyframe_insert("value", frame=frame)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--baseline-frames", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = body_model_from_arrays(synthetic_arrays(), "synthetic")
    print(f"Blender {bpy.app.version_string}; channels per frame: 24x4 quaternion + 24x3 "
          f"location + 10 shape + 207 correctives = {24 * 7 + 10 + 207}")

    def make(n):
        rng = np.random.default_rng(0)
        return make_result(random_motion(n, seed=1),
                           betas=np.tile(rng.normal(0, 1, 10), (n, 1)) + rng.normal(0, .05, (n, 10)))

    base = make(args.baseline_frames)
    t_base = per_frame_insert(model, base)
    fps_base = args.baseline_frames / t_base
    print(f"baseline keyframe_insert, {args.baseline_frames} frames: {t_base:.2f} s "
          f"= {fps_base:,.0f} frames/s")
    t_small = statistics.median(bulk(model, base) for _ in range(args.repeats))
    print(f"bulk, {args.baseline_frames} frames (same clip): {t_small:.3f} s "
          f"= {args.baseline_frames / t_small:,.0f} frames/s, {t_base / t_small:.0f}x faster")
    for n in args.frames:
        res = make(n)
        times = [bulk(model, res) for _ in range(args.repeats)]
        t = statistics.median(times)
        print(f"bulk, {n} frames: median {t:.3f} s (of {args.repeats}) = {n / t:,.0f} frames/s, "
              f"{n / t / fps_base:.0f}x the keyframe_insert rate")


if __name__ == "__main__":
    main()
