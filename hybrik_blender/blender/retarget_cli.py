"""``python -m hybrik_blender retarget``: a take's motion onto another rig.

    python -m hybrik_blender retarget TAKE.blend --target RIG.fbx|.bvh|.glb|.blend
        -o out.blend [--preset auto] [--bone-map map.json] [--root world]
        [--fbx PATH [--fbx-preset unreal]] [--bvh PATH] [--glb PATH]

TAKE.blend holds a character made by ``import``/``capture`` (SMPL or
SMPL-X). The target rig comes from a file: FBX, BVH and glTF are imported
with Blender's own importers, a .blend is searched for the armature named
``--target-name`` (or its only non-hybrik armature). The retargeted rig is
saved in the output .blend with the take, and exported as asked. Exit codes:
0 success; 2 bad input (a missing file, a rig no preset fits, a bone map
that does not fit the rig: one line on stderr names the bones; an output
that is one of the inputs); 10 the take or the rig file cannot be read; 6
the .blend or an export cannot be written.
"""
import os
import sys

from ..core import exitcodes as codes
from ..core.retarget import maps
from ..core.retarget.maps import BoneMapError

PRESET_CHOICES = ["auto"] + [p.lower() for p in maps.PRESETS]
ROOT_CHOICES = {"world": 'WORLD', "in_place": 'IN_PLACE', "none": 'NONE'}


def add_arguments(sub):
    p = sub.add_parser("retarget", help="retarget a take (.blend) onto another rig")
    p.add_argument("take", help="the .blend with the hybrik-blender character and its motion")
    p.add_argument("--target", required=True,
                   help="the rig: .fbx, .bvh, .glb/.gltf or .blend file")
    p.add_argument("--target-name", help="armature object to use from the target file")
    p.add_argument("--source", help="the character's object name (default: the newest take)")
    p.add_argument("--preset", choices=PRESET_CHOICES, default="auto",
                   help="bone names of the rig (default: detected)")
    p.add_argument("--bone-map", help="a JSON bone map (Save Bone Map in the panel)")
    p.add_argument("--root", choices=sorted(ROOT_CHOICES), default="world",
                   help="root motion: world (default), in_place or none")
    p.add_argument("-o", "--output", required=True, help="the .blend to write")
    p.add_argument("--fbx", metavar="PATH", help="also export the rig as FBX")
    p.add_argument("--fbx-preset", choices=("generic", "unity", "unreal"), default="generic")
    p.add_argument("--bvh", metavar="PATH", help="also export the rig as BVH")
    p.add_argument("--glb", metavar="PATH", help="also export the rig as binary glTF")
    return p


def _fail(msg, code=codes.EXIT_USAGE):
    print(f"error: {msg}", file=sys.stderr)
    return code


class _Unreadable(Exception):
    """An input file that its reader cannot read (exit 10)."""


def _load_target(path, name):
    import bpy

    from .retarget import RetargetError, source_kind
    ext = os.path.splitext(path)[1].lower()
    before = set(bpy.data.objects)
    if ext not in (".fbx", ".bvh", ".glb", ".gltf", ".blend"):
        raise RetargetError(f"cannot read a rig from {os.path.basename(path)!r} "
                            "(.fbx, .bvh, .glb, .gltf or .blend)")
    if ext == ".blend":
        from ..core.safe_paths import same_file
        if bpy.data.filepath and same_file(path, bpy.data.filepath):
            raise RetargetError("the target .blend is the take's own file: save the rig in "
                                "another file")
    try:
        if ext == ".fbx":
            bpy.ops.import_scene.fbx(filepath=path)
        elif ext == ".bvh":
            bpy.ops.import_anim.bvh(filepath=path)
        elif ext in (".glb", ".gltf"):
            bpy.ops.import_scene.gltf(filepath=path)
        else:
            with bpy.data.libraries.load(path, link=False) as (src, dst):
                dst.objects = [n for n in src.objects if name is None or n == name]
            for ob in dst.objects:
                if ob is not None and ob.users_collection == ():
                    bpy.context.scene.collection.objects.link(ob)
    except (RuntimeError, OSError, ValueError, KeyError, IndexError, AttributeError,
            TypeError, UnicodeDecodeError, AssertionError) as exc:
        # Blender's importers raise whatever a damaged file makes them raise
        text = str(exc).strip().splitlines()
        raise _Unreadable(f"cannot read the rig {os.path.basename(path)}: "
                          f"{text[-1] if text else type(exc).__name__}") from None
    new = [o for o in bpy.data.objects if o not in before and o.type == 'ARMATURE'
           and source_kind(o) is None]
    if name is not None:
        new = [o for o in new if o.name == name]
    if not new:
        raise RetargetError(f"no armature {name + ' ' if name else ''}in {path}")
    if len(new) > 1:
        raise RetargetError(f"{path} has several armatures ({', '.join(o.name for o in new)}): "
                            "pick one with --target-name")
    return new[0]


def run(args):
    import bpy

    from .retarget import RetargetError, find_source_rig, retarget, source_kind
    for path in (args.take, args.target, args.bone_map):
        if path and not os.path.exists(path):
            return _fail(f"'{path}' does not exist")
    try:
        bpy.ops.wm.open_mainfile(filepath=os.path.abspath(args.take))
    except RuntimeError as exc:
        text = str(exc).strip().splitlines()
        return _fail(f"cannot open {args.take}: {text[-1] if text else exc}", codes.EXIT_RESULT)
    try:
        source = bpy.data.objects.get(args.source) if args.source else \
            find_source_rig(bpy.context)
        if source is None or source_kind(source) is None:
            raise RetargetError(f"no hybrik-blender character in {args.take}")
        target = _load_target(os.path.abspath(args.target), args.target_name)
        mapping, preset = None, args.preset.upper()
        if args.bone_map:
            mapping, preset = maps.load_map(args.bone_map)[1], 'CUSTOM'
        rep = retarget(source, target, preset=preset, mapping=mapping,
                       root_motion=ROOT_CHOICES[args.root])
    except _Unreadable as exc:
        return _fail(str(exc), codes.EXIT_RESULT)
    except (RetargetError, BoneMapError, OSError, UnicodeDecodeError) as exc:
        return _fail(str(exc))
    from ..core.safe_paths import PathRefused
    from .files import save_blend
    try:
        save_blend(args.output)
    except (OSError, RuntimeError, PathRefused) as exc:
        return _fail(f"cannot write {args.output}: {exc}", codes.EXIT_WRITE)
    print(f"wrote {args.output}: {source.name} onto {target.name} ({rep.preset}, "
          f"{len(rep.mapping)} bones, frames {rep.frame_start}-{rep.frame_end}, "
          f"scale {rep.scale:.3g}) as {rep.action.name}")
    from .headless import run_exports
    return run_exports(args, target)
