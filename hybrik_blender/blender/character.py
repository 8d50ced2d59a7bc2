"""Build an SMPL character: armature, skinned mesh, shape and pose keys.

All geometry is converted from SMPL's frame with SMPL_TO_BLENDER (see
core/blender_space.py for the conventions and the bone maths).
"""
import bpy
import numpy as np

from ..core.body import model as bm
from ..core.blender_space import SMPL_TO_BLENDER, rest_bones
from ..core.body.skeleton import JOINT_NAMES, NUM_BETAS, NUM_POSE_CORRECTIVES, PARENTS

SHAPE_KEY_NAMES = tuple(f"Shape{i:03d}" for i in range(NUM_BETAS))
POSE_KEY_NAMES = tuple(f"Pose{i:03d}" for i in range(NUM_POSE_CORRECTIVES))
BETA_SLIDER = 10.0      # Blender's largest allowed slider range
CORRECTIVE_SLIDER = 2.0  # entries of R - I lie in [-2, 2]


def _link(obj, collection):
    (collection or bpy.context.scene.collection).objects.link(obj)


def build_armature(name, joints29, collection=None):
    """An armature object with the 24 SMPL bones, rest pose at joints29
    (SMPL frame). Bones are unconnected so pose locations always apply."""
    heads, tails, z_hint = rest_bones(joints29)
    data = bpy.data.armatures.new(name)
    data.display_type = 'OCTAHEDRAL'
    rig = bpy.data.objects.new(name, data)
    rig.show_in_front = True
    _link(rig, collection)

    view_layer = bpy.context.view_layer
    prev_active = view_layer.objects.active
    prev_mode = prev_active.mode if prev_active else 'OBJECT'
    if prev_active is not None and prev_mode != 'OBJECT':
        bpy.ops.object.mode_set(mode='OBJECT')
    view_layer.objects.active = rig
    bpy.ops.object.mode_set(mode='EDIT')
    ebs = data.edit_bones
    for i, jname in enumerate(JOINT_NAMES):
        eb = ebs.new(jname)
        eb.head = heads[i]
        eb.tail = tails[i]
        eb.align_roll(z_hint[i])
    for i, jname in enumerate(JOINT_NAMES):
        if PARENTS[i] >= 0:
            ebs[jname].parent = ebs[JOINT_NAMES[PARENTS[i]]]
            ebs[jname].use_connect = False
    bpy.ops.object.mode_set(mode='OBJECT')
    view_layer.objects.active = prev_active if prev_active is not None else rig
    for pb in rig.pose.bones:
        pb.rotation_mode = 'QUATERNION'
    return rig


def build_mesh(name, model, rig, betas, pose_correctives=True, collection=None):
    """Skinned SMPL mesh parented to `rig`, with shape keys Shape000-009 set
    to `betas` and (optionally) the 207 pose-corrective keys Pose000-206."""
    conv = SMPL_TO_BLENDER.T
    verts = model.v_template @ conv
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts.tolist(), [], model.faces.tolist())
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    _link(obj, collection)
    obj.parent = rig

    weights = model.weights
    for j, jname in enumerate(JOINT_NAMES):
        vg = obj.vertex_groups.new(name=jname)
        idx = np.nonzero(weights[:, j] > 0)[0]
        for v, w in zip(idx.tolist(), weights[idx, j].tolist()):
            vg.add([v], w, 'REPLACE')
    mod = obj.modifiers.new("Armature", 'ARMATURE')
    mod.object = rig
    mod.use_vertex_groups = True
    mod.use_deform_preserve_volume = False

    obj.shape_key_add(name="Basis", from_mix=False)
    keys = [(n, model.shapedirs[:, :, i], BETA_SLIDER) for i, n in enumerate(SHAPE_KEY_NAMES)]
    if pose_correctives:
        keys += [(n, model.posedirs[:, :, i], CORRECTIVE_SLIDER)
                 for i, n in enumerate(POSE_KEY_NAMES)]
    for kname, offsets, slider in keys:
        kb = obj.shape_key_add(name=kname, from_mix=False)
        kb.data.foreach_set("co", ((model.v_template + offsets) @ conv).ravel())
        kb.slider_min, kb.slider_max = -slider, slider
        kb.value = 0.0
    set_betas(obj, betas)
    return obj


def set_betas(mesh_obj, betas):
    blocks = mesh_obj.data.shape_keys.key_blocks
    for name, value in zip(SHAPE_KEY_NAMES, np.asarray(betas, float)):
        blocks[name].value = float(value)


def build_character(model, betas, name="SMPL", pose_correctives=True, collection=None):
    """Armature + mesh for `model` with rest joints and shape keys at `betas`.

    Returns (armature object, mesh object); names are made unique by Blender,
    so a second call never touches the first character."""
    betas = np.asarray(betas, dtype=np.float64)[:NUM_BETAS]
    joints29 = bm.rest_joints_29(model, betas)
    rig = build_armature(name, joints29, collection)
    mesh = build_mesh(f"{rig.name}_body", model, rig, betas, pose_correctives, collection)
    rig["hybrik_rest_betas"] = [float(b) for b in betas]
    rig["hybrik_body_model"] = model.source
    return rig, mesh


def rest_matrices(rig):
    """(24, 4, 4) armature-space rest matrices of the SMPL bones."""
    bones = rig.data.bones
    return np.array([np.array(bones[n].matrix_local) for n in JOINT_NAMES])
