"""Retarget speed: the numpy world-delta retarget vs constraints + nla.bake.

    python scripts/bench_retarget.py [--frames 10000] [--bake-frames 1000]
                                     [--rigs mixamo_like,lafan1_bvh] [--repeat 3]

Imports a random clip onto the synthetic SMPL model and, for each target,
times ``hybrik_blender.blender.retarget.retarget`` on the whole clip against
the usual constraint set-up (Copy Rotation per mapped bone + Copy Location
on the hips, world space) baked with ``bpy.ops.nla.bake(visual_keying=True)``
on a shorter clip, measured in the same run. Targets:

* mixamo_like: a Mixamo-named rig built on the SMPL joints (cm bones, 0.01
  scale, 90 degree X turn, other proportions), quaternion bones;
* lafan1_bvh: a real-layout rig, LaFAN1's BVH layout (every bone along +X
  at rest, Euler channels) imported with Blender's BVH importer, from the
  test suite's BVH writer (tests/blender/rigs.py).

Prints frames per second for both methods and their ratio per target:
medians of --repeat runs of each, interleaved (the machine is noisy).
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import bpy  # noqa: E402

from hybrik_blender.blender.animation import import_result  # noqa: E402
from hybrik_blender.blender.retarget import resolve_bone_map, retarget  # noqa: E402
from hybrik_blender.core.body.model import load_body_model  # noqa: E402
from tests.blender import rigs  # noqa: E402
from tests.blender.test_retarget import (MIXAMO, MIXAMO_WORLD, build_rig,  # noqa: E402
                                         humanoid_bones)
from tests.conftest import SYNTHETIC_MODEL  # noqa: E402
from tests.helpers import make_result, random_motion  # noqa: E402


def setup(frames, rig="mixamo_like"):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    model = load_body_model(SYNTHETIC_MODEL)
    take = import_result(make_result(random_motion(frames, seed=1)), model,
                         pose_correctives=False, camera=False)
    if rig == "mixamo_like":
        tgt = build_rig("Armature", humanoid_bones(take.rig, MIXAMO, leg_scale=1.2,
                                                   arm_scale=0.9),
                        roll_deg=90.0, world=MIXAMO_WORLD, prefix="mixamorig:")
    else:
        tgt, _ = rigs.import_bvh("LAFAN1")
    return take, tgt


def bench_numpy(frames, rig):
    take, tgt = setup(frames, rig)
    t0 = time.perf_counter()
    rep = retarget(take.rig, tgt)
    dt = time.perf_counter() - t0
    return dt, rep.num_frames


def bench_bake(frames, rig):
    take, tgt = setup(frames, rig)
    mapping = resolve_bone_map(tgt)[1]
    t0 = time.perf_counter()
    for smpl, name in mapping.items():
        pb = tgt.pose.bones[name]
        c = pb.constraints.new('COPY_ROTATION')
        c.target, c.subtarget = take.rig, smpl
        c.target_space = c.owner_space = 'WORLD'
        if smpl == "pelvis":
            c = pb.constraints.new('COPY_LOCATION')
            c.target, c.subtarget = take.rig, smpl
            c.target_space = c.owner_space = 'WORLD'
    view_layer = bpy.context.view_layer
    view_layer.objects.active = tgt
    tgt.select_set(True)
    bpy.ops.object.mode_set(mode='POSE')
    bpy.ops.pose.select_all(action='SELECT')
    bpy.ops.nla.bake(frame_start=take.frame_start, frame_end=take.frame_end,
                     only_selected=True, visual_keying=True, clear_constraints=True,
                     bake_types={'POSE'})
    bpy.ops.object.mode_set(mode='OBJECT')
    return time.perf_counter() - t0, frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10000)
    parser.add_argument("--bake-frames", type=int, default=1000)
    parser.add_argument("--rigs", default="mixamo_like,lafan1_bvh")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (medians)")
    args = parser.parse_args()
    print(f"bpy {bpy.app.version_string}")
    for rig in args.rigs.split(","):
        runs_numpy, runs_bake = [], []
        for _ in range(max(args.repeat, 1)):
            runs_numpy.append(bench_numpy(args.frames, rig))
            runs_bake.append(bench_bake(args.bake_frames, rig))
        dt, n = sorted(runs_numpy)[len(runs_numpy) // 2]
        dt_b, n_b = sorted(runs_bake)[len(runs_bake) // 2]
        fps_numpy = n / dt
        print(f"[{rig}] numpy retarget : {n:6d} frames in {dt:7.3f} s = {fps_numpy:10.0f} "
              f"frames/s (median of {len(runs_numpy)}; all: "
              f"{', '.join(f'{t:.3f}' for t, _ in runs_numpy)} s)")
        fps_bake = n_b / dt_b
        print(f"[{rig}] constraints + nla.bake: {n_b:6d} frames in {dt_b:7.3f} s = "
              f"{fps_bake:10.0f} frames/s (median; all: "
              f"{', '.join(f'{t:.3f}' for t, _ in runs_bake)} s)")
        print(f"[{rig}] speed-up: {fps_numpy / fps_bake:.0f}x; {args.frames} frames in "
              f"{args.frames / fps_numpy:.2f} s (target: >= 20x and <= 5 s)")
        sys.stdout.flush()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
