"""Add-on registration: preferences, the import operator and the sidebar panel."""
import os

import bpy
from bpy.props import BoolProperty, PointerProperty, StringProperty

from ..core.body_model import BodyModelError, load_body_model
from ..core.result import ResultFormatError, load_result
from . import export, retarget_ops
from .animation import import_result

ADDON_ID = __package__.rsplit(".", 1)[0]


class HYBRIK_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    body_model_path: StringProperty(
        name="Body model", subtype='FILE_PATH',
        description="SMPL neutral model (.pkl or .npz), or a HybrIK checkpoint (.pth) "
                    "with its embedded SMPL buffers")

    def draw(self, context):
        self.layout.prop(self, "body_model_path")


class HYBRIK_PG_settings(bpy.types.PropertyGroup):
    per_frame_betas: BoolProperty(
        name="Per-frame shape", default=False,
        description="Key the body shape on every frame instead of the clip's average shape")
    pose_correctives: BoolProperty(
        name="Pose correctives", default=True,
        description="Add and key SMPL's 207 pose-corrective shape keys")


def preferences(context):
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon else None


class HYBRIK_OT_import_result(bpy.types.Operator):
    """Import a hybrik-blender result file (.npz) as an animated SMPL character"""
    bl_idname = "hybrik.import_result"
    bl_label = "Import Result"
    bl_options = {'REGISTER', 'UNDO'}

    filepath: StringProperty(subtype='FILE_PATH')
    filter_glob: StringProperty(default="*.npz", options={'HIDDEN'})
    body_model_path: StringProperty(
        name="Body model", subtype='FILE_PATH',
        description="Overrides the body model set in the preferences")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {'RUNNING_MODAL'}

    def execute(self, context):
        prefs = preferences(context)
        model_path = self.body_model_path or (prefs.body_model_path if prefs else "")
        if not model_path:
            self.report({'ERROR'}, "Set the SMPL body model in the add-on preferences")
            return {'CANCELLED'}
        settings = context.scene.hybrik
        try:
            model = load_body_model(bpy.path.abspath(model_path))
            result = load_result(bpy.path.abspath(self.filepath))
            if context.object and context.object.mode != 'OBJECT':
                bpy.ops.object.mode_set(mode='OBJECT')
            take = import_result(result, model, per_frame_betas=settings.per_frame_betas,
                                 pose_correctives=settings.pose_correctives)
        except (BodyModelError, ResultFormatError) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        note = "" if result.complete else " (partial result)"
        self.report({'INFO'}, f"Imported {os.path.basename(self.filepath)}{note}: "
                              f"frames {take.frame_start}-{take.frame_end} on {take.rig.name}")
        return {'FINISHED'}


class HYBRIK_PT_main(bpy.types.Panel):
    bl_label = "HybrIK Mocap"
    bl_idname = "HYBRIK_PT_main"
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "HybrIK"

    def draw(self, context):
        layout = self.layout
        settings = context.scene.hybrik
        prefs = preferences(context)
        if prefs is not None and not prefs.body_model_path:
            layout.label(text="Set the body model in Preferences", icon='ERROR')
        col = layout.column(align=True)
        col.prop(settings, "per_frame_betas")
        col.prop(settings, "pose_correctives")
        layout.operator(HYBRIK_OT_import_result.bl_idname, icon='IMPORT')


CLASSES = (HYBRIK_AP_preferences, HYBRIK_PG_settings, HYBRIK_OT_import_result, HYBRIK_PT_main,
           *retarget_ops.CLASSES, *export.CLASSES)


def register():
    for cls in CLASSES:
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
        bpy.utils.register_class(cls)
    bpy.types.Scene.hybrik = PointerProperty(type=HYBRIK_PG_settings)
    retarget_ops.register_properties()


def unregister():
    retarget_ops.unregister_properties()
    if hasattr(bpy.types.Scene, "hybrik"):
        del bpy.types.Scene.hybrik
    for cls in reversed(CLASSES):
        if getattr(cls, "is_registered", False):
            bpy.utils.unregister_class(cls)
