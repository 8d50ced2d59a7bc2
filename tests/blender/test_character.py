import numpy as np
import pytest
import torch

import bpy
from hybrik_blender.blender.animation import import_result
from hybrik_blender.blender.character import (POSE_KEY_NAMES, SHAPE_KEY_NAMES,
                                              build_character)
from hybrik_blender.blender.keyframes import fcurves_of
from hybrik_blender.core.blender_space import CAMERA_TO_BLENDER
from hybrik_blender.core.body.model import rest_joints
from hybrik_blender.core.formats.result import ResultFormatError
from hybrik_blender.core.rotations import matrix_to_axis_angle
from hybrik_blender.core.body.skeleton import JOINT_NAMES, PARENTS
from tests.helpers import make_result, random_motion

TOLERANCE_M = 1e-4  # 0.1 mm


def evaluated_world_vertices(obj, frame):
    bpy.context.scene.frame_set(frame)
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    me = ev.to_mesh()
    co = np.empty(len(me.vertices) * 3, np.float32)
    me.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    mw = np.array(obj.matrix_world)
    return co.reshape(-1, 3).astype(np.float64) @ mw[:3, :3].T + mw[:3, 3]


def smplx_vertices(model_arrays, body_model, result):
    """Reference: the smplx package's SMPL forward pass, in camera
    coordinates, mapped into Blender's world by the documented camera axes."""
    import smplx
    n = result.num_frames
    sm = smplx.SMPL("unused", data_struct=smplx.utils.Struct(**model_arrays),
                    dtype=torch.float64, batch_size=n)
    aa = matrix_to_axis_angle(result.rotmats.astype(np.float64))
    betas = result.betas.astype(np.float64)
    transl = result.root_translation - rest_joints(body_model, betas)[:, 0]
    with torch.no_grad():
        out = sm(betas=torch.tensor(betas), global_orient=torch.tensor(aa[:, 0]),
                 body_pose=torch.tensor(aa[:, 1:].reshape(n, -1)), transl=torch.tensor(transl))
    return out.vertices.numpy() @ CAMERA_TO_BLENDER.T


def test_character_structure(empty_scene, body_model):
    rig, mesh = build_character(body_model, np.linspace(-2, 2, 10))
    bones = rig.data.bones
    assert len(bones) == 24 and {b.name for b in bones} == set(JOINT_NAMES)
    for i, name in enumerate(JOINT_NAMES):
        parent = bones[name].parent
        assert (parent.name if parent else None) == (JOINT_NAMES[PARENTS[i]] if i else None)
    assert len(mesh.data.vertices) == 6890 and len(mesh.data.polygons) == 13776
    assert [g.name for g in mesh.vertex_groups] == list(JOINT_NAMES)
    assert mesh.modifiers[0].type == 'ARMATURE' and mesh.modifiers[0].object == rig
    blocks = mesh.data.shape_keys.key_blocks
    assert [k.name for k in blocks] == ["Basis", *SHAPE_KEY_NAMES, *POSE_KEY_NAMES]
    for name in SHAPE_KEY_NAMES:
        assert blocks[name].slider_min <= -5 and blocks[name].slider_max >= 5
    assert np.allclose([blocks[n].value for n in SHAPE_KEY_NAMES], np.linspace(-2, 2, 10),
                       atol=1e-6)
    rig2, mesh2 = build_character(body_model, np.zeros(10), pose_correctives=False)
    assert len(mesh2.data.shape_keys.key_blocks) == 11


@pytest.mark.parametrize("per_frame_betas", [False, True])
def test_blender_vertices_match_smplx(empty_scene, body_model, model_arrays, per_frame_betas):
    n = 5
    rng = np.random.default_rng(11)
    rot = random_motion(n, seed=3, spread=0.6)
    if per_frame_betas:
        betas = rng.normal(0, 1, (n, 10))
    else:
        betas = np.tile(rng.normal(0, 1.2, 10), (n, 1))
    res = make_result(rot, betas=betas, seed=4)
    take = import_result(res, body_model, per_frame_betas=per_frame_betas)
    ref = smplx_vertices(model_arrays, body_model, res)
    # the pose correctives move vertices by centimetres: they are really tested
    assert np.abs(ref - smplx_vertices(dict(model_arrays, posedirs=0 * model_arrays["posedirs"]),
                                       body_model, res)).max() > 5e-3
    for k in range(n):
        got = evaluated_world_vertices(take.mesh, take.frame_start + k)
        err = np.abs(got - ref[k]).max()
        assert err < TOLERANCE_M, f"frame {k}: {err * 1000:.4f} mm"


def test_keys_are_bulk_continuous_and_timed(empty_scene, body_model):
    n = 40
    rot = random_motion(n, seed=5, spread=1.2)
    valid = np.ones(n, bool)
    valid[[7, 8, 20]] = False
    res = make_result(rot, valid=valid, fps=29.97, frame_index=np.arange(n) + 10)
    take = import_result(res, body_model)
    scene = bpy.context.scene
    assert scene.render.fps == 30 and abs(scene.render.fps / scene.render.fps_base - 29.97) < 1e-5
    assert (scene.frame_start, scene.frame_end) == (11, 11 + n - 1)
    curves = fcurves_of(take.rig)
    assert len(curves) == 24 * 4 + 3
    expected_frames = 11 + np.nonzero(valid)[0] + 0.0
    for fc in curves:
        co = np.empty(2 * len(fc.keyframe_points), np.float32)
        fc.keyframe_points.foreach_get("co", co)
        assert np.array_equal(co[0::2], expected_frames)
    for name in JOINT_NAMES:
        path = f'pose.bones["{name}"].rotation_quaternion'
        q = np.stack([_values(c) for c in sorted((c for c in curves if c.data_path == path),
                                                 key=lambda c: c.array_index)], -1)
        assert np.all(np.sum(q[1:] * q[:-1], -1) > 0), f"quaternion flip on {name}"
    shape_curves = fcurves_of(take.mesh.data.shape_keys)
    assert len(shape_curves) == 207


def _values(fc):
    co = np.empty(2 * len(fc.keyframe_points), np.float32)
    fc.keyframe_points.foreach_get("co", co)
    return co[1::2]


def test_second_import_makes_new_objects_and_keeps_the_first(empty_scene, body_model):
    res = make_result(random_motion(6, seed=1))
    first = import_result(res, body_model)
    first_names = (first.rig.name, first.mesh.name, first.rig.animation_data.action.name)
    before = evaluated_world_vertices(first.mesh, 3)
    second = import_result(make_result(random_motion(6, seed=2)), body_model)
    assert first.rig.name == first_names[0] and first.mesh.name == first_names[1]
    assert second.rig.name != first.rig.name and second.mesh.name != first.mesh.name
    assert second.rig.animation_data.action != first.rig.animation_data.action
    assert first.rig.animation_data.action.name == first_names[2]
    assert np.array_equal(evaluated_world_vertices(first.mesh, 3), before)


def test_result_without_valid_frames_is_refused(empty_scene, body_model):
    res = make_result(random_motion(3), valid=np.zeros(3, bool))
    with pytest.raises(ResultFormatError, match="no frame with a person"):
        import_result(res, body_model)
    assert len(bpy.data.objects) == 0


def test_gltf_export_of_the_character(empty_scene, body_model, tmp_path):
    """Also guards the bpy 4.2 exit crash after a glTF export: on 4.2 this
    pytest process must still end with status 0 (see conftest.py)."""
    take = import_result(make_result(random_motion(5)), body_model, pose_correctives=False)
    take.rig.select_set(True)
    take.mesh.select_set(True)
    path = tmp_path / "take.glb"
    bpy.ops.export_scene.gltf(filepath=str(path), export_format='GLB', use_selection=True,
                              export_animations=True, export_skins=True)
    assert path.stat().st_size > 100_000


def test_cleanup_on_import_stands_the_character_on_the_floor(empty_scene, body_model):
    """A noisy synthetic walk seen by a tilted camera: with the default
    clean-up the evaluated mesh stands on z = 0 and never sinks below it."""
    from hybrik_blender.core.motion.cleanup import CleanupOptions
    from hybrik_blender.core.motion.ground import Skeleton
    from hybrik_blender.core.motion.synthetic import add_noise, walk_cycle
    take = walk_cycle(body_model, num_frames=40)
    noisy = add_noise(take.result, Skeleton.from_model(body_model, np.zeros(10)), seed=1)
    raw = import_result(noisy, body_model, pose_correctives=False)
    cleaned = import_result(noisy, body_model, pose_correctives=False, cleanup=CleanupOptions())
    lowest_raw, lowest = [], []
    for k in range(0, 40, 4):
        lowest_raw.append(evaluated_world_vertices(raw.mesh, 1 + k)[:, 2].min())
        lowest.append(evaluated_world_vertices(cleaned.mesh, 1 + k)[:, 2].min())
    assert min(lowest) > -0.01 and max(lowest) < 0.05          # on the floor, not floating
    assert max(lowest_raw) < -0.5                               # raw: camera space, far below
    assert "hybrik_camera_to_world" in cleaned.rig


def test_camera_overlays_the_person_and_shows_the_video(empty_scene, body_model, tmp_path):
    """Each joint seen through the Blender camera lands on the pixel where the
    capture camera (focal length, principal point) saw it."""
    import cv2
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector
    video = tmp_path / "clip.mp4"
    wr = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 360))
    for i in range(6):
        wr.write(np.full((360, 640, 3), 40 * i, np.uint8))
    wr.release()
    res = make_result(random_motion(6, seed=2), image_size=(640, 360),
                      focal_length=(700.0, 700.0), principal_point=(300.0, 200.0))
    from hybrik_blender.core.motion.cleanup import CleanupOptions
    for cleanup in (None, CleanupOptions()):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        take = import_result(res, body_model, pose_correctives=False, video_path=str(video),
                             cleanup=cleanup)
        scene = bpy.context.scene
        cam = take.camera
        assert scene.camera == cam and (scene.render.resolution_x, scene.render.resolution_y) == (640, 360)
        assert abs(cam.data.lens - 700 * 36 / 640) < 1e-4
        bg = cam.data.background_images[0]
        assert bg.source == 'MOVIE_CLIP' and bg.clip.size[:] == (640, 360)
        assert bg.clip.frame_duration == 6 and cam.data.show_background_images
        from hybrik_blender.core.motion.cleanup import clean_take
        from hybrik_blender.core.body.kinematics import forward_kinematics
        # the cleaned motion stays in camera coordinates; only the world placement changes
        src = res if cleanup is None else clean_take(res, body_model, cleanup)[0]
        rest = rest_joints(body_model, src.betas[0])
        for k in (0, 3, 5):
            scene.frame_set(1 + k)
            _, joints_cam = forward_kinematics(src.rotmats[k], rest, PARENTS,
                                               src.root_translation[k])
            uv = joints_cam[:, :2] / joints_cam[:, 2:] * 700 + [300, 200]
            for j in (0, 7, 15, 20):
                head = take.rig.matrix_world @ take.rig.pose.bones[JOINT_NAMES[j]].head
                ndc = world_to_camera_view(scene, cam, Vector(head))
                px = np.array([ndc.x * 640, (1 - ndc.y) * 360])
                assert np.abs(px - uv[j]).max() < 0.05, (k, j, px, uv[j])
