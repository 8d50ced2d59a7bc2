"""Retarget a hybrik-blender take onto another humanoid armature.

The maths is in core/retarget/solve.py; this module reads the armatures and the
source's keys, and writes the result as a new action in bulk (ActionWriter).
The target rig itself is never edited: no rest pose, roll, constraint or
object transform changes.

Rotation modes: each mapped target bone is keyed in the rotation mode it
already uses (quaternion, or Euler angles in the bone's order, unwrapped over
time). Bones in axis-angle mode are switched to quaternion mode, which is a
pose-bone setting, not a change of the rig. ``rotation_mode='QUATERNION'``
switches every mapped bone to quaternions instead.
"""
import dataclasses

import numpy as np

from ..core.retarget import solve as rt
from ..core.retarget.solve import BoneMapError
from ..core.rotations import quaternion_to_matrix
from ..core.body.skeleton import JOINT_NAMES
from .keyframes import ActionWriter, fcurves_of

PRESET_ITEMS = [('AUTO', "Auto-detect", "Pick the preset from the target's bone names")] + [
    (key, spec["label"], f"Bone names of the {spec['label']} rig")
    for key, spec in rt.PRESETS.items()] + [
    ('CUSTOM', "Custom", "The bone map edited in the panel or loaded from a JSON file")]


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


def skeleton_of(rig):
    """core Skeleton of an armature object (rest pose, object matrix)."""
    bones = rig.data.bones
    names = [b.name for b in bones]
    index = {n: i for i, n in enumerate(names)}
    parents = [index[b.parent.name] if b.parent else -1 for b in bones]
    rest = np.array([np.array(b.matrix_local) for b in bones]).reshape(-1, 4, 4)
    return rt.Skeleton(names, parents, rest, np.array(rig.matrix_world))


def vrm_human_bones(rig):
    """{VRM bone id: bone name} from the VRM add-on's humanoid data, or None."""
    ext = getattr(rig.data, "vrm_addon_extension", None)
    if ext is None:
        return None
    out = {}
    try:
        human = ext.vrm1.humanoid.human_bones
        for (vrm_id,) in rt.VRM_HUMAN_BONES.values():
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
                if hb.node.bone_name:
                    out[vrm_id] = hb.node.bone_name
        except AttributeError:
            pass
    return out or None


def resolve_bone_map(rig, preset='AUTO', custom=None):
    """(preset used, {SMPL bone: target bone}) for an armature object."""
    names = [b.name for b in rig.data.bones]
    if preset == 'CUSTOM':
        if not custom:
            raise RetargetError("the custom bone map is empty")
        return 'CUSTOM', rt.check_map(custom, names)
    vrm = vrm_human_bones(rig)
    if preset == 'AUTO':
        found, mapping = rt.detect_preset(names, vrm)
        if found is None:
            raise RetargetError(f"could not recognise the bones of {rig.name!r}: pick a preset "
                                "or make a custom bone map")
        return found, mapping
    if preset == 'VRM' and vrm:
        mapping = rt.vrm_map(vrm)
        if mapping:
            return 'VRM', rt.check_map(mapping, names)
    mapping = rt.resolve_preset(preset, names)
    missing = [b for b in rt.CORE_BONES if b not in mapping]
    if missing:
        raise RetargetError(f"{rig.name!r} does not look like a {rt.PRESETS[preset]['label']} "
                            f"rig: no bone for {', '.join(missing)}")
    return preset, mapping


def _curve_table(rig):
    table = {}
    for fc in fcurves_of(rig):
        n = len(fc.keyframe_points)
        if n == 0:
            continue
        co = np.empty(2 * n, dtype=np.float32)
        fc.keyframe_points.foreach_get("co", co)
        table[(fc.data_path, fc.array_index)] = (co[0::2].astype(np.float64),
                                                co[1::2].astype(np.float64))
    return table


def _channel(table, path, size, frames, default):
    """(N, size) values of an animated property, linear between keys."""
    out = np.empty((len(frames), size))
    for i in range(size):
        key = table.get((path, i))
        if key is None:
            out[:, i] = default[i]
        elif len(key[0]) == len(frames) and np.array_equal(key[0], frames):
            out[:, i] = key[1]
        else:
            out[:, i] = np.interp(frames, *key)
    return out


def read_motion(rig, bone_names=JOINT_NAMES):
    """Keyed frames (N,) and basis matrices (N, B, 4, 4) of the named bones
    (bones without keys keep their current pose values)."""
    table = _curve_table(rig)
    paths = [f'pose.bones["{n}"]' for n in bone_names]
    keyed = [fr for (dp, _), (fr, _) in table.items() if dp.startswith('pose.bones["')
             and dp.split('"')[1] in set(bone_names)]
    if not keyed:
        raise RetargetError(f"{rig.name!r} has no keyed motion to retarget")
    frames = np.unique(np.concatenate(keyed))
    basis = np.zeros((len(frames), len(bone_names), 4, 4))
    basis[..., 3, 3] = 1.0
    quat_bones, quats = [], []
    for b, (name, path) in enumerate(zip(bone_names, paths)):
        pb = rig.pose.bones[name]
        if pb.rotation_mode == 'QUATERNION':
            quat_bones.append(b)
            quats.append(_channel(table, f"{path}.rotation_quaternion", 4, frames,
                                  tuple(pb.rotation_quaternion)))
        elif pb.rotation_mode == 'AXIS_ANGLE':
            aa = _channel(table, f"{path}.rotation_axis_angle", 4, frames,
                          tuple(pb.rotation_axis_angle))
            axis = aa[:, 1:] / np.maximum(np.linalg.norm(aa[:, 1:], axis=1, keepdims=True),
                                          1e-12)
            from ..core.rotations import axis_angle_to_matrix
            basis[:, b, :3, :3] = axis_angle_to_matrix(axis * aa[:, :1])
        else:
            e = _channel(table, f"{path}.rotation_euler", 3, frames, tuple(pb.rotation_euler))
            basis[:, b, :3, :3] = rt.euler_to_matrix(e, pb.rotation_mode)
        basis[:, b, :3, 3] = _channel(table, f"{path}.location", 3, frames, tuple(pb.location))
    if quat_bones:
        basis[:, quat_bones, :3, :3] = quaternion_to_matrix(np.stack(quats, axis=1))
    return frames, basis


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
    return ob.type == 'ARMATURE' and all(n in ob.data.bones for n in JOINT_NAMES)


def _write_rotation(writer, pb, rot, quats, frames, rotation_mode):
    path = f'pose.bones["{pb.name}"]'
    mode = pb.rotation_mode
    if rotation_mode == 'QUATERNION' or mode == 'AXIS_ANGLE':
        pb.rotation_mode = mode = 'QUATERNION'
    if mode == 'QUATERNION':
        writer.add_array(f"{path}.rotation_quaternion", frames, quats, group=pb.name)
    else:
        writer.add_array(f"{path}.rotation_euler", frames, rt.continuous_euler(rot, mode),
                         group=pb.name)


def retarget(source, target, preset='AUTO', mapping=None, rotation_mode='KEEP',
             root_motion=True, action_name=None):
    """Retarget the keyed motion of a hybrik-blender rig onto `target`.

    preset: 'AUTO', a key of core.retarget.PRESETS, or 'CUSTOM' with
    `mapping` ({SMPL bone: target bone}). Writes a new action on the target
    (the previous one is kept with a fake user) and returns a RetargetReport.
    """
    if source is None or target is None or source.type != 'ARMATURE' \
            or target.type != 'ARMATURE':
        raise RetargetError("retargeting needs a source and a target armature")
    if source == target:
        raise RetargetError("the source and the target are the same armature")
    if not _is_hybrik_rig(source):
        raise RetargetError(f"{source.name!r} is not a hybrik-blender (SMPL) armature")
    if 'EDIT' in (source.mode, target.mode):
        raise RetargetError("leave Edit Mode before retargeting")
    if mapping is not None and preset == 'AUTO':
        preset = 'CUSTOM'
    try:
        used, bone_map = resolve_bone_map(target, preset, mapping)
        src_skel = skeleton_of(source)
        frames, basis = read_motion(source, src_skel.names)
        sol = rt.solve(src_skel, basis, skeleton_of(target), bone_map,
                       root_motion=root_motion)
    except BoneMapError as exc:
        raise RetargetError(str(exc)) from None

    ad = target.animation_data
    if ad is not None and ad.action is not None:
        ad.action.use_fake_user = True
    writer = ActionWriter(target, action_name or f"{target.name}_{source.name}_retarget")
    pbones = target.pose.bones
    for k, name in enumerate(sol.bones):
        _write_rotation(writer, pbones[name], sol.rotations[:, k], sol.quaternions[:, k], frames,
                        rotation_mode)
    first = frames[:1]
    for name in sol.rest_bones:  # unmapped bones above mapped ones: hold at rest
        pb = pbones[name]
        path = f'pose.bones["{name}"]'
        if pb.rotation_mode in ('QUATERNION', 'AXIS_ANGLE'):
            attr = "rotation_quaternion" if pb.rotation_mode == 'QUATERNION' \
                else "rotation_axis_angle"
            value = [[1.0, 0.0, 0.0, 0.0] if attr == "rotation_quaternion" else
                     [0.0, 0.0, 1.0, 0.0]]
            writer.add_array(f"{path}.{attr}", first, np.array(value), group=name)
        else:
            writer.add_array(f"{path}.rotation_euler", first, np.zeros((1, 3)), group=name)
        writer.add_array(f"{path}.location", first, np.zeros((1, 3)), group=name)
    if sol.root_bone is not None:
        writer.add_array(f'pose.bones["{sol.root_bone}"].location', frames,
                         sol.root_location, group=sol.root_bone)
    writer.action["hybrik_retarget_source"] = source.name
    writer.action["hybrik_retarget_preset"] = used
    return RetargetReport(writer.action, used, bone_map, int(frames[0]), int(frames[-1]),
                          len(frames), sol.scale, sol.root_bone)
