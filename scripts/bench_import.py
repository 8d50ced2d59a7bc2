"""Benchmark: importing a result onto a full SMPL or SMPL-X character in Blender.

Bulk path (the add-on's), all keyed per frame through keyframe_points.add +
foreach_set:

* SMPL: 24 bone quaternions + locations, 10 shape keys and 207 pose
  correctives (per-frame shape, the heaviest import);
* SMPL-X: 55 bone quaternions (body, jaw, eyes, fingers), 486 correctives and
  10 expression keys, once with the clip's shape (the default import: only
  the root and the face bones that expressions shift get locations) and once
  with per-frame shape (55 locations, 10 shape keys and the children's key
  per frame too).

Baseline, measured in the same run: the per-frame ``keyframe_insert`` way
that other SMPL bridges use, with the same channels, on a shorter clip (it
is too slow for 10,000 frames). Prints frames per second, the ratio, and the
issue's SMPL-X gate (10,000 frames in at most 4 s).

Usage: python scripts/bench_import.py [--frames 1000 10000] [--baseline-frames 200]
       [--baseline-frames-x 40] [--models smpl smplx]
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
from hybrik_blender.blender.character import (EXPRESSION_KEY_NAMES, KID_KEY_NAME,  # noqa: E402
                                              SHAPE_KEY_NAMES, bone_names, build_character,
                                              pose_key_names, rest_matrices)
from hybrik_blender.core.blender_space import pose_channels  # noqa: E402
from hybrik_blender.core.body.kinematics import pose_corrective_features  # noqa: E402
from hybrik_blender.core.body.model import (body_model_from_arrays, load_body_model,  # noqa: E402
                                            model_joints)
from hybrik_blender.core.body.pose import smplx_rotmats  # noqa: E402
from hybrik_blender.core.body.skeleton import SMPLX_PARENTS  # noqa: E402
from tests.conftest import (SYNTHETIC_SMPLX_KID, SYNTHETIC_SMPLX_MODEL,  # noqa: E402
                            synthetic_arrays)
from tests.helpers import (make_result, make_smplx_result, random_motion,  # noqa: E402
                           random_motion_x)

SMPLX_GATE_S = 4.0


def bulk(model, result, **kw):
    """Wall and CPU seconds of one import (CPU time is what a loaded machine
    distorts least), and the number of keys written."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    t, c = time.perf_counter(), time.process_time()
    take = import_result(result, model, **kw)
    return time.perf_counter() - t, take.num_keys, time.process_time() - c


def per_frame_insert(model, result):
    """The same channels keyed the slow way: one keyframe_insert per channel
    per frame (bone quaternions and locations, shape, kid, expression and
    corrective keys)."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    t = time.perf_counter()
    kid = result.kid if model.is_smplx and result.kid is not None else None
    rig, mesh = build_character(model, result.betas[0],
                                kid=0.0 if kid is None else float(kid[0]))
    betas = result.betas.astype(np.float64)
    if model.is_smplx:
        rot = smplx_rotmats(result)
        joints = model_joints(model, betas, result.expression, kid)
        extra = {"parents": SMPLX_PARENTS}
    else:
        rot = result.rotmats.astype(np.float64)
        joints = model_joints(model, betas)
        extra = {}
    quats, locs = pose_channels(rest_matrices(rig), rot, joints, result.root_translation,
                                **extra)
    channels = [(SHAPE_KEY_NAMES, result.betas)]
    if kid is not None:
        channels.append(((KID_KEY_NAME,), kid[:, None]))
    if model.is_smplx:
        channels.append((EXPRESSION_KEY_NAMES, result.expression))
    channels.append((pose_key_names(model.model_type), pose_corrective_features(rot)))
    blocks = mesh.data.shape_keys.key_blocks
    names = bone_names(rig)
    for f in range(result.num_frames):
        frame = f + 1
        for i, name in enumerate(names):
            pb = rig.pose.bones[name]
            pb.rotation_quaternion = quats[f, i]
            pb.location = locs[f, i]
            pb.keyframe_insert("rotation_quaternion", frame=frame)
            pb.keyframe_insert("location", frame=frame)
        for keys, values in channels:
            for k, name in enumerate(keys):
                blocks[name].value = values[f, k]
                blocks[name].keyframe_insert("value", frame=frame)
    return time.perf_counter() - t


def make_smpl(n):
    rng = np.random.default_rng(0)
    return make_result(random_motion(n, seed=1),
                       betas=np.tile(rng.normal(0, 1, 10), (n, 1)) + rng.normal(0, .05, (n, 10)))


def make_smplx(n):
    rng = np.random.default_rng(0)
    return make_smplx_result(random_motion_x(n, seed=1),
                             betas=np.tile(rng.normal(0, 1, 10), (n, 1))
                             + rng.normal(0, .05, (n, 10)),
                             kid=np.clip(0.2 + rng.normal(0, .02, n), 0, 1))


def run(label, model, make, frames, baseline_frames, repeats, configs, gate=None):
    base = make(baseline_frames)
    t_base = per_frame_insert(model, base)
    fps_base = baseline_frames / t_base
    print(f"[{label}] baseline keyframe_insert, {baseline_frames} frames: {t_base:.2f} s "
          f"= {fps_base:,.0f} frames/s")
    cname, ckw = configs[-1]
    t_small = statistics.median(bulk(model, base, **ckw)[0] for _ in range(repeats))
    print(f"[{label}] bulk ({cname}), {baseline_frames} frames (same clip): {t_small:.3f} s "
          f"= {baseline_frames / t_small:,.0f} frames/s, {t_base / t_small:.0f}x faster")
    for n in frames:
        res = make(n)
        for cname, ckw in configs:
            runs = [bulk(model, res, **ckw) for _ in range(repeats)]
            t = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[2] for r in runs)
            keys = runs[0][1]
            verdict = ""
            if gate is not None and n >= 10000:
                verdict = f"; gate <= {gate:.0f} s: {'PASS' if t <= gate else 'FAIL'}"
            print(f"[{label}] bulk ({cname}), {n} frames: median {t:.3f} s (of {repeats}; "
                  f"CPU {cpu:.3f} s) = "
                  f"{n / t:,.0f} frames/s, {keys / n:,.0f} keys/frame, "
                  f"{n / t / fps_base:.0f}x the keyframe_insert rate{verdict}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--baseline-frames", type=int, default=200)
    ap.add_argument("--baseline-frames-x", type=int, default=40,
                    help="baseline clip for SMPL-X (~900 channels per frame)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", choices=("smpl", "smplx"), default=["smpl", "smplx"])
    args = ap.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Blender {bpy.app.version_string}; {os.cpu_count()} CPUs, load average {load:.1f} "
          "(wall times stretch on a loaded machine; CPU times much less)")
    if "smpl" in args.models:
        model = body_model_from_arrays(synthetic_arrays(), "synthetic")
        print("[SMPL] channels per frame: 24x4 quaternion + 24x3 location + 10 shape + "
              f"207 correctives = {24 * 7 + 10 + 207}")
        run("SMPL", model, make_smpl, args.frames, args.baseline_frames, args.repeats,
            [("per-frame shape", {"per_frame_betas": True})])
    if "smplx" in args.models:
        model = load_body_model(SYNTHETIC_SMPLX_MODEL, kid_template=SYNTHETIC_SMPLX_KID)
        print("[SMPL-X] channels per frame: 55x4 quaternion + 486 correctives + 10 expression "
              "+ root and face-bone locations (clip shape); with per-frame shape also "
              f"55x3 locations + 10 shape + kid = {55 * 7 + 486 + 10 + 10 + 1}")
        run("SMPL-X", model, make_smplx, args.frames, args.baseline_frames_x, args.repeats,
            [("clip shape", {}), ("per-frame shape", {"per_frame_betas": True})],
            gate=SMPLX_GATE_S)


if __name__ == "__main__":
    main()
