"""A Blender camera that matches the capture camera, with the video behind.

Intrinsics: Blender's sensor fits the larger image side (36 mm, sensor_fit
AUTO), so ``lens = f_px * 36 / max(W, H)``; the principal point becomes a lens
shift in units of the larger side (image y points down, Blender's shift y
up). Extrinsics: the result's ``camera_to_world`` (OpenCV axes: x right,
y down, z forward) or, without it, the camera at the origin looking down +Y.
A Blender camera looks down its local -Z with +Y up, i.e. OpenCV's axes with
y and z flipped.

A moving camera (the result's camera track, see core.motion.world) is
animated: per video frame k the object sits at ``camera_to_world @ R_k``
(bulk keys on location and rotation_quaternion), and its lens is keyed when
the focal length changes. The video stays its background, so the picture
turns with it.
"""
import os
import sys

import bpy
import numpy as np
from mathutils import Matrix

from ..core.blender_space import CAMERA_TO_BLENDER, homogeneous
from ..core.rotations import make_quaternions_continuous, matrix_to_quaternion
from .keyframes import ActionWriter

SENSOR_MM = 36.0
_CV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])


def camera_matrix_world(camera_to_world=None):
    m = homogeneous(CAMERA_TO_BLENDER) if camera_to_world is None else np.asarray(camera_to_world)
    return m @ _CV_TO_BLENDER_CAMERA


def build_camera(result, name, camera_to_world=None, video_path=None, collection=None,
                 set_scene=True, frame_offset=1, track=None):
    """Camera object for `result`; the video as its background when found.
    `track`: a moving camera's (frame_index, camera_to_world (F, 4, 4),
    focal (F,)) to animate it with."""
    width, height = result.image_size
    fx, fy = result.focal_length
    cx, cy = result.principal_point
    data = bpy.data.cameras.new(name)
    data.sensor_fit = 'AUTO'
    data.sensor_width = SENSOR_MM
    data.lens = fx * SENSOR_MM / max(width, height)
    data.shift_x = (width / 2.0 - cx) / max(width, height)
    data.shift_y = (cy - height / 2.0) / max(width, height)
    data.clip_start, data.clip_end = 0.05, 500.0
    cam = bpy.data.objects.new(name, data)
    (collection or bpy.context.scene.collection).objects.link(cam)
    cam.matrix_world = Matrix(camera_matrix_world(camera_to_world).tolist())
    if track is not None:
        animate_camera(cam, *track, size=(width, height), frame_offset=frame_offset)
    if set_scene:
        scene = bpy.context.scene
        scene.camera = cam
        scene.render.resolution_x, scene.render.resolution_y = int(width), int(height)
        scene.render.resolution_percentage = 100
        scene.render.pixel_aspect_x = fx / fy if fy else 1.0
    if video_path and os.path.exists(video_path):
        try:
            attach_video(cam, video_path)
        except RuntimeError as exc:  # not a movie Blender can read: no background
            print(f"hybrik-blender: {os.path.basename(video_path)} cannot be the camera "
                  f"background: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc}",
                  file=sys.stderr)
    return cam


def attach_video(cam, video_path):
    """The video as the camera's background (a MovieClip). Clip frame 1 is
    video frame 0, which is where the import puts it too."""
    clip = bpy.data.movieclips.load(os.path.abspath(video_path), check_existing=True)
    clip.frame_start = 1
    cam.data.show_background_images = True
    bg = cam.data.background_images.new()
    bg.source = 'MOVIE_CLIP'
    bg.clip = clip
    bg.alpha = 1.0
    bg.display_depth = 'BACK'
    return clip


def animate_camera(cam, frame_index, camera_to_world, focal, size, frame_offset=1):
    """Key the camera object at every camera frame (bulk F-curves)."""
    frames = (frame_offset + np.asarray(frame_index)).astype(np.float64)
    m = np.asarray(camera_to_world, np.float64) @ _CV_TO_BLENDER_CAMERA
    quats = make_quaternions_continuous(matrix_to_quaternion(m[:, :3, :3]), axis=0)
    cam.rotation_mode = 'QUATERNION'
    writer = ActionWriter(cam, f"{cam.name}_motion")
    writer.add_array("location", frames, m[:, :3, 3])
    writer.add_array("rotation_quaternion", frames, quats)
    focal = np.asarray(focal, np.float64)
    if np.ptp(focal) > 1e-6 * focal.max():
        lens = ActionWriter(cam.data, f"{cam.name}_lens", id_type='CAMERA')
        lens.add("lens", 0, frames, focal * SENSOR_MM / max(size))
    return writer
