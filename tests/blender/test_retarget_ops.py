"""The retarget operators and panel settings, and VRM humanoid data, in real bpy."""
import json

import bpy
import numpy as np
import pytest
from bpy.props import PointerProperty, StringProperty

import hybrik_blender
from hybrik_blender.blender.animation import import_result
from hybrik_blender.blender.retarget import resolve_bone_map, retarget, vrm_human_bones
from hybrik_blender.core.retarget.maps import BONE_NAMES, VRM_HUMAN_BONES
from tests.blender.test_retarget import (MIXAMO, PLAIN2, PLAIN2_MAP, assert_directions_follow,
                                         build_rig, held_at_rest, humanoid_bones)
from tests.helpers import make_result, random_motion


@pytest.fixture
def addon(empty_scene):
    hybrik_blender.register()
    yield bpy.context.scene.hybrik_retarget
    hybrik_blender.unregister()


@pytest.fixture
def take(addon, body_model):
    return import_result(make_result(random_motion(10, seed=8)), body_model,
                         pose_correctives=False)


def _error(op, **kw):
    try:
        op(**kw)
    except RuntimeError as exc:  # an ERROR report surfaces as RuntimeError
        return str(exc)
    raise AssertionError("the operator should have reported an error")


def test_operators_retarget_with_preset_and_custom_map(addon, take, tmp_path):
    props = addon
    assert "pick a target" in _error(bpy.ops.hybrik.retarget)
    tgt = build_rig("Armature", humanoid_bones(take.rig, MIXAMO, apose_deg=45.0),
                    roll_deg=90.0, prefix="mixamorig:")
    bpy.context.view_layer.objects.active = take.rig
    assert "is the source" in _error(bpy.ops.hybrik.retarget_pick_target)
    bpy.context.view_layer.objects.active = tgt
    assert bpy.ops.hybrik.retarget_pick_target() == {'FINISHED'}
    assert props.target == tgt and props.preset == 'AUTO'

    assert bpy.ops.hybrik.retarget() == {'FINISHED'}
    first = tgt.animation_data.action
    assert first["hybrik_retarget_preset"] == 'MIXAMO'
    frames = np.arange(1, 11)
    assert_directions_follow(take.rig, tgt, resolve_bone_map(tgt)[1], frames)

    # undo-friendly: the whole step is one undoable operator
    assert 'UNDO' in bpy.types.HYBRIK_OT_retarget.bl_options

    # picking a target shows a row for every SMPL and SMPL-X bone
    assert [p.source for p in props.bone_map] == list(BONE_NAMES)
    # the editable map: fill from the preset, change it, save, load
    assert bpy.ops.hybrik.bone_map_fill() == {'FINISHED'}
    assert props.preset == 'CUSTOM' and len(props.bone_map) == len(BONE_NAMES)
    by_source = {p.source: p for p in props.bone_map}
    assert by_source["left_hip"].target == "mixamorig:LeftUpLeg"
    by_source["left_foot"].target = ""   # unmap the toes
    path = tmp_path / "map.json"
    assert bpy.ops.hybrik.bone_map_save(filepath=str(path)) == {'FINISHED'}
    doc = json.loads(path.read_text())
    assert doc["bones"]["left_hip"] == "mixamorig:LeftUpLeg" and "left_foot" not in doc["bones"]
    props.bone_map.clear()
    props.preset = 'AUTO'
    assert bpy.ops.hybrik.bone_map_load(filepath=str(path)) == {'FINISHED'}
    assert props.preset == 'CUSTOM'
    assert {p.source: p.target for p in props.bone_map}["left_foot"] == ""
    assert bpy.ops.hybrik.retarget() == {'FINISHED'}
    second = tgt.animation_data.action
    assert second != first and first.use_fake_user
    # the unmapped toe is held at rest: one key per channel
    toe = [fc for fc in _curves(tgt) if '"mixamorig:LeftToeBase"' in fc.data_path]
    assert toe and all(held_at_rest(fc) for fc in toe)

    bad = tmp_path / "bad.json"
    bad.write_text('{"bones": {"left_hip": "mixamorig:LeftUpLeg", "tail": "x"}}')
    assert "not an SMPL or SMPL-X bone" in _error(bpy.ops.hybrik.bone_map_load,
                                                  filepath=str(bad))
    by_source = {p.source: p for p in props.bone_map}
    by_source["left_hip"].target = "NoSuchBone"
    assert "no bone named" in _error(bpy.ops.hybrik.retarget)


def _curves(rig):
    from hybrik_blender.blender.keyframes import fcurves_of
    return fcurves_of(rig)


def test_custom_map_from_json_onto_two_spine_rig(take, tmp_path):
    path = tmp_path / "plain.json"
    path.write_text(json.dumps({"bones": PLAIN2_MAP}))
    tgt = build_rig("Plain", humanoid_bones(take.rig, PLAIN2, apose_deg=30.0), roll_deg=180.0)
    bpy.context.scene.hybrik_retarget.target = tgt
    assert bpy.ops.hybrik.bone_map_load(filepath=str(path)) == {'FINISHED'}
    assert bpy.ops.hybrik.retarget() == {'FINISHED'}
    assert_directions_follow(take.rig, tgt, PLAIN2_MAP, np.arange(1, 11))


class VrmNode(bpy.types.PropertyGroup):
    bone_name: StringProperty()


class VrmHumanBone(bpy.types.PropertyGroup):
    node: PointerProperty(type=VrmNode)


_HB = {vid: PointerProperty(type=VrmHumanBone) for (vid,) in VRM_HUMAN_BONES.values()}
VrmHumanBones = type("VrmHumanBones", (bpy.types.PropertyGroup,), {"__annotations__": _HB})


class VrmHumanoid(bpy.types.PropertyGroup):
    human_bones: PointerProperty(type=VrmHumanBones)


class Vrm1(bpy.types.PropertyGroup):
    humanoid: PointerProperty(type=VrmHumanoid)


class VrmExtension(bpy.types.PropertyGroup):
    vrm1: PointerProperty(type=Vrm1)


VRM_CLASSES = (VrmNode, VrmHumanBone, VrmHumanBones, VrmHumanoid, Vrm1, VrmExtension)


def test_vrm_humanoid_data_wins_over_names(take):
    """The VRM add-on's humanoid assignments (same property layout as the
    saturday06 add-on registers) map bones whose names say nothing."""
    for cls in VRM_CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Armature.vrm_addon_extension = PointerProperty(type=VrmExtension)
    try:
        bones = humanoid_bones(take.rig, PLAIN2, apose_deg=10.0)
        tgt = build_rig("Avatar", [(f"b{i:02d}", None if p is None else
                                    f"b{[b[0] for b in bones].index(p):02d}", h, t)
                                   for i, (_, p, h, t) in enumerate(bones)], roll_deg=90.0)
        plain_names = [b[0] for b in bones]
        human = tgt.data.vrm_addon_extension.vrm1.humanoid.human_bones
        expected = {}
        for smpl, plain in PLAIN2_MAP.items():
            vrm_id = VRM_HUMAN_BONES[smpl][0]
            name = f"b{plain_names.index(plain):02d}"
            getattr(human, vrm_id).node.bone_name = name
            expected[smpl] = name
        assert vrm_human_bones(tgt)["hips"] == expected["pelvis"]
        used, mapping = resolve_bone_map(tgt, 'AUTO')
        assert used == 'VRM' and mapping == expected
        rep = retarget(take.rig, tgt, preset='VRM')
        assert rep.preset == 'VRM'
        assert_directions_follow(take.rig, tgt, mapping, np.arange(1, 11))
    finally:
        del bpy.types.Armature.vrm_addon_extension
        for cls in reversed(VRM_CLASSES):
            bpy.utils.unregister_class(cls)


def test_fill_guesses_an_unknown_rig_and_saves_partial_maps(addon, take, tmp_path):
    """Bones named Bone, Bone.001, ...: Fill guesses the body from the
    hierarchy and geometry; a partial map saves, loads and shows its rows."""
    props = addon
    bones = humanoid_bones(take.rig, PLAIN2, apose_deg=20.0)
    plain = [b[0] for b in bones]
    anon = {n: f"Bone.{i:03d}" for i, n in enumerate(plain)}
    tgt = build_rig("Thing", [(anon[n], anon.get(p), h, t) for n, p, h, t in bones],
                    roll_deg=45.0)
    props.target = tgt
    assert len(props.bone_map) == len(BONE_NAMES) and not any(p.target for p in props.bone_map)
    assert "could not recognise" in _error(bpy.ops.hybrik.retarget)
    assert bpy.ops.hybrik.bone_map_fill() == {'FINISHED'}
    got = {p.source: p.target for p in props.bone_map if p.target}
    for smpl, name in PLAIN2_MAP.items():
        assert got.get(smpl) == anon[name], smpl
    assert props.preset == 'CUSTOM'
    assert bpy.ops.hybrik.retarget() == {'FINISHED'}
    assert_directions_follow(take.rig, tgt, got, np.arange(1, 11))
    # a partial map: save, clear, load
    by_source = {p.source: p for p in props.bone_map}
    for smpl in ("left_knee", "head", "neck"):
        by_source[smpl].target = ""
    path = tmp_path / "partial.json"
    assert bpy.ops.hybrik.bone_map_save(filepath=str(path)) == {'FINISHED'}
    assert "left_knee" not in json.loads(path.read_text())["bones"]
    props.bone_map.clear()
    assert bpy.ops.hybrik.bone_map_load(filepath=str(path)) == {'FINISHED'}
    assert len(props.bone_map) == len(BONE_NAMES)
    assert {p.source: p.target for p in props.bone_map}["left_knee"] == ""
    msg = _error(bpy.ops.hybrik.retarget)
    assert "core bones" in msg and "left_knee" in msg


def test_bad_map_error_names_the_bones(addon, take):
    props = addon
    tgt = build_rig("Plain", humanoid_bones(take.rig, PLAIN2), roll_deg=90.0)
    props.target = tgt
    bad = dict(PLAIN2_MAP, pelvis="Waist")  # a spine bone that does not carry the legs
    del bad["spine1"]
    from hybrik_blender.blender.retarget_ops import fill_map
    fill_map(props, bad)
    props.preset = 'CUSTOM'
    msg = _error(bpy.ops.hybrik.retarget)
    assert "'Waist'" in msg and "'Leg.L'" in msg and "does not carry" in msg
    assert tgt.animation_data is None or tgt.animation_data.action is None
    # editing a row by hand switches the preset to the custom map
    props.preset = 'AUTO'
    {p.source: p for p in props.bone_map}["pelvis"].target = "Pelvis"
    assert props.preset == 'CUSTOM'
    props.root_motion = 'IN_PLACE'
    assert bpy.ops.hybrik.retarget() == {'FINISHED'}
