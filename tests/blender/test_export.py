"""Export presets round trip in real bpy: export, re-import in a clean
scene, compare bone world matrices at sampled frames, the frame range and
the fps."""
import subprocess
import sys

import bpy
import numpy as np
import pytest

import hybrik_blender
from hybrik_blender.blender.animation import import_result
from hybrik_blender.blender.export import ExportError, export_bvh, export_fbx, export_glb
from hybrik_blender.blender.keyframes import ActionWriter, fcurves_of
from hybrik_blender.blender.retarget import retarget
from hybrik_blender.core.formats.result import save_result
from tests.conftest import ROOT, SYNTHETIC_MODEL
from tests.blender.test_retarget import MIXAMO, MIXAMO_WORLD, build_rig, humanoid_bones
from tests.helpers import make_result, random_motion

FPS = 25.0
NUM_FRAMES = 12
SAMPLED = (1, 6, 12)


def make_take(body_model):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    res = make_result(random_motion(NUM_FRAMES, seed=2, spread=1.0), fps=FPS, seed=3)
    take = import_result(res, body_model, pose_correctives=False)
    # a second action for the rig in the file must not become a second take
    ad = take.rig.animation_data
    action, slot = ad.action, getattr(ad, "action_slot", None)
    other = ActionWriter(take.rig, "unrelated")
    other.add('pose.bones["pelvis"].location', 2, [1.0, 12.0], [0.0, 1.0])
    other.action.use_fake_user = True
    ad.action = action
    if slot is not None:
        ad.action_slot = slot
    return take


def bone_world(rig, frames):
    """{bone: (F, 4, 4)} world matrices as Blender evaluates them."""
    out = {pb.name: [] for pb in rig.pose.bones}
    mw = np.array(rig.matrix_world)
    for f in frames:
        bpy.context.scene.frame_set(f)
        for pb in rig.pose.bones:
            out[pb.name].append(mw @ np.array(pb.matrix))
    return {k: np.array(v) for k, v in out.items()}


def deform(rig, world):
    """World deform transforms (pose @ rest^-1), independent of bone rolls."""
    mw = np.array(rig.matrix_world)
    return {k: v @ np.linalg.inv(mw @ np.array(rig.data.bones[k].matrix_local))
            for k, v in world.items()}


def world_vertices(obj, frame):
    bpy.context.scene.frame_set(frame)
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    me = ev.to_mesh()
    co = np.empty(3 * len(me.vertices), np.float32)
    me.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    mw = np.array(obj.matrix_world)
    return co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]


def rigid(m):
    """Scale taken out of the rotation part (object scale 0.01 vs 1)."""
    m = m.copy()
    m[..., :3, :3] /= np.linalg.norm(m[..., :3, :3], axis=-2, keepdims=True)
    return m


def max_error(ref, got, names=None):
    names = names or ref.keys()
    return max(float(np.abs(ref[n] - got[n]).max()) for n in names)


def reimported(kind, path):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    if kind == 'FBX':
        bpy.ops.import_scene.fbx(filepath=str(path), anim_offset=0.0)
    elif kind == 'GLB':
        # glTF stores seconds; the importer maps them onto the scene fps
        scene.render.fps, scene.render.fps_base = int(FPS), 1.0
        bpy.ops.import_scene.gltf(filepath=str(path))
    else:
        bpy.ops.import_anim.bvh(filepath=str(path), update_scene_fps=True,
                                update_scene_duration=True, axis_forward='Y', axis_up='Z')
    rigs = [o for o in scene.objects if o.type == 'ARMATURE']
    assert len(rigs) == 1
    rig = rigs[0]
    assert scene.render.fps / scene.render.fps_base == pytest.approx(FPS)
    assert tuple(rig.animation_data.action.frame_range) == (1.0, float(NUM_FRAMES))
    return rig


@pytest.mark.parametrize("preset", ["GENERIC", "UNITY", "UNREAL"])
def test_fbx_round_trip(body_model, tmp_path, preset):
    take = make_take(body_model)
    ref = bone_world(take.rig, SAMPLED)
    ref_verts = world_vertices(take.mesh, SAMPLED[1])
    before = {o.name for o in bpy.data.objects}
    path = export_fbx(tmp_path / "take.fbx", take.rig, preset)
    # the scene is as it was: no temporary copies left behind
    assert {o.name for o in bpy.data.objects} == before
    assert take.rig.select_get() is False and bpy.context.scene.frame_end == NUM_FRAMES

    rig = reimported('FBX', path)
    assert not any("unrelated" in a.name for a in bpy.data.actions), "one take only"
    got = bone_world(rig, SAMPLED)
    assert set(got) == set(ref)
    if preset == 'UNREAL':
        # centimetres in the file: Blender brings it back as 0.01 x cm bones
        assert np.allclose(rig.scale, 0.01, rtol=1e-5)
        err = max_error({k: rigid(v) for k, v in ref.items()},
                        {k: rigid(v) for k, v in got.items()})
    else:
        assert np.allclose(rig.scale, 1.0)
        err = max_error(ref, got)
    print(f"FBX {preset}: bone world matrix error {err:.2e}")
    assert err < 1e-4
    mesh = next(o for o in bpy.context.scene.objects if o.type == 'MESH')
    assert len(mesh.data.vertices) == 6890
    verr = float(np.abs(world_vertices(mesh, SAMPLED[1]) - ref_verts).max())
    assert verr < 1e-4, f"skinned vertices off by {verr}"


def test_unreal_fbx_is_in_centimetres(body_model, tmp_path):
    take = make_take(body_model)
    length = take.rig.data.bones["left_knee"].length
    export_fbx(tmp_path / "ue.fbx", take.rig, 'UNREAL')
    # the original rig, its data and action are untouched
    assert take.rig.data.bones["left_knee"].length == length
    assert sorted(a.name for a in bpy.data.actions) == sorted(
        [take.rig.animation_data.action.name, "unrelated"])
    rig = reimported('FBX', tmp_path / "ue.fbx")
    assert rig.data.bones["left_knee"].length == pytest.approx(100 * length, rel=1e-5)


def test_glb_round_trip(body_model, tmp_path):
    take = make_take(body_model)
    ref = bone_world(take.rig, SAMPLED)
    ref_verts = world_vertices(take.mesh, SAMPLED[1])
    ref_rest = np.empty(3 * 6890, np.float32)
    take.mesh.data.vertices.foreach_get("co", ref_rest)
    ref_rest = ref_rest.reshape(-1, 3)
    path = export_glb(tmp_path / "take.glb", take.rig)
    rig = reimported('GLB', path)
    got = bone_world(rig, SAMPLED)
    err = max_error(ref, got)
    print(f"GLB: bone world matrix error {err:.2e}")
    assert err < 1e-4
    mesh = next(o for o in bpy.context.scene.objects
                if o.type == 'MESH' and len(o.data.vertices) >= 6890)
    # glTF splits vertices along seams: match them to the originals by their
    # rest position
    rest = np.empty(3 * len(mesh.data.vertices), np.float32)
    mesh.data.vertices.foreach_get("co", rest)
    rest = rest.reshape(-1, 3)[::4]
    match, dist = [], []
    for chunk in np.array_split(rest, 16):
        d = np.linalg.norm(chunk[:, None] - ref_rest[None], axis=-1)
        match.append(d.argmin(1))
        dist.append(d.min(1))
    match = np.concatenate(match)
    assert np.concatenate(dist).max() < 1e-5
    verr = float(np.abs(world_vertices(mesh, SAMPLED[1])[::4] - ref_verts[match]).max())
    assert verr < 1e-4, f"skinned vertices off by {verr}"


def test_bvh_round_trip(body_model, tmp_path):
    take = make_take(body_model)
    ref = deform(take.rig, bone_world(take.rig, SAMPLED))
    path = export_bvh(tmp_path / "take.bvh", take.rig)
    rig = reimported('BVH', path)
    got = deform(rig, bone_world(rig, SAMPLED))
    assert set(got) == set(ref)
    err = max_error(ref, got)
    print(f"BVH: bone deform matrix error {err:.2e}")
    assert err < 1e-3


def test_retargeted_mixamo_rig_exports(body_model, tmp_path):
    """A 0.01-scaled, 90-degree-turned target: generic and Unreal FBX keep
    its world motion (root motion included)."""
    take = make_take(body_model)
    tgt = build_rig("Armature", humanoid_bones(take.rig, MIXAMO, leg_scale=1.2),
                    roll_deg=90.0, world=MIXAMO_WORLD, prefix="mixamorig:")
    retarget(take.rig, tgt)
    names = [b.name for b in tgt.data.bones]
    ref = {k: rigid(v) for k, v in bone_world(tgt, SAMPLED).items()}
    for preset in ("GENERIC", "UNREAL"):
        path = export_fbx(tmp_path / f"{preset}.fbx", tgt, preset)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.import_scene.fbx(filepath=str(path), anim_offset=0.0)
        rig = next(o for o in bpy.context.scene.objects if o.type == 'ARMATURE')
        got = {k: rigid(v) for k, v in bone_world(rig, SAMPLED).items()}
        err = max_error(ref, got, names)
        print(f"retargeted Mixamo FBX {preset}: {err:.2e}")
        assert err < 1e-4
        take = make_take(body_model)
        tgt = build_rig("Armature", humanoid_bones(take.rig, MIXAMO, leg_scale=1.2),
                        roll_deg=90.0, world=MIXAMO_WORLD, prefix="mixamorig:")
        retarget(take.rig, tgt)


def test_export_refuses_bad_input(body_model, tmp_path):
    take = make_take(body_model)
    with pytest.raises(ExportError, match="armature"):
        export_fbx(tmp_path / "x.fbx", take.mesh)
    with pytest.raises(ExportError, match="does not exist"):
        export_glb(tmp_path / "nowhere" / "x.glb", take.rig)
    with pytest.raises(ExportError, match="preset"):
        export_fbx(tmp_path / "x.fbx", take.rig, 'GODOT')
    take.rig.animation_data.action = None
    with pytest.raises(ExportError, match="no animation"):
        export_bvh(tmp_path / "x.bvh", take.rig)


def test_export_operators(body_model, tmp_path):
    take = make_take(body_model)
    hybrik_blender.register()
    try:
        bpy.context.view_layer.objects.active = take.mesh  # its armature is exported
        for op, name, kw in ((bpy.ops.hybrik.export_fbx, "unity.fbx", {"preset": 'UNITY'}),
                             (bpy.ops.hybrik.export_fbx, "ue.fbx", {"preset": 'UNREAL'}),
                             (bpy.ops.hybrik.export_bvh, "take.bvh", {}),
                             (bpy.ops.hybrik.export_glb, "take.glb", {})):
            assert op(filepath=str(tmp_path / name), **kw) == {'FINISHED'}
            assert (tmp_path / name).stat().st_size > 1000
        with pytest.raises(RuntimeError, match="does not exist"):
            bpy.ops.hybrik.export_bvh(filepath=str(tmp_path / "no" / "x.bvh"))
        bpy.context.view_layer.objects.active = None
        assert not bpy.ops.hybrik.export_fbx.poll()
    finally:
        hybrik_blender.unregister()


def test_cli_exports(tmp_path):
    res = tmp_path / "take.npz"
    save_result(res, make_result(random_motion(8), fps=FPS))
    out = {k: tmp_path / f"take.{k}" for k in ("blend", "fbx", "glb")}
    out["bvh"] = tmp_path / "new" / "folder" / "take.bvh"
    cmd = [sys.executable, "-m", "hybrik_blender", "import", str(res), "--smpl-model",
           SYNTHETIC_MODEL, "-o", str(out["blend"]), "--fbx", str(out["fbx"]),
           "--fbx-preset", "unreal", "--bvh", str(out["bvh"]), "--glb", str(out["glb"])]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    for path in out.values():
        assert path.stat().st_size > 1000, path
        assert f"wrote {path}" in run.stdout


def _raw_glb(path):
    """JSON and BIN chunks of a GLB, read with struct (not the add-on's reader)."""
    import json
    import struct
    data = open(path, "rb").read()
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    jlen, jtype = struct.unpack_from("<II", data, 12)
    assert jtype == 0x4E4F534A
    doc = json.loads(data[20:20 + jlen])
    blen, btype = struct.unpack_from("<II", data, 20 + jlen)
    assert btype == 0x004E4942
    return doc, data[28 + jlen:28 + jlen + blen]


def _times(doc, binary, accessor):
    acc = doc["accessors"][accessor]
    view = doc["bufferViews"][acc["bufferView"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    return np.frombuffer(binary, "<f4", acc["count"], start)


@pytest.mark.parametrize("fps", [29.97, 23.976, 59.94, 25.0])
def test_glb_key_times_exact_at_ntsc_rates(body_model, tmp_path, fps):
    """Blender's glTF exporter would write frame / (fps * fps_base): 0.2% fast
    at 29.97. The export's times are frame / 29.97 to the last float32 bit,
    the animation is named after the action, and a re-import at the same
    rate puts every key back on its frame."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    n = 9
    take = import_result(make_result(random_motion(n, seed=4), fps=fps, seed=3), body_model,
                         pose_correctives=False, camera=False)
    scene = bpy.context.scene
    assert scene.render.fps / scene.render.fps_base == pytest.approx(fps)
    saved = (scene.render.fps, scene.render.fps_base)
    path = export_glb(tmp_path / "ntsc.glb", take.rig, with_meshes=False)
    assert (scene.render.fps, scene.render.fps_base) == saved
    doc, binary = _raw_glb(path)
    (anim,) = doc["animations"]
    assert anim["name"] == take.rig.animation_data.action.name
    frames = np.arange(1, n + 1)
    expect = (frames / fps).astype(np.float32)
    for acc in sorted({s["input"] for s in anim["samplers"]}):
        t = _times(doc, binary, acc)
        assert np.array_equal(t, expect), (t * fps)[:3]
        assert np.float32(doc["accessors"][acc]["min"][0]) == expect[0]
        assert np.float32(doc["accessors"][acc]["max"][0]) == expect[-1]
    ref = bone_world(take.rig, (1, 5, n))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    # Blender's glTF importer has the same slip (seconds * fps * fps_base):
    # give it a base whose product is the true rate
    bpy.context.scene.render.fps = saved[0]
    bpy.context.scene.render.fps_base = fps / saved[0]
    bpy.ops.import_scene.gltf(filepath=str(path))
    rig = next(o for o in bpy.context.scene.objects if o.type == 'ARMATURE')
    got = bone_world(rig, (1, 5, n))
    assert max_error(ref, got) < 1e-4


def test_fbx_take_is_named_after_the_action(body_model, tmp_path):
    take = make_take(body_model)
    action = take.rig.animation_data.action.name
    scene_name = bpy.context.scene.name
    for preset in ("GENERIC", "UNREAL"):
        path = export_fbx(tmp_path / f"{preset}.fbx", take.rig, preset)
        assert bpy.context.scene.name == scene_name
        assert action.encode() in open(path, "rb").read()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.fbx(filepath=str(path))
    assert any(a.name.endswith("|" + action) for a in bpy.data.actions), \
        [a.name for a in bpy.data.actions]


def _bvh_rotation_steps(path):
    """Largest frame-to-frame step (degrees) of any rotation channel."""
    lines = open(path).read().splitlines()
    rot_cols, col = [], 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] == "CHANNELS":
            for name in parts[2:]:
                if name.endswith("rotation"):
                    rot_cols.append(col)
                col += 1
        if parts and parts[0] == "MOTION":
            break
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Frame Time")) + 1
    motion = np.array([[float(v) for v in ln.split()] for ln in lines[start:] if ln.strip()])
    assert motion.shape[1] == col
    return float(np.abs(np.diff(motion[:, rot_cols], axis=0)).max())


def seated_jitter(n=40, seed=0):
    """A seated clip whose hidden legs jump up to 33 degrees a frame: thighs
    flexed about 90 degrees (Euler rigs sit at gimbal lock there)."""
    rng = np.random.default_rng(seed)
    rot = random_motion(n, seed=seed, spread=0.2)
    for hip in (1, 2):
        flex = np.radians(90.0) + np.radians(rng.uniform(-33, 33, n)) * (np.arange(n) % 2)
        aa = np.stack([-flex, 0.3 * rng.normal(size=n), 0.3 * rng.normal(size=n)], -1)
        from hybrik_blender.core.rotations import axis_angle_to_matrix
        rot[:, hip] = axis_angle_to_matrix(aa)
    return rot


def test_euler_channels_never_jump_half_a_turn(body_model, tmp_path):
    """Seated, jittering legs retargeted onto an Euler-channel BVH rig: its
    curves step by less than 180 degrees, and so does the BVH it exports."""
    from tests.blender import rigs
    from tests.blender.test_retarget import assert_directions_follow
    bpy.ops.wm.read_factory_settings(use_empty=True)
    take = import_result(make_result(seated_jitter(), fps=FPS, seed=1), body_model,
                         pose_correctives=False, camera=False)
    tgt, _ = rigs.import_bvh("MOCAP")
    assert tgt.pose.bones["LeftHip"].rotation_mode not in ('QUATERNION', 'AXIS_ANGLE')
    rep = retarget(take.rig, tgt)
    steps = []
    for fc in fcurves_of(tgt):
        if fc.data_path.endswith("rotation_euler") and len(fc.keyframe_points) > 1:
            co = np.empty(2 * len(fc.keyframe_points), np.float32)
            fc.keyframe_points.foreach_get("co", co)
            steps.append(np.degrees(np.abs(np.diff(co[1::2]))).max())
    # the bound is 180; taking the same Euler branch every frame and
    # unwrapping each angle gives 179.5 here, the branch choice 112
    assert steps and max(steps) < 150.0, max(steps)
    frames = np.arange(rep.frame_start, rep.frame_end + 1)
    assert_directions_follow(take.rig, tgt, rep.mapping, frames, tol=0.01)
    path = export_bvh(tmp_path / "seated.bvh", tgt)
    assert _bvh_rotation_steps(path) < 180.0
    path = export_bvh(tmp_path / "source.bvh", take.rig)
    assert _bvh_rotation_steps(path) < 180.0
