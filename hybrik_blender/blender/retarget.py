"""Retarget a hybrik-blender take onto another humanoid armature.

The maths is in core/retarget/ (maps.py, calibrate.py, solve.py, euler.py);
this module reads the armatures and the source's keys, and writes the result
as a new action in bulk (ActionWriter). The target rig itself is never
edited: no rest pose, roll, constraint or object transform changes.

The source is an SMPL (24 bones) or SMPL-X (55 bones, with fingers)
character made by this add-on.

Rotation modes: each mapped target bone is keyed in the rotation mode it
already uses (quaternion, or Euler angles in the bone's order, continuous
over time: no steps of 180 degrees at gimbal lock). Bones in axis-angle mode
are switched to quaternion mode, which is a pose-bone setting, not a change
of the rig. ``rotation_mode='QUATERNION'`` switches every mapped bone to
quaternions instead.

The new action also holds every unmapped bone at rest (one key per channel:
identity rotation, zero location, unit scale), so whatever pose the rig was
left in, unmapped fingers, toes and face bones keep their rest relation to
their parents. Bones with constraints are left alone (their constraints
drive them).
"""
import dataclasses

import bpy
import numpy as np

from ..core.body.skeleton import JOINT_NAMES, SMPLX_JOINT_NAMES
from ..core.retarget import calibrate, guess, maps
from ..core.retarget import solve as rt
from ..core.retarget.maps import BoneMapError
from ..core.retarget.euler import continuous_euler, euler_to_matrix
from ..core.rotations import axis_angle_to_matrix, quaternion_to_matrix
from .keyframes import ActionWriter, fcurves_of

PRESET_ITEMS = [('AUTO', "Auto-detect", "Pick the preset from the target's bone names")] + [
    (key, spec["label"], f"Bone names of the {spec['label']} rig")
    for key, spec in maps.PRESETS.items()] + [
    ('CUSTOM', "Custom", "The bone map edited in the panel or loaded from a JSON file")]

ROOT_ITEMS = [
    ('WORLD', "Root motion", "Move the hips like the source, scaled by the ratio of leg "
                             "lengths, feet on the floor where the source's are"),
    ('IN_PLACE', "In place", "Keep the hips above their rest position; the height still "
                             "follows the source, feet on the floor"),
    ('NONE', "Off", "No location keys on the hips"),
]


class RetargetError(RuntimeError):
    """Retargeting cannot run (wrong objects, no motion, unusable map)."""


@dataclasses.dataclass
class RetargetReport:
    action: object
    preset: str
    mapping: dict
    frame_start: int
    frame_end: int
    num_frames: int
    scale: float
    root_bone: str
    foot_heights: tuple = (None, None)


def _bone_table(rig):
    bones = rig.data.bones
    names = [b.name for b in bones]
    index = {n: i for i, n in enumerate(names)}
    parents = [index[b.parent.name] if b.parent else -1 for b in bones]
    return names, parents


def _active_constraints(pb):
    return [c for c in pb.constraints if not c.mute and c.influence > 0.0]


def constraint_table(rig):
    """(follows, keyable): {bone: [bones of this armature its constraints
    copy]} and the bones without constraints (the only ones whose keys
    count)."""
    follows, keyable = {}, []
    for pb in rig.pose.bones:
        cons = [c for c in pb.constraints if not c.mute]
        subs = []
        for c in cons:
            for t in list(getattr(c, "targets", ())) + [c]:
                if getattr(t, "target", None) == rig and getattr(t, "subtarget", ""):
                    subs.append(t.subtarget)
        if subs:
            follows[pb.name] = subs
        if not cons:
            keyable.append(pb.name)
    return follows, keyable


def constraint_driven(rig, bone_names):
    """Whether any of the bones or their ancestors has an active constraint:
    then their channels cannot be computed from the hierarchy alone."""
    for name in bone_names:
        pb = rig.pose.bones[name]
        while pb is not None:
            if _active_constraints(pb):
                return True
            pb = pb.parent
    return False


def skeleton_of(rig, sole=None):
    """core Skeleton of an armature object (rest pose, object matrix)."""
    bones = rig.data.bones
    names, parents = _bone_table(rig)
    rest = np.array([np.array(b.matrix_local) for b in bones]).reshape(-1, 4, 4)
    tails = np.array([tuple(b.tail_local) for b in bones]).reshape(-1, 3)
    return rt.Skeleton(names, parents, rest, np.array(rig.matrix_world), tails=tails,
                       sole=sole)


def skinned_meshes(rig):
    return [o for o in bpy.data.objects if o.type == 'MESH' and any(
        m.type == 'ARMATURE' and m.object == rig for m in o.modifiers)]


def mesh_sole(rig, mapping):
    """World height of the lowest vertex of the rig's skinned meshes at rest,
    when the rig stands upright at rest (so that vertex is a sole); None
    without meshes or when it is not upright."""
    meshes = skinned_meshes(rig)
    need = ("left_hip", "right_hip", "left_shoulder", "right_shoulder")
    if not meshes or not all(mapping.get(n) in rig.data.bones for n in need):
        return None
    mw = np.array(rig.matrix_world)
    heads = {n: mw[:3, :3] @ np.array(rig.data.bones[mapping[n]].head_local) + mw[:3, 3]
             for n in need}
    if not calibrate.is_upright(calibrate.body_axes(heads)[1]):
        return None
    saved = rig.data.pose_position
    rig.data.pose_position = 'REST'
    lowest = None
    try:
        depsgraph = bpy.context.evaluated_depsgraph_get()
        depsgraph.update()
        for ob in meshes:
            ev = ob.evaluated_get(depsgraph)
            me = ev.to_mesh()
            try:
                co = np.empty(3 * len(me.vertices), np.float64)
                me.vertices.foreach_get("co", co)
            finally:
                ev.to_mesh_clear()
            if len(co):
                omw = np.array(ob.matrix_world)
                z = float((co.reshape(-1, 3) @ omw[:3, :3].T + omw[:3, 3])[:, 2].min())
                lowest = z if lowest is None else min(lowest, z)
    finally:
        rig.data.pose_position = saved
        bpy.context.view_layer.update()
    return lowest


def vrm_human_bones(rig):
    """{VRM bone id: bone name} from the VRM add-on's humanoid data, or None."""
    ext = getattr(rig.data, "vrm_addon_extension", None)
    if ext is None:
        return None
    out = {}
    try:
        human = ext.vrm1.humanoid.human_bones
        for (vrm_id,) in maps.VRM_HUMAN_BONES.values():
            hb = getattr(human, vrm_id, None)
            name = getattr(getattr(hb, "node", None), "bone_name", "") if hb else ""
            if name:
                out[vrm_id] = name
    except AttributeError:
        pass
    if not out:  # VRM 0.x keeps a list of (bone id, node) pairs
        try:
            for hb in ext.vrm0.humanoid.human_bones:
                vrm_id = "".join("_" + c.lower() if c.isupper() else c for c in hb.bone)
                vrm_id = maps.VRM0_THUMB_IDS.get(vrm_id, vrm_id)
                if hb.node.bone_name:
                    out[vrm_id] = hb.node.bone_name
        except AttributeError:
            pass
    return out or None


def resolve_bone_map(rig, preset='AUTO', custom=None):
    """(preset used, {source bone: target bone}) for an armature object. The
    map is checked against the rig's hierarchy (pelvis above the thighs,
    chains parent to child; bones that constraints copy count as parents);
    errors name the bones. Presets only map bones without constraints of
    their own (a generated Rigify rig's controls, not its DEF/ORG/MCH
    bones)."""
    names, parents = _bone_table(rig)
    follows, keyable = constraint_table(rig)
    if preset == 'CUSTOM':
        if not custom:
            raise RetargetError("the custom bone map is empty: fill it or load a JSON map")
        mapping = rt.check_map(custom, names, parents, follows)
        _require_core(rig, mapping, "the custom bone map")
        return 'CUSTOM', mapping
    vrm = vrm_human_bones(rig)
    if preset == 'AUTO':
        found, mapping = maps.detect_preset(names, vrm, parents, follows, keyable)
        if found is None:
            raise RetargetError(f"could not recognise the bones of {rig.name!r}: pick a preset, "
                                "or use Fill Bone Map to guess a custom map and finish it")
        return found, rt.check_map(mapping, names, parents, follows)
    if preset == 'VRM' and vrm:
        mapping = maps.vrm_map(vrm)
        if mapping:
            return 'VRM', rt.check_map(mapping, names, parents, follows)
    mapping = maps.resolve_preset(preset, names, parents, follows, keyable)
    missing = maps.missing_core(mapping)
    if missing:
        raise RetargetError(f"{rig.name!r} does not look like a "
                            f"{maps.PRESETS[preset]['label']} rig: no bone for "
                            f"{', '.join(missing)}")
    return preset, rt.check_map(mapping, names, parents, follows)


def _require_core(rig, mapping, what):
    missing = maps.missing_core(mapping)
    if missing:
        raise RetargetError(f"{what} leaves core bones of {rig.name!r} unmapped: "
                            f"{', '.join(missing)}")


def guess_bone_map(rig):
    """(preset or None, partial map) for the panel's Fill: names first,
    then hierarchy and geometry (core.retarget.guess)."""
    names, parents = _bone_table(rig)
    follows, keyable = constraint_table(rig)
    if maps.detect_preset(names, vrm_human_bones(rig), parents, follows, keyable)[0] \
            is not None:
        return resolve_bone_map(rig, 'AUTO')
    mw = np.array(rig.matrix_world)
    bones = rig.data.bones
    heads = np.array([tuple(b.head_local) for b in bones]).reshape(-1, 3) @ mw[:3, :3].T
    tails = np.array([tuple(b.tail_local) for b in bones]).reshape(-1, 3) @ mw[:3, :3].T
    return guess.guess_map(names, parents, heads + mw[:3, 3], tails + mw[:3, 3])


def _curve_table(rig, bone_names):
    """{(data path, index): (frames, values)} of the rig's F-curves on the
    named pose bones (float64 arrays)."""
    wanted = {f'pose.bones["{n}"]' for n in bone_names}
    table = {}
    for fc in fcurves_of(rig):
        path = fc.data_path
        if path[:path.rfind(".")] not in wanted:
            continue
        n = len(fc.keyframe_points)
        if n == 0:
            continue
        co = np.empty((n, 2), dtype=np.float32)
        fc.keyframe_points.foreach_get("co", co.reshape(-1))
        co = co.astype(np.float64)
        table[(path, fc.array_index)] = (co[:, 0], co[:, 1])
    return table


def _channel(table, path, size, frames, default, out):
    """Fill out (N, size) with the values of an animated property, linear
    between keys."""
    for i in range(size):
        key = table.get((path, i))
        if key is None:
            out[:, i] = default[i]
        elif key[0] is frames or (len(key[0]) == len(frames)
                                  and np.array_equal(key[0], frames)):
            out[:, i] = key[1]
        else:
            out[:, i] = np.interp(frames, *key)
    return out


def _keyed_frames(table):
    """Sorted union of the curves' key frames (without a sort when every
    curve has the same keys, as imports and bakes write them)."""
    keyed = [fr for fr, _ in table.values()]
    first = keyed[0]
    if all(fr is first or (len(fr) == len(first) and np.array_equal(fr, first))
           for fr in keyed[1:]) and np.all(np.diff(first) > 0):
        return first
    return np.unique(np.concatenate(keyed))


def read_motion(rig, bone_names=JOINT_NAMES):
    """Keyed frames (N,) and basis matrices (N, B, 4, 4) of the named bones
    (bones without keys keep their current pose values)."""
    table = _curve_table(rig, bone_names)
    if not table:
        raise RetargetError(f"{rig.name!r} has no keyed motion to retarget")
    frames = _keyed_frames(table)
    n, nb = len(frames), len(bone_names)
    basis = np.empty((n, nb, 4, 4))
    basis[..., 3, :3] = 0.0
    basis[..., 3, 3] = 1.0
    quat_bones = [b for b, name in enumerate(bone_names)
                  if rig.pose.bones[name].rotation_mode == 'QUATERNION']
    quats = np.empty((n, len(quat_bones), 4))
    slot = {b: k for k, b in enumerate(quat_bones)}
    loc = np.empty((n, 3))
    for b, name in enumerate(bone_names):
        pb = rig.pose.bones[name]
        path = f'pose.bones["{name}"]'
        if b in slot:
            _channel(table, f"{path}.rotation_quaternion", 4, frames,
                     tuple(pb.rotation_quaternion), quats[:, slot[b]])
        elif pb.rotation_mode == 'AXIS_ANGLE':
            aa = _channel(table, f"{path}.rotation_axis_angle", 4, frames,
                          tuple(pb.rotation_axis_angle), np.empty((n, 4)))
            axis = aa[:, 1:] / np.maximum(np.linalg.norm(aa[:, 1:], axis=1, keepdims=True),
                                          1e-12)
            basis[:, b, :3, :3] = axis_angle_to_matrix(axis * aa[:, :1])
        else:
            e = _channel(table, f"{path}.rotation_euler", 3, frames, tuple(pb.rotation_euler),
                         np.empty((n, 3)))
            basis[:, b, :3, :3] = euler_to_matrix(e, pb.rotation_mode)
        basis[:, b, :3, 3] = _channel(table, f"{path}.location", 3, frames,
                                      tuple(pb.location), loc)
    if quat_bones == list(range(nb)):
        quaternion_to_matrix(quats, out=basis[..., :3, :3])
    elif quat_bones:
        basis[:, quat_bones, :3, :3] = quaternion_to_matrix(quats)
    return frames, basis


def source_kind(ob):
    """'smplx', 'smpl' or None: which hybrik-blender character `ob` is."""
    if ob is None or ob.type != 'ARMATURE':
        return None
    bones = ob.data.bones
    if all(n in bones for n in SMPLX_JOINT_NAMES):
        return 'smplx'
    if all(n in bones for n in JOINT_NAMES):
        return 'smpl'
    return None


def find_source_rig(context, exclude=None):
    """The armature a take was imported to: the active object when it is one,
    else the newest object carrying the import's metadata."""
    ob = context.active_object
    if ob is not None and ob is not exclude and _is_hybrik_rig(ob):
        return ob
    rigs = [o for o in context.scene.objects if o is not exclude and _is_hybrik_rig(o)
            and "hybrik_source" in o]
    return rigs[-1] if rigs else None


def _is_hybrik_rig(ob):
    return source_kind(ob) is not None


def _write_rotations(writer, pbones, sol, frames, rotation_mode):
    """Quaternion curves, or continuous Euler curves in each bone's order
    (converted in one batch per order)."""
    by_order = {}
    for k, name in enumerate(sol.bones):
        pb = pbones[name]
        if rotation_mode == 'QUATERNION' or pb.rotation_mode == 'AXIS_ANGLE':
            pb.rotation_mode = 'QUATERNION'
        if pb.rotation_mode == 'QUATERNION':
            writer.add_array(f'pose.bones["{name}"].rotation_quaternion', frames,
                             sol.quaternions[:, k], group=name)
        else:
            by_order.setdefault(pb.rotation_mode, []).append(k)
    for order, ks in by_order.items():
        angles = continuous_euler(sol.rotations[:, ks], order)
        for j, k in enumerate(ks):
            name = sol.bones[k]
            writer.add_array(f'pose.bones["{name}"].rotation_euler', frames, angles[:, j],
                             group=name)


def _hold_at_rest(writer, pb, first, rotation=True, location=True):
    path = f'pose.bones["{pb.name}"]'
    n = len(first)
    if rotation:
        if pb.rotation_mode == 'QUATERNION':
            writer.add_array(f"{path}.rotation_quaternion", first,
                             np.tile([1.0, 0.0, 0.0, 0.0], (n, 1)), group=pb.name)
        elif pb.rotation_mode == 'AXIS_ANGLE':
            writer.add_array(f"{path}.rotation_axis_angle", first,
                             np.tile([0.0, 0.0, 1.0, 0.0], (n, 1)), group=pb.name)
        else:
            writer.add_array(f"{path}.rotation_euler", first, np.zeros((n, 3)), group=pb.name)
    if location:
        writer.add_array(f"{path}.location", first, np.zeros((n, 3)), group=pb.name)
    writer.add_array(f"{path}.scale", first, np.ones((n, 3)), group=pb.name)


FK_SWITCH = "IK_FK"  # Rigify's IK/FK blend on a limb's "parent" control: 1 = FK


def _key_fk_switches(writer, rig, bones, first):
    """Mapping FK controls of a rig with IK/FK switches (Rigify): key every
    limb's switch to FK in the new action so the mapped controls drive it."""
    if not any("_fk" in b for b in bones):
        return
    for pb in rig.pose.bones:
        if FK_SWITCH in pb.keys() and isinstance(pb[FK_SWITCH], float):
            pb[FK_SWITCH] = 1.0
            writer.add(f'pose.bones["{pb.name}"]["{FK_SWITCH}"]', 0, first,
                       np.ones(len(first)), group=pb.name)


def _select_bones(rig, names):
    wanted = set(names)
    for pb in rig.pose.bones:
        if "select" in pb.bl_rna.properties:  # 5.0+
            pb.select = pb.name in wanted
        else:
            pb.bone.select = pb.name in wanted


def _bake_through_constraints(target, sol, frames):
    """Key the mapped bones of a rig whose bones hang from constraint-driven
    helpers (a generated Rigify rig): a temporary armature carries the
    solved world transforms, Copy Rotation (and Copy Location on the root)
    constraints make the mapped bones follow it, and Blender's own bake with
    visual keying writes their channels into the new action. Slower than the
    direct solve (one evaluation per frame) but exact whatever the
    constraints do."""
    scene = bpy.context.scene
    view_layer = bpy.context.view_layer
    prev_active = view_layer.objects.active
    selected = [o for o in view_layer.objects if o.select_get()]
    data = bpy.data.armatures.new("hybrik_retarget_proxy")
    proxy = bpy.data.objects.new("hybrik_retarget_proxy", data)
    scene.collection.objects.link(proxy)
    proxy.matrix_world = target.matrix_world
    added = []
    try:
        view_layer.objects.active = proxy
        bpy.ops.object.mode_set(mode='EDIT')
        for name in sol.bones:
            b = target.data.bones[name]
            eb = data.edit_bones.new(name)
            eb.head, eb.tail = b.head_local, b.tail_local
            eb.matrix = b.matrix_local
        bpy.ops.object.mode_set(mode='OBJECT')
        mw = np.array(target.matrix_world)
        rot_w = mw[:3, :3] / np.linalg.norm(mw[:3, :3], axis=0, keepdims=True)
        rest = np.array([np.array(data.bones[n].matrix_local) for n in sol.bones])
        arm = np.zeros(sol.world_rotations.shape[:2] + (4, 4))
        arm[..., :3, :3] = np.einsum("ji,nkjl->nkil", rot_w, sol.world_rotations)
        arm[..., :3, 3] = rest[None, :, :3, 3]
        arm[..., 3, 3] = 1.0
        if sol.root_head is not None:
            k = sol.bones.index(sol.root_bone)
            arm[:, k, :3, 3] = (sol.root_head - mw[:3, 3]) @ np.linalg.inv(mw[:3, :3]).T
        basis = np.linalg.inv(rest)[None] @ arm
        from ..core.rotations import make_quaternions_continuous, matrix_to_quaternion
        quats = make_quaternions_continuous(matrix_to_quaternion(basis[..., :3, :3]), axis=0)
        pw = ActionWriter(proxy, "hybrik_retarget_proxy")
        for k, name in enumerate(sol.bones):
            proxy.pose.bones[name].rotation_mode = 'QUATERNION'
            pw.add_array(f'pose.bones["{name}"].rotation_quaternion', frames, quats[:, k])
            pw.add_array(f'pose.bones["{name}"].location', frames, basis[:, k, :3, 3])
        for name in sol.bones:
            pb = target.pose.bones[name]
            kinds = ['COPY_ROTATION'] + (['COPY_LOCATION'] if name == sol.root_bone else [])
            for kind in kinds:
                c = pb.constraints.new(kind)
                c.target, c.subtarget = proxy, name
                c.owner_space = c.target_space = 'WORLD'
                added.append((pb, c))
        for o in view_layer.objects:
            o.select_set(o == target)
        view_layer.objects.active = target
        bpy.ops.object.mode_set(mode='POSE')
        _select_bones(target, sol.bones)
        bpy.ops.nla.bake(frame_start=int(frames[0]), frame_end=int(frames[-1]),
                         only_selected=True, visual_keying=True, clear_constraints=False,
                         use_current_action=True, bake_types={'POSE'})
        bpy.ops.object.mode_set(mode='OBJECT')
    finally:
        for pb, c in added:
            if c.name in pb.constraints:
                pb.constraints.remove(c)
        action = proxy.animation_data.action if proxy.animation_data else None
        bpy.data.objects.remove(proxy)
        bpy.data.armatures.remove(data)
        if action is not None and action.users == 0:
            bpy.data.actions.remove(action)
        for o in view_layer.objects:
            o.select_set(o in selected)
        view_layer.objects.active = prev_active


def _root_mode(root_motion):
    if root_motion in (True, 'WORLD', 'world'):
        return "world"
    if root_motion in ('IN_PLACE', 'in_place'):
        return "in_place"
    if root_motion in (False, None, 'NONE', 'none'):
        return "none"
    raise RetargetError(f"unknown root motion mode {root_motion!r}")


def retarget(source, target, preset='AUTO', mapping=None, rotation_mode='KEEP',
             root_motion=True, action_name=None):
    """Retarget the keyed motion of a hybrik-blender rig onto `target`.

    preset: 'AUTO', a key of core.retarget.maps.PRESETS, or 'CUSTOM' with
    `mapping` ({source bone: target bone}). root_motion: 'WORLD' (or True),
    'IN_PLACE', 'NONE' (or False). Writes a new action on the target (the
    previous one is kept with a fake user) and returns a RetargetReport.
    """
    if source is None or target is None or source.type != 'ARMATURE' \
            or target.type != 'ARMATURE':
        raise RetargetError("retargeting needs a source and a target armature")
    if source == target:
        raise RetargetError("the source and the target are the same armature")
    if not _is_hybrik_rig(source):
        raise RetargetError(f"{source.name!r} is not a hybrik-blender (SMPL or SMPL-X) "
                            "armature")
    if 'EDIT' in (source.mode, target.mode):
        raise RetargetError("leave Edit Mode before retargeting")
    mode = _root_mode(root_motion)
    if mapping is not None and preset == 'AUTO':
        preset = 'CUSTOM'
    try:
        used, bone_map = resolve_bone_map(target, preset, mapping)
        src_names = list(SMPLX_JOINT_NAMES if source_kind(source) == 'smplx' else JOINT_NAMES)
        src_map = {n: n for n in src_names}
        src_skel = skeleton_of(source, mesh_sole(source, src_map))
        tgt_skel = skeleton_of(target, mesh_sole(target, bone_map))
        frames, basis = read_motion(source, src_skel.names)
        sol = rt.solve(src_skel, basis, tgt_skel, bone_map, root_motion=mode)
    except BoneMapError as exc:
        raise RetargetError(str(exc)) from None

    ad = target.animation_data
    if ad is not None and ad.action is not None:
        ad.action.use_fake_user = True
    writer = ActionWriter(target, action_name or f"{target.name}_{source.name}_retarget")
    pbones = target.pose.bones
    # rest holds keyed at the first and last frame, so that every curve of
    # the action spans the clip
    first = frames[[0, -1]] if len(frames) > 1 else frames[:1]
    root = bone_map["pelvis"]
    driven = constraint_driven(target, sol.bones)
    if not driven:
        _write_rotations(writer, pbones, sol, frames, rotation_mode)
        for name in sol.bones:
            if name != root:
                _hold_at_rest(writer, pbones[name], first, rotation=False)
    for name in sol.unmapped:
        pb = pbones[name]
        if name in sol.rest_bones or not pb.constraints:
            _hold_at_rest(writer, pb, first)
    if driven:
        _key_fk_switches(writer, target, sol.bones, first)
        if rotation_mode == 'QUATERNION':
            for name in sol.bones:
                pbones[name].rotation_mode = 'QUATERNION'
        _bake_through_constraints(target, sol, frames)
    elif sol.root_bone is not None:
        writer.add_array(f'pose.bones["{sol.root_bone}"].location', frames,
                         sol.root_location, group=sol.root_bone)
        writer.add_array(f'pose.bones["{sol.root_bone}"].scale', first,
                         np.ones((len(first), 3)), group=sol.root_bone)
    else:
        _hold_at_rest(writer, pbones[root], first, rotation=False)
    writer.action["hybrik_retarget_source"] = source.name
    writer.action["hybrik_retarget_preset"] = used
    return RetargetReport(writer.action, used, bone_map, int(frames[0]), int(frames[-1]),
                          len(frames), sol.scale, sol.root_bone, sol.foot_heights)
