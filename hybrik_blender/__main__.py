"""Command line: ``python -m hybrik_blender import RESULT --smpl-model M -o take.blend``.

Builds the animated SMPL character from a result file into a .blend, through
Blender's ``bpy`` module. Exit codes: 0 success, 2 bad input (the one-line
message on stderr says what), 1 unexpected failure.
"""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m hybrik_blender",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="build a .blend from a result file")
    imp.add_argument("result", help="result file (.npz) written by the worker")
    imp.add_argument("--smpl-model",
                     help="SMPL model (.pkl/.npz) or HybrIK checkpoint (.pth); without one, "
                          "an armature on the built-in average skeleton")
    imp.add_argument("-o", "--output", required=True, help="the .blend to write")
    imp.add_argument("--per-frame-betas", action="store_true",
                     help="key the shape per frame (default: the clip's average shape)")
    imp.add_argument("--no-correctives", action="store_true",
                     help="skip the 207 pose-corrective shape keys")
    imp.add_argument("--fbx", metavar="PATH", help="also export the take as FBX")
    imp.add_argument("--fbx-preset", choices=("generic", "unity", "unreal"),
                     default="generic", help="FBX axes and units (default: generic)")
    imp.add_argument("--bvh", metavar="PATH", help="also export the take as BVH")
    imp.add_argument("--glb", metavar="PATH", help="also export the take as binary glTF")
    from .core.cleanup import add_cleanup_arguments
    add_cleanup_arguments(imp, default_on=True)
    args = parser.parse_args(argv)
    from .blender.headless import run_import
    return run_import(args)


if __name__ == "__main__":
    sys.exit(main())
