"""Headless jobs run through the bpy module (no Blender UI)."""
import os
import sys
import time

import bpy

from ..core.body_model import BodyModelError, load_body_model
from ..core.result import ResultFormatError, load_result
from .animation import import_result


def run_import(args):
    t0 = time.perf_counter()
    try:
        model = load_body_model(args.smpl_model)
        result = load_result(args.result)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        take = import_result(result, model, per_frame_betas=args.per_frame_betas,
                             pose_correctives=not args.no_correctives)
    except (BodyModelError, ResultFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = os.path.abspath(args.output)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=out, check_existing=False)
    partial = "" if result.complete else " (partial result)"
    print(f"wrote {args.output}: {take.rig.name}, frames {take.frame_start}-{take.frame_end} "
          f"at {result.fps:g} fps, {take.num_keys} keys{partial}, "
          f"{time.perf_counter() - t0:.1f} s")
    return 0
