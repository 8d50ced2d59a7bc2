"""A moving capture camera in Blender: the camera is animated with the
recovered rotation and lens, the joints still land on the capture camera's
pixels on every frame, and the character moves in the world frame."""
import cv2
import numpy as np
import pytest

import bpy
from hybrik_blender.blender.animation import import_result
from hybrik_blender.blender.keyframes import fcurves_of
from hybrik_blender.core.body.kinematics import forward_kinematics
from hybrik_blender.core.body.model import rest_joints
from hybrik_blender.core.body.skeleton import JOINT_NAMES, PARENTS
from hybrik_blender.core.formats.result import CameraTrack
from hybrik_blender.core.motion.cleanup import CleanupOptions, clean_take
from hybrik_blender.core.rotations import axis_angle_to_matrix
from tests.helpers import make_result, random_motion

W, H, F, C = 640, 360, 700.0, (300.0, 200.0)


def pan(n, seed=0):
    t = np.linspace(0, 1, n)[:, None]
    rng = np.random.default_rng(seed)
    aa = np.radians(np.array([4.0, 25.0, 3.0])) * np.sin(2 * np.pi * t * rng.uniform(0.5, 1, 3))
    return axis_angle_to_matrix(aa)


def moving_take(n, still=False, focal=None):
    """Rows in each frame's camera of a camera that pans by pan(n). `still`:
    the person stands still in the world (the reference camera's frame)."""
    rot_cam = pan(n)
    rot = random_motion(n, seed=3)
    root = np.array([0.2, 0.3, 4.0]) + 0.05 * np.random.default_rng(1).normal(0, 1, (n, 3))
    if still:
        rot[:] = rot[0]
        root[:] = root[0]
    # the person's pose in the reference camera -> each frame's own camera
    rot[:, 0] = np.swapaxes(rot_cam, -1, -2) @ rot[:, 0]
    root = np.einsum("nji,nj->ni", rot_cam, root)
    res = make_result(rot, root=root, image_size=(W, H), focal_length=(F, F),
                      principal_point=C)
    res.camera = CameraTrack(np.arange(n), rot_cam,
                             np.full(n, F) if focal is None else focal, "moving")
    return res


def write_clip(path, n):
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (W, H))
    for i in range(n):
        wr.write(np.full((H, W, 3), 10 * i % 250, np.uint8))
    wr.release()
    return str(path)


def projected(scene, cam, point):
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector
    ndc = world_to_camera_view(scene, cam, Vector(point))
    return np.array([ndc.x * W, (1 - ndc.y) * H])


@pytest.mark.parametrize("cleanup", [None, CleanupOptions()], ids=["raw", "cleanup"])
def test_moving_camera_overlay_is_exact_on_every_frame(empty_scene, body_model, tmp_path,
                                                       cleanup):
    n = 12
    res = moving_take(n)
    video = write_clip(tmp_path / "pan.mp4", n)
    take = import_result(res, body_model, pose_correctives=False, video_path=video,
                         cleanup=cleanup)
    scene, cam = bpy.context.scene, take.camera
    assert scene.camera == cam and cam.data.background_images[0].clip.frame_duration == n
    paths = {fc.data_path for fc in fcurves_of(cam)}
    assert {"location", "rotation_quaternion"} <= paths
    src = res if cleanup is None else clean_take(res, body_model, cleanup)[0]
    rest = rest_joints(body_model, src.betas[0])
    worst = 0.0
    for k in range(n):
        scene.frame_set(1 + k)
        _, joints_cam = forward_kinematics(src.rotmats[k], rest, PARENTS, src.root_translation[k])
        uv = joints_cam[:, :2] / joints_cam[:, 2:] * F + np.array(C)
        for j in range(24):
            head = take.rig.matrix_world @ take.rig.pose.bones[JOINT_NAMES[j]].head
            worst = max(worst, float(np.abs(projected(scene, cam, head) - uv[j]).max()))
    assert worst < 0.05, worst


def test_still_person_stays_still_while_the_camera_pans(empty_scene, body_model):
    n = 30
    res = moving_take(n, still=True)
    sweep = np.ptp(res.root_translation, axis=0).max()
    assert sweep > 1.0                       # the camera-space root sweeps across
    take = import_result(res, body_model, pose_correctives=False)
    pelvis = []
    for k in range(n):
        bpy.context.scene.frame_set(1 + k)
        pelvis.append(np.array(take.rig.matrix_world @ take.rig.pose.bones["pelvis"].head))
    assert np.ptp(np.array(pelvis), axis=0).max() < 1e-4
    # while the camera object turns with the recovered rotation
    angles = []
    for k in (0, n // 2):
        bpy.context.scene.frame_set(1 + k)
        angles.append(np.array(take.camera.matrix_world.to_3x3()))
    turn = np.degrees(np.arccos(np.clip((np.trace(angles[0].T @ angles[1]) - 1) / 2, -1, 1)))
    want = np.degrees(np.arccos(np.clip((np.trace(res.camera.rotation[n // 2]) - 1) / 2, -1, 1)))
    assert abs(turn - want) < 1e-3


def test_lens_is_keyed_when_the_focal_length_changes(empty_scene, body_model):
    n = 6
    focal = np.linspace(700.0, 800.0, n)
    res = moving_take(n, focal=focal)
    take = import_result(res, body_model, pose_correctives=False)
    for k in (0, n - 1):
        bpy.context.scene.frame_set(1 + k)
        assert abs(take.camera.data.lens - focal[k] * 36 / W) < 1e-3


def test_camera_root_mode_keeps_a_still_camera(empty_scene, body_model):
    res = moving_take(6)
    take = import_result(res, body_model, pose_correctives=False,
                         cleanup=CleanupOptions(root_mode="camera"))
    assert take.camera.animation_data is None
