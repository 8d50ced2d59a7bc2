"""Retarget operators and their sub-panel (settings live in scene.hybrik_retarget)."""
import os

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, PointerProperty,
                       StringProperty)
from bpy_extras.io_utils import ExportHelper, ImportHelper

from ..core.body.skeleton import HAND_JOINT_NAMES, JOINT_NAMES
from ..core.retarget import maps
from ..core.retarget.maps import BoneMapError
from .panels import SubPanel
from .retarget import (PRESET_ITEMS, ROOT_ITEMS, RetargetError, constraint_table,
                       find_source_rig, guess_bone_map, retarget)


def _is_armature(self, obj):
    return obj.type == 'ARMATURE'


def _edited(self, context):
    """A row edited by hand makes the map the one used."""
    props = getattr(context.scene, "hybrik_retarget", None)
    if props is not None and not props.filling and props.preset != 'CUSTOM':
        props.preset = 'CUSTOM'


class HYBRIK_PG_bone_pair(bpy.types.PropertyGroup):
    source: StringProperty(name="SMPL bone")
    target: StringProperty(name="Target bone", update=_edited,
                           description="Bone of the target armature (empty: not mapped)")


def ensure_rows(props):
    """One row per source bone (SMPL and SMPL-X), empty where unmapped."""
    have = [p.source for p in props.bone_map]
    if have == list(maps.BONE_NAMES):
        return
    old = {p.source: p.target for p in props.bone_map}
    fill_map(props, old)


def _target_changed(self, context):
    ensure_rows(self)


class HYBRIK_PG_retarget(bpy.types.PropertyGroup):
    source: PointerProperty(
        type=bpy.types.Object, poll=_is_armature, name="Source",
        description="The imported HybrIK (SMPL) armature; empty: the active or newest one")
    target: PointerProperty(type=bpy.types.Object, poll=_is_armature, name="Target",
                            description="The armature that receives the motion",
                            update=_target_changed)
    preset: EnumProperty(name="Bone map", items=PRESET_ITEMS, default='AUTO')
    rotation_mode: EnumProperty(
        name="Rotations", default='KEEP',
        items=[('KEEP', "Keep bone modes", "Key each bone in the rotation mode it uses"),
               ('QUATERNION', "Quaternions", "Switch the mapped pose bones to quaternions")])
    root_motion: EnumProperty(name="Root", items=ROOT_ITEMS, default='WORLD')
    bone_map: CollectionProperty(type=HYBRIK_PG_bone_pair)
    filling: BoolProperty(options={'HIDDEN', 'SKIP_SAVE'})
    show_map: BoolProperty(name="Bone Map", default=True)
    show_hands: BoolProperty(name="Fingers and Face", default=False,
                             description="Rows for SMPL-X's fingers, jaw and eyes")


def settings(context):
    return context.scene.hybrik_retarget


def custom_map(props):
    return {p.source: p.target for p in props.bone_map if p.target}


def _source(context, props):
    src = props.source or find_source_rig(context, exclude=props.target)
    if src is None:
        raise RetargetError("no HybrIK armature in the scene: import a result first")
    return src


class HYBRIK_OT_retarget_pick_target(bpy.types.Operator):
    """Use the active armature as the retarget target"""
    bl_idname = "hybrik.retarget_pick_target"
    bl_label = "Use Active"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        ob = context.active_object
        if ob is None or ob.type != 'ARMATURE':
            self.report({'ERROR'}, "make the target armature the active object")
            return {'CANCELLED'}
        props = settings(context)
        if ob == props.source or (props.source is None and "hybrik_source" in ob):
            self.report({'ERROR'}, f"{ob.name} is the source (a HybrIK take); pick it in the "
                                   "Target field if you really mean it")
            return {'CANCELLED'}
        props.target = ob
        return {'FINISHED'}


class HYBRIK_OT_bone_map_fill(bpy.types.Operator):
    """Fill the editable bone map: from the chosen preset, or (Auto-detect and
    Custom) from the best preset's names, then the hierarchy and geometry
    for a rig no preset knows"""
    bl_idname = "hybrik.bone_map_fill"
    bl_label = "Fill Bone Map"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        props = settings(context)
        if props.target is None:
            self.report({'ERROR'}, "pick a target armature first")
            return {'CANCELLED'}
        names = [b.name for b in props.target.data.bones]
        parents = [names.index(b.parent.name) if b.parent else -1
                   for b in props.target.data.bones]
        follows, keyable = constraint_table(props.target)
        try:
            if props.preset in ('AUTO', 'CUSTOM'):
                used, mapping = guess_bone_map(props.target)
            else:
                used = props.preset
                mapping = maps.check_map(maps.resolve_preset(used, names, parents, follows,
                                                             keyable), names)
        except (RetargetError, BoneMapError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        fill_map(props, mapping)
        props.preset = 'CUSTOM'
        label = maps.PRESETS[used]["label"] if used in maps.PRESETS else "hierarchy guess"
        missing = maps.missing_core(mapping)
        if missing:
            self.report({'WARNING'}, f"{label}: {len(mapping)} bones mapped; pick the bones for "
                                     f"{', '.join(missing)} to retarget")
        else:
            self.report({'INFO'}, f"{label}: {len(mapping)} bones mapped")
        return {'FINISHED'}


def fill_map(props, mapping):
    props.filling = True
    try:
        props.bone_map.clear()
        for name in maps.BONE_NAMES:
            item = props.bone_map.add()
            item.source = name
            item.target = mapping.get(name, "")
    finally:
        props.filling = False


class HYBRIK_OT_bone_map_save(bpy.types.Operator, ExportHelper):
    """Save the bone map as a JSON file"""
    bl_idname = "hybrik.bone_map_save"
    bl_label = "Save Bone Map"
    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={'HIDDEN'})

    def execute(self, context):
        props = settings(context)
        mapping = custom_map(props)
        if not mapping and props.target is not None and props.preset not in ('CUSTOM', 'AUTO'):
            names = [b.name for b in props.target.data.bones]
            mapping = maps.resolve_preset(props.preset, names)
        elif not mapping and props.target is not None and props.preset == 'AUTO':
            mapping = guess_bone_map(props.target)[1]
        from ..core.safe_paths import PathRefused
        from .files import check_export_path
        try:
            check_export_path(bpy.path.abspath(self.filepath), "bone map")
            maps.save_map(bpy.path.abspath(self.filepath), mapping,
                          name=os.path.splitext(os.path.basename(self.filepath))[0])
        except (BoneMapError, OSError, PathRefused) as exc:
            self.report({'ERROR'}, f"could not save the bone map: {exc}")
            return {'CANCELLED'}
        self.report({'INFO'}, f"saved {len(mapping)} bones to {self.filepath}")
        return {'FINISHED'}


class HYBRIK_OT_bone_map_load(bpy.types.Operator, ImportHelper):
    """Load a bone map from a JSON file (SMPL bone -> target bone)"""
    bl_idname = "hybrik.bone_map_load"
    bl_label = "Load Bone Map"
    bl_options = {'REGISTER', 'UNDO'}
    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={'HIDDEN'})

    def execute(self, context):
        props = settings(context)
        try:
            name, mapping = maps.load_map(self.filepath)
        except (BoneMapError, OSError, UnicodeDecodeError) as exc:
            self.report({'ERROR'}, f"could not load the bone map: {exc}")
            return {'CANCELLED'}
        fill_map(props, mapping)
        props.preset = 'CUSTOM'
        self.report({'INFO'}, f"loaded bone map {name!r} ({len(mapping)} bones)")
        return {'FINISHED'}


class HYBRIK_OT_bone_map_rows(bpy.types.Operator):
    """Show a row for every SMPL and SMPL-X bone in the bone map"""
    bl_idname = "hybrik.bone_map_rows"
    bl_label = "Edit Bone Map"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        ensure_rows(settings(context))
        return {'FINISHED'}


class HYBRIK_OT_retarget(bpy.types.Operator):
    """Retarget the HybrIK take onto the target armature as a new action"""
    bl_idname = "hybrik.retarget"
    bl_label = "Retarget"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        props = settings(context)
        try:
            if props.target is None:
                raise RetargetError("pick a target armature first")
            src = _source(context, props)
            if context.object is not None and context.object.mode != 'OBJECT':
                bpy.ops.object.mode_set(mode='OBJECT')
            mapping = custom_map(props) if props.preset == 'CUSTOM' else None
            rep = retarget(src, props.target, preset=props.preset, mapping=mapping,
                           rotation_mode=props.rotation_mode, root_motion=props.root_motion)
        except (RetargetError, BoneMapError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        self.report({'INFO'}, f"retargeted {src.name} onto {props.target.name} "
                              f"({rep.preset}, {len(rep.mapping)} bones, frames "
                              f"{rep.frame_start}-{rep.frame_end}) as {rep.action.name}")
        return {'FINISHED'}


class HYBRIK_PT_retarget(SubPanel, bpy.types.Panel):
    bl_label = "Retarget"
    bl_idname = "HYBRIK_PT_retarget"

    def draw(self, context):
        layout = self.layout
        props = settings(context)
        layout.prop(props, "source")
        row = layout.row(align=True)
        row.prop(props, "target")
        row.operator(HYBRIK_OT_retarget_pick_target.bl_idname, text="", icon='EYEDROPPER')
        layout.prop(props, "preset")
        col = layout.column(align=True)
        col.prop(props, "rotation_mode")
        col.prop(props, "root_motion")
        row = layout.row(align=True)
        row.operator(HYBRIK_OT_bone_map_fill.bl_idname, icon='BONE_DATA')
        row.operator(HYBRIK_OT_bone_map_load.bl_idname, text="", icon='FILEBROWSER')
        row.operator(HYBRIK_OT_bone_map_save.bl_idname, text="", icon='FILE_TICK')
        layout.operator(HYBRIK_OT_retarget.bl_idname, icon='ARMATURE_DATA')
        box = layout.box()
        box.prop(props, "show_map", icon='TRIA_DOWN' if props.show_map else 'TRIA_RIGHT',
                 emboss=False)
        if not props.show_map:
            return
        if props.preset != 'CUSTOM':
            box.label(text="Rows edited here make the map Custom", icon='INFO')
        rows = {p.source: p for p in props.bone_map}
        if len(rows) != len(maps.BONE_NAMES):
            box.operator(HYBRIK_OT_bone_map_rows.bl_idname, icon='ADD')
            return
        self._rows(box, props, rows, JOINT_NAMES)
        box.prop(props, "show_hands", icon='TRIA_DOWN' if props.show_hands else 'TRIA_RIGHT',
                 emboss=False)
        if props.show_hands:
            self._rows(box, props, rows, maps.FACE_NAMES + HAND_JOINT_NAMES)

    @staticmethod
    def _rows(box, props, rows, names):
        col = box.column(align=True)
        for name in names:
            item = rows[name]
            row = col.row(align=True)
            row.label(text=name)
            if props.target is not None:
                row.prop_search(item, "target", props.target.data, "bones", text="")
            else:
                row.prop(item, "target", text="")


CLASSES = (HYBRIK_PG_bone_pair, HYBRIK_PG_retarget, HYBRIK_OT_retarget_pick_target,
           HYBRIK_OT_bone_map_fill, HYBRIK_OT_bone_map_save, HYBRIK_OT_bone_map_load,
           HYBRIK_OT_bone_map_rows, HYBRIK_OT_retarget, HYBRIK_PT_retarget)


def register_properties():
    bpy.types.Scene.hybrik_retarget = PointerProperty(type=HYBRIK_PG_retarget)


def unregister_properties():
    if hasattr(bpy.types.Scene, "hybrik_retarget"):
        del bpy.types.Scene.hybrik_retarget
