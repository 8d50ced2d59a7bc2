"""Headless jobs run through the bpy module (no Blender UI)."""
import os
import sys
import time

import bpy

from ..core.body_model import BodyModelError, load_body_model
from ..core.cleanup import cleanup_options_from_args
from ..core.result import ResultFormatError, load_result
from .animation import import_result


def run_import(args):
    t0 = time.perf_counter()
    try:
        model = load_body_model(args.smpl_model) if args.smpl_model else None
        result = load_result(args.result)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        take = import_result(result, model, per_frame_betas=args.per_frame_betas,
                             pose_correctives=not args.no_correctives,
                             cleanup=cleanup_options_from_args(args))
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
    return run_exports(args, take.rig)


def run_exports(args, rig):
    """The --fbx/--bvh/--glb exports of a take; 2 when one fails."""
    from .export import ExportError, export_bvh, export_fbx, export_glb, needs_exit_guard
    jobs = [(getattr(args, "fbx", None), export_fbx,
             {"preset": str(getattr(args, "fbx_preset", "generic")).upper()}),
            (getattr(args, "bvh", None), export_bvh, {}),
            (getattr(args, "glb", None), export_glb, {})]
    status = 0
    for path, func, kw in jobs:
        if not path:
            continue
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            print(f"wrote {func(path, rig, **kw)}")
        except (ExportError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
    if getattr(args, "glb", None) and needs_exit_guard():
        # bpy 4.2 crashes at interpreter exit after a glTF export
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status
