"""A Blender camera that matches the capture camera, with the video behind.

Intrinsics: Blender's sensor fits the larger image side (36 mm, sensor_fit
AUTO), so ``lens = f_px * 36 / max(W, H)``; the principal point becomes a lens
shift in units of the larger side (image y points down, Blender's shift y
up). Extrinsics: the result's ``camera_to_world`` (OpenCV axes: x right,
y down, z forward) or, without it, the camera at the origin looking down +Y.
A Blender camera looks down its local -Z with +Y up, i.e. OpenCV's axes with
y and z flipped.
"""
import os

import bpy
import numpy as np
from mathutils import Matrix

from ..core.blender_space import CAMERA_TO_BLENDER, homogeneous

SENSOR_MM = 36.0
_CV_TO_BLENDER_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])


def camera_matrix_world(camera_to_world=None):
    m = homogeneous(CAMERA_TO_BLENDER) if camera_to_world is None else np.asarray(camera_to_world)
    return m @ _CV_TO_BLENDER_CAMERA


def build_camera(result, name, camera_to_world=None, video_path=None, collection=None,
                 set_scene=True):
    """Camera object for `result`; the video as its background when found."""
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
    if set_scene:
        scene = bpy.context.scene
        scene.camera = cam
        scene.render.resolution_x, scene.render.resolution_y = int(width), int(height)
        scene.render.resolution_percentage = 100
        scene.render.pixel_aspect_x = fx / fy if fy else 1.0
    if video_path and os.path.exists(video_path):
        attach_video(cam, video_path)
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
