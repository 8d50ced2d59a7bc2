"""Build an SMPL or SMPL-X character: armature, skinned mesh, shape and pose keys.

All geometry is converted from the model's frame with SMPL_TO_BLENDER (see
core/blender_space.py for the conventions and the bone maths).

SMPL: 24 bones named after ``JOINT_NAMES``; shape keys ``Shape000-009`` and
the 207 pose correctives ``Pose000-206``.

SMPL-X: 55 bones named after ``SMPLX_JOINT_NAMES`` (body, jaw, eyes, three
bones per finger); shape keys ``Shape000-009``, ``Kid`` (HybrIK-X's
children's direction, when the model has one), the expression keys
``Exp000-009`` and the 486 pose correctives ``Pose000-485``. Key values are
the model's coefficients themselves, so Blender's relative shape keys add
exactly the blend shapes of the model.

The armature stores its kind in ``rig["hybrik_model_type"]`` ("smpl" or
"smplx"); :func:`bone_names` reads it back.
"""
import bpy
import numpy as np

from ..core.body import model as bm
from ..core.blender_space import SMPL_TO_BLENDER, rest_bones, rest_bones_x
from ..core.body.skeleton import (JOINT_NAMES, NUM_BETAS, NUM_EXPRESSION, NUM_POSE_CORRECTIVES,
                                  PARENTS, SMPLX_JOINT_NAMES, SMPLX_NUM_POSE_CORRECTIVES,
                                  SMPLX_PARENTS)

SHAPE_KEY_NAMES = tuple(f"Shape{i:03d}" for i in range(NUM_BETAS))
POSE_KEY_NAMES = tuple(f"Pose{i:03d}" for i in range(NUM_POSE_CORRECTIVES))
SMPLX_POSE_KEY_NAMES = tuple(f"Pose{i:03d}" for i in range(SMPLX_NUM_POSE_CORRECTIVES))
EXPRESSION_KEY_NAMES = tuple(f"Exp{i:03d}" for i in range(NUM_EXPRESSION))
KID_KEY_NAME = "Kid"
BETA_SLIDER = 10.0      # Blender's largest allowed slider range
CORRECTIVE_SLIDER = 2.0  # entries of R - I lie in [-2, 2]


def _link(obj, collection):
    (collection or bpy.context.scene.collection).objects.link(obj)


def bone_names(rig):
    """The model's joint names, in joint order, for a character built here
    (rigs made before SMPL-X support are SMPL)."""
    return SMPLX_JOINT_NAMES if rig.get("hybrik_model_type") == "smplx" else JOINT_NAMES


def pose_key_names(model_type):
    return SMPLX_POSE_KEY_NAMES if model_type == "smplx" else POSE_KEY_NAMES


def _armature(name, names, parents, heads, tails, z_hint, collection, model_type):
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
    for i, jname in enumerate(names):
        eb = ebs.new(jname)
        eb.head = heads[i]
        eb.tail = tails[i]
        eb.align_roll(z_hint[i])
    for i, jname in enumerate(names):
        if parents[i] >= 0:
            ebs[jname].parent = ebs[names[parents[i]]]
            ebs[jname].use_connect = False
    bpy.ops.object.mode_set(mode='OBJECT')
    view_layer.objects.active = prev_active if prev_active is not None else rig
    for pb in rig.pose.bones:
        pb.rotation_mode = 'QUATERNION'
    rig["hybrik_model_type"] = model_type
    return rig


def build_armature(name, joints29, collection=None):
    """An armature object with the 24 SMPL bones, rest pose at joints29
    (SMPL frame). Bones are unconnected so pose locations always apply."""
    heads, tails, z_hint = rest_bones(joints29)
    return _armature(name, JOINT_NAMES, PARENTS, heads, tails, z_hint, collection, "smpl")


def build_armature_x(name, points71, collection=None):
    """An armature object with the 55 SMPL-X bones, rest pose at points71
    (55 joints + 16 tail points, model frame; see core.blender_space)."""
    heads, tails, z_hint = rest_bones_x(points71)
    return _armature(name, SMPLX_JOINT_NAMES, SMPLX_PARENTS, heads, tails, z_hint,
                     collection, "smplx")


def build_mesh(name, model, rig, betas, pose_correctives=True, collection=None,
               expressions=True, kid=0.0):
    """Skinned mesh parented to `rig`, with shape keys Shape000-009 set to
    `betas`, for SMPL-X the ``Kid`` key (set to `kid`) and the expression
    keys Exp000-009 (``expressions``), and (optionally) the pose-corrective
    keys Pose000-."""
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
    for j, jname in enumerate(model.joint_names):
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
    if model.has_kid:
        keys.append((KID_KEY_NAME, model.kid_dir, BETA_SLIDER))
    if expressions and model.num_expression:
        keys += [(n, model.expr_dirs[:, :, i], BETA_SLIDER)
                 for i, n in enumerate(EXPRESSION_KEY_NAMES[:model.num_expression])]
    if pose_correctives:
        keys += [(n, model.posedirs[:, :, i], CORRECTIVE_SLIDER)
                 for i, n in enumerate(pose_key_names(model.model_type))]
    for kname, offsets, slider in keys:
        kb = obj.shape_key_add(name=kname, from_mix=False)
        kb.data.foreach_set("co", ((model.v_template + offsets) @ conv).astype(np.float32).ravel())
        kb.slider_min, kb.slider_max = -slider, slider
        kb.value = 0.0
    set_betas(obj, betas)
    if model.has_kid:
        obj.data.shape_keys.key_blocks[KID_KEY_NAME].value = float(kid)
    return obj


def set_betas(mesh_obj, betas):
    blocks = mesh_obj.data.shape_keys.key_blocks
    for name, value in zip(SHAPE_KEY_NAMES, np.asarray(betas, float)):
        blocks[name].value = float(value)


def rest_points(model, betas, kid=0.0):
    """The rest joints the armature of `model` is built on: (29, 3) for
    SMPL, (71, 3) for SMPL-X (expression neutral)."""
    if model.is_smplx:
        return bm.rest_points_x(model, betas, kid=kid if model.has_kid else None)
    return bm.rest_joints_29(model, betas)


def build_character(model, betas, name=None, pose_correctives=True, collection=None,
                    expressions=True, kid=0.0):
    """Armature + mesh for `model` (SMPL or SMPL-X) with rest joints and
    shape keys at `betas` (and `kid`, for an SMPL-X model with a children's
    template).

    Returns (armature object, mesh object); names are made unique by Blender,
    so a second call never touches the first character."""
    betas = np.asarray(betas, dtype=np.float64)[:NUM_BETAS]
    kid = float(kid) if model.has_kid else 0.0
    name = name or ("SMPLX" if model.is_smplx else "SMPL")
    points = rest_points(model, betas, kid)
    if model.is_smplx:
        rig = build_armature_x(name, points, collection)
    else:
        rig = build_armature(name, points, collection)
    mesh = build_mesh(f"{rig.name}_body", model, rig, betas, pose_correctives, collection,
                      expressions, kid)
    rig["hybrik_rest_betas"] = [float(b) for b in betas]
    if model.has_kid:
        rig["hybrik_rest_kid"] = kid
    rig["hybrik_body_model"] = model.source
    return rig, mesh


def rest_matrices(rig, names=None):
    """(J, 4, 4) armature-space rest matrices of the model's bones (24 for
    SMPL, 55 for SMPL-X), in joint order."""
    bones = rig.data.bones
    return np.array([np.array(bones[n].matrix_local) for n in (names or bone_names(rig))])
