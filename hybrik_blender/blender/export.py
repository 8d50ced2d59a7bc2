"""Export an animated armature (and its skinned meshes) for game engines.

* FBX presets:
  - GENERIC: Blender's FBX axes (-Z forward, Y up), units as Blender writes
    them by default.
  - UNITY: the same axes, with the metre unit written into the file
    (``FBX_SCALE_ALL``) so objects come in at scale 1.
  - UNREAL: Unreal works in centimetres. Blender's default writes metres
    under a x100 scaled armature node, and Unreal then reads root motion 100x
    off. This preset exports a temporary copy whose bones, meshes and
    location keys are scaled x100 (centimetres, no object scale) and declares
    the file unit as centimetres (``FBX_SCALE_ALL`` with global scale 0.01
    writes UnitScaleFactor = 1 without touching the data).
  All: no leaf bones, no curve simplification (it adds jitter), one take:
  the armature's active action only (no NLA strips, not every action).
  The FBX take is named after the action.
* BVH of the armature alone (Blender's exporter keeps Euler angles
  continuous from frame to frame).
* glTF binary (.glb) sampled at the scene fps, the active action only, the
  animation named after the action. Blender's glTF exporter turns frames
  into seconds with fps * fps_base instead of fps / fps_base, so NTSC rates
  (23.976, 29.97, 59.94: fps 24/30/60 with fps_base 1.001) come out 0.2%
  fast; the export runs at the integer rate and the sampler times in the
  written file are then set to frame / (fps / fps_base) (core/glb.py
  rewrites the GLB's accessors in place, min and max included).

Each export uses the scene frame range, set to the action's range unless
given, and restores the selection, the active object and the frame range.
Every file is written under a temporary name beside it and renamed into
place (core.safe_paths.atomic_output): a failed export never leaves half a
file where a good one was. The operators refuse a path that the open scene
reads (its .blend, movie clips, images) or that is not a regular file.
"""
import contextlib
import os

import bpy
import numpy as np

from ..core import glb
from ..core.safe_paths import PathRefused, atomic_output
from .keyframes import fcurves_of
from .panels import SubPanel

FBX_PRESETS = {
    'GENERIC': ("Generic", "Blender's default FBX axes and units"),
    'UNITY': ("Unity", "-Z forward, Y up, metres as the file unit"),
    'UNREAL': ("Unreal", "Centimetres, armature and root motion without a x100 object scale"),
}
FBX_PRESET_ITEMS = [(k, label, desc) for k, (label, desc) in FBX_PRESETS.items()]
UNREAL_SCALE = 100.0


class ExportError(RuntimeError):
    pass


def action_frame_range(rig):
    ad = rig.animation_data
    if ad is None or ad.action is None:
        raise ExportError(f"{rig.name!r} has no animation to export")
    start, end = ad.action.frame_range
    return int(round(start)), int(round(end))


def _meshes_of(rig):
    return [o for o in rig.children if o.type == 'MESH']


@contextlib.contextmanager
def _export_context(objects, frame_range):
    """Select exactly `objects` (first one active) and set the scene frame
    range; put everything back afterwards."""
    ctx = bpy.context
    scene, view_layer = ctx.scene, ctx.view_layer
    if ctx.object is not None and ctx.object.mode != 'OBJECT':
        bpy.ops.object.mode_set(mode='OBJECT')
    selected = [o for o in view_layer.objects if o.select_get()]
    active = view_layer.objects.active
    saved = (scene.frame_start, scene.frame_end, scene.frame_current)
    try:
        for o in selected:
            o.select_set(False)
        for o in objects:
            o.select_set(True)
        view_layer.objects.active = objects[0]
        scene.frame_start, scene.frame_end = frame_range
        yield
    finally:
        for o in view_layer.objects:
            o.select_set(o in selected)
        view_layer.objects.active = active
        scene.frame_start, scene.frame_end = saved[:2]
        scene.frame_set(saved[2])


def _check(rig, path):
    if rig is None or rig.type != 'ARMATURE':
        raise ExportError("select an armature to export")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ExportError(f"the folder {folder} does not exist")


@contextlib.contextmanager
def _written(path):
    """The temporary path to export to; renamed to `path` on success."""
    try:
        with atomic_output(path) as tmp:
            yield tmp
    except PathRefused as exc:
        raise ExportError(str(exc)) from None


def _fbx_common(path, frame_range):
    return dict(filepath=path, use_selection=True, object_types={'ARMATURE', 'MESH'},
                add_leaf_bones=False, bake_anim=True, bake_anim_use_all_bones=True,
                bake_anim_use_nla_strips=False, bake_anim_use_all_actions=False,
                bake_anim_force_startend_keying=True, bake_anim_simplify_factor=0.0,
                bake_anim_step=1.0, use_armature_deform_only=False, axis_forward='-Z',
                axis_up='Y', primary_bone_axis='Y', secondary_bone_axis='X',
                use_mesh_modifiers=False, mesh_smooth_type='FACE')


def export_fbx(path, rig, preset='GENERIC', frame_range=None, with_meshes=True):
    """Write `rig` (+ its child meshes) and its active action to FBX."""
    if preset not in FBX_PRESETS:
        raise ExportError(f"unknown FBX preset {preset!r}")
    _check(rig, path)
    frame_range = frame_range or action_frame_range(rig)
    path = os.path.abspath(path)
    if preset == 'UNREAL':
        return _export_fbx_unreal(path, rig, frame_range, with_meshes)
    objects = [rig] + (_meshes_of(rig) if with_meshes else [])
    with _written(path) as tmp:
        opts = _fbx_common(tmp, frame_range)
        if preset == 'UNITY':
            opts.update(apply_scale_options='FBX_SCALE_ALL', apply_unit_scale=True)
        else:
            opts.update(apply_scale_options='FBX_SCALE_NONE', apply_unit_scale=True)
        with _export_context(objects, frame_range), _take_named(rig.animation_data.action.name):
            bpy.ops.export_scene.fbx(**opts)
    return path


@contextlib.contextmanager
def _take_named(name):
    """Blender's FBX exporter names its one take after the scene: rename the
    scene for the export."""
    scene = bpy.context.scene
    saved = scene.name
    try:
        scene.name = name
        yield
    finally:
        scene.name = saved


def _scaled_copy(rig, with_meshes, factor):
    """Temporary copies of the rig (own armature data and action) and its
    meshes in centimetres: the object scale times `factor` is applied to the
    data, pose-bone location keys (armature units) are scaled by that same
    applied scale, and the object location by `factor`. The copies take the
    originals' names (the originals are renamed meanwhile); returns
    (collection, rig copy, mesh copies, renames to undo)."""
    coll = bpy.data.collections.new("hybrik_export_tmp")
    bpy.context.scene.collection.children.link(coll)
    originals = [rig] + (_meshes_of(rig) if with_meshes else [])
    copies = []
    for ob in originals:
        c = ob.copy()
        c.data = ob.data.copy()
        coll.objects.link(c)
        copies.append(c)
    rig_copy, meshes = copies[0], copies[1:]
    action = rig.animation_data.action.copy()
    rig_copy.animation_data.action = action
    if bpy.app.version >= (4, 4, 0):
        slot = rig.animation_data.action_slot
        rig_copy.animation_data.action_slot = action.slots[slot.identifier]
    for mc in meshes:
        mc.parent = rig_copy
        for mod in mc.modifiers:
            if mod.type == 'ARMATURE' and mod.object == rig:
                mod.object = rig_copy
    applied = float(rig.scale[0]) * factor
    if abs(applied - 1.0) > 1e-9:
        for fc in fcurves_of(rig_copy):
            if fc.data_path.startswith("pose.bones[") and fc.data_path.endswith(".location"):
                n = len(fc.keyframe_points)
                for attr in ("co", "handle_left", "handle_right"):
                    co = np.empty(2 * n, np.float32)
                    fc.keyframe_points.foreach_get(attr, co)
                    co[1::2] *= applied
                    fc.keyframe_points.foreach_set(attr, co)
                fc.update()
    view_layer = bpy.context.view_layer
    for o in bpy.context.scene.objects:
        o.select_set(False)
    rig_copy.scale = rig_copy.scale * factor
    rig_copy.location = rig_copy.location * factor
    for o in copies:
        o.select_set(True)
    view_layer.objects.active = rig_copy
    bpy.ops.object.transform_apply(location=False, rotation=False, scale=True,
                                   properties=False)
    renames = []
    for ob, c in zip(originals, copies):
        for orig, copy in ((ob, c), (ob.data, c.data)):
            name = orig.name
            orig.name = name + ".hybrik_tmp"
            copy.name = name
            renames.append((orig, name))
    return coll, rig_copy, meshes, renames


def _export_fbx_unreal(path, rig, frame_range, with_meshes):
    ctx = bpy.context
    selected = [o for o in ctx.view_layer.objects if o.select_get()]
    active = ctx.view_layer.objects.active
    take = rig.animation_data.action.name
    coll, rig_copy, meshes, renames = _scaled_copy(rig, with_meshes, UNREAL_SCALE)
    try:
        with _written(path) as tmp:
            opts = _fbx_common(tmp, frame_range)
            opts.update(apply_scale_options='FBX_SCALE_ALL', apply_unit_scale=True,
                        global_scale=1.0 / UNREAL_SCALE)
            with _export_context([rig_copy] + meshes, frame_range), _take_named(take):
                bpy.ops.export_scene.fbx(**opts)
    finally:
        action = rig_copy.animation_data.action
        datas = [rig_copy.data] + [m.data for m in meshes]
        for o in [rig_copy] + meshes:
            bpy.data.objects.remove(o)
        for d in datas:
            if d.users == 0:
                (bpy.data.armatures if isinstance(d, bpy.types.Armature)
                 else bpy.data.meshes).remove(d)
        for ob, name in renames:
            ob.name = name
        if action.users == 0:
            bpy.data.actions.remove(action)
        bpy.data.collections.remove(coll)
        ctx.view_layer.update()
        for o in ctx.scene.objects:
            o.select_set(o in selected)
        ctx.view_layer.objects.active = active
    return path


def export_bvh(path, rig, frame_range=None):
    """Write the armature's motion as BVH (native rotation orders)."""
    _check(rig, path)
    frame_range = frame_range or action_frame_range(rig)
    path = os.path.abspath(path)
    with _written(path) as tmp, _export_context([rig], frame_range):
        bpy.ops.export_anim.bvh(filepath=tmp, frame_start=frame_range[0],
                                frame_end=frame_range[1], rotate_mode='NATIVE',
                                root_transform_only=False, global_scale=1.0)
    return path


def export_glb(path, rig, frame_range=None, with_meshes=True):
    """Write a binary glTF of the rig (+ meshes) with its active action,
    sampled at every frame at the scene fps."""
    _check(rig, path)
    frame_range = frame_range or action_frame_range(rig)
    path = os.path.abspath(path)
    objects = [rig] + (_meshes_of(rig) if with_meshes else [])
    render = bpy.context.scene.render
    fps, fps_base = render.fps, render.fps_base
    with _written(path) as tmp:
        _export_glb(tmp, rig, objects, frame_range, render, fps, fps_base)
    return path


def _export_glb(path, rig, objects, frame_range, render, fps, fps_base):
    try:
        render.fps_base = 1.0  # the exporter's seconds are then frame / fps exactly
        with _export_context(objects, frame_range):
            bpy.ops.export_scene.gltf(filepath=path, export_format='GLB', use_selection=True,
                                      export_animations=True, export_skins=True,
                                      export_morph=True,
                                      export_animation_mode='ACTIVE_ACTIONS',
                                      export_force_sampling=True, export_frame_range=True,
                                      # not every action of a lone armature, only
                                      # its active one (a retargeted rig keeps
                                      # its previous action with a fake user)
                                      export_anim_single_armature=False,
                                      export_frame_step=1, export_anim_slide_to_zero=False,
                                      export_optimize_animation_size=False, export_yup=True)
    finally:
        render.fps, render.fps_base = fps, fps_base
    glb.fix_animation_times(path, exported_fps=float(fps), true_fps=fps / fps_base,
                            name=rig.animation_data.action.name)


# ---------------------------------------------------------------------------
# operators

from bpy.props import BoolProperty, EnumProperty, StringProperty  # noqa: E402
from bpy_extras.io_utils import ExportHelper  # noqa: E402


def _target_rig(context):
    ob = context.active_object
    if ob is not None and ob.type == 'MESH' and ob.parent is not None \
            and ob.parent.type == 'ARMATURE':
        ob = ob.parent
    return ob if ob is not None and ob.type == 'ARMATURE' else None


class _ExportOperator(ExportHelper):
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        return _target_rig(context) is not None

    def run(self, context, func, **kw):
        from .files import check_export_path
        rig = _target_rig(context)
        try:
            check_export_path(bpy.path.abspath(self.filepath))
            path = func(bpy.path.abspath(self.filepath), rig, **kw)
        except (ExportError, RuntimeError, PathRefused, OSError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        self.report({'INFO'}, f"exported {rig.name} to {path}")
        return {'FINISHED'}


class HYBRIK_OT_export_fbx(bpy.types.Operator, _ExportOperator):
    """Export the active armature, its meshes and its action as FBX for a game engine"""
    bl_idname = "hybrik.export_fbx"
    bl_label = "Export FBX"
    filename_ext = ".fbx"
    filter_glob: StringProperty(default="*.fbx", options={'HIDDEN'})
    preset: EnumProperty(name="Preset", items=FBX_PRESET_ITEMS, default='GENERIC')
    with_meshes: BoolProperty(name="Meshes", default=True,
                              description="Include the armature's child meshes")

    def execute(self, context):
        return self.run(context, export_fbx, preset=self.preset, with_meshes=self.with_meshes)


class HYBRIK_OT_export_bvh(bpy.types.Operator, _ExportOperator):
    """Export the active armature's action as BVH"""
    bl_idname = "hybrik.export_bvh"
    bl_label = "Export BVH"
    filename_ext = ".bvh"
    filter_glob: StringProperty(default="*.bvh", options={'HIDDEN'})

    def execute(self, context):
        return self.run(context, export_bvh)


class HYBRIK_OT_export_glb(bpy.types.Operator, _ExportOperator):
    """Export the active armature, its meshes and its action as binary glTF at the scene fps"""
    bl_idname = "hybrik.export_glb"
    bl_label = "Export glTF (.glb)"
    filename_ext = ".glb"
    filter_glob: StringProperty(default="*.glb", options={'HIDDEN'})
    with_meshes: BoolProperty(name="Meshes", default=True,
                              description="Include the armature's child meshes")

    def execute(self, context):
        return self.run(context, export_glb, with_meshes=self.with_meshes)


class HYBRIK_PT_export(SubPanel, bpy.types.Panel):
    bl_label = "Export"
    bl_idname = "HYBRIK_PT_export"

    def draw(self, context):
        layout = self.layout
        rig = _target_rig(context)
        layout.label(text=f"Armature: {rig.name}" if rig else "Select an armature",
                     icon='ARMATURE_DATA' if rig else 'INFO')
        col = layout.column(align=True)
        for key, (label, _) in FBX_PRESETS.items():
            col.operator(HYBRIK_OT_export_fbx.bl_idname, text=f"FBX: {label}").preset = key
        row = layout.row(align=True)
        row.operator(HYBRIK_OT_export_glb.bl_idname, text="glTF (.glb)")
        row.operator(HYBRIK_OT_export_bvh.bl_idname, text="BVH")


CLASSES = (HYBRIK_OT_export_fbx, HYBRIK_OT_export_bvh, HYBRIK_OT_export_glb, HYBRIK_PT_export)
