"""Import a result file onto an SMPL character as keyframes."""
import dataclasses
import os

import bpy
import numpy as np

from ..core.body import model as bm
from ..core.body.average import fitted_average_skeleton
from ..core.blender_space import CAMERA_TO_BLENDER, homogeneous, pose_channels
from ..core.motion.world import frame_camera_to_world, is_moving
from ..core.motion.cleanup import clean_take
from ..core.body.kinematics import pose_corrective_features
from ..core.formats.result import ResultFormatError, clip_betas
from ..core.body.skeleton import JOINT_NAMES
from .character import (POSE_KEY_NAMES, SHAPE_KEY_NAMES, build_armature, build_character,
                        rest_matrices)
from .camera import build_camera
from .keyframes import ActionWriter


@dataclasses.dataclass
class ImportedTake:
    rig: object
    mesh: object
    frame_start: int
    frame_end: int
    num_keys: int
    camera: object = None


def set_scene_timing(scene, fps, frame_start, frame_end):
    """Scene fps as Blender wants it: an integer fps and a divisor (29.97 ->
    30 / 1.001), and the frame range of the clip."""
    base = max(1, int(round(fps)))
    scene.render.fps = base
    scene.render.fps_base = base / float(fps)
    scene.frame_start = int(frame_start)
    scene.frame_end = int(frame_end)
    scene.frame_current = int(frame_start)


def import_result(result, model, *, name=None, per_frame_betas=False,
                  pose_correctives=True, frame_offset=1, collection=None,
                  set_scene=True, cleanup=None, camera=True, video_path=None):
    """Build a character and key the result's valid frames onto it.

    Source frame k becomes scene frame ``frame_offset + k`` (video frame 0 ->
    scene frame 1, as a MovieClip shows it). Frames without a person get no
    key. The shape is the clip's confidence-weighted mean betas, held
    constant, unless `per_frame_betas` (then shape keys and bone offsets are
    keyed per frame; the skin stays exact, see core/blender_space.py).

    Without a body model (``model=None``) an armature alone is built on the
    built-in average skeleton, scaled to the limb lengths in the result.

    ``cleanup`` (core.cleanup.CleanupOptions) smooths, grounds and foot-locks
    the motion first; the character is then placed in a Z-up world with the
    floor at z = 0 (or as the root mode says). Without it the result's own
    ``camera_to_world`` is used when present, else the camera sits at the
    origin looking down +Y. With a moving camera (the result's camera track)
    the character moves in that world frame (the camera's turns taken out)
    and the camera is animated with the recovered rotation and lens, so the
    overlay on the video stays exact; root mode "camera" keeps the motion
    in the camera's space with a still camera.

    With ``camera`` a camera matching the capture camera is added (and made
    the scene camera when ``set_scene``), with the video at `video_path` as
    its background when the file exists.
    """
    valid = np.asarray(result.valid, bool)
    if not valid.any():
        raise ResultFormatError("the result has no frame with a person in it")
    camera_to_world = result.camera_to_world
    if cleanup is not None:
        result, camera_to_world = clean_take(result, model, cleanup)
    # a moving camera: each frame's capture camera turned from the reference
    # one, for the character and for the Blender camera alike
    moving = is_moving(result) and (cleanup is None or cleanup.root_mode != "camera")
    base = homogeneous(CAMERA_TO_BLENDER) if camera_to_world is None else camera_to_world
    frames = (frame_offset + result.frame_index[valid]).astype(np.float64)
    rot = result.rotmats[valid].astype(np.float64)
    root = result.root_translation[valid].astype(np.float64)
    rest_betas = clip_betas(result)
    name = name or f"SMPL_{os.path.splitext(result.source)[0] or 'take'}"

    if model is None:
        rest29 = fitted_average_skeleton(result.joints29, valid)
        rig, mesh = build_armature(name, rest29, collection), None
        per_frame_betas = pose_correctives = False
        joints = rest29[None, :24]
    elif per_frame_betas:
        frame_betas = result.betas[valid].astype(np.float64)
        joints = bm.rest_joints(model, frame_betas)
    else:
        joints = bm.rest_joints(model, rest_betas)[None]
    if model is not None:
        rig, mesh = build_character(model, rest_betas, name, pose_correctives, collection)
    pose_camera = (frame_camera_to_world(result, base, result.frame_index[valid]) if moving
                   else camera_to_world)
    quats, locs = pose_channels(rest_matrices(rig), rot, joints, root,
                                camera_to_world=pose_camera)

    arm = ActionWriter(rig, f"{rig.name}_motion")
    for i, bname in enumerate(JOINT_NAMES):
        path = f'pose.bones["{bname}"]'
        arm.add_array(f"{path}.rotation_quaternion", frames, quats[:, i], group=bname)
        if i == 0 or per_frame_betas:
            arm.add_array(f"{path}.location", frames, locs[:, i], group=bname)
    num_keys = len(frames) * (4 * 24 + (3 * 24 if per_frame_betas else 3))

    channels = []
    if pose_correctives:
        channels += list(zip(POSE_KEY_NAMES, pose_corrective_features(rot).T))
    if per_frame_betas:
        channels += list(zip(SHAPE_KEY_NAMES, frame_betas.T))
    if channels:
        shapes = ActionWriter(mesh.data.shape_keys, f"{rig.name}_shapes", id_type='KEY')
        for kname, values in channels:
            shapes.add(f'key_blocks["{kname}"].value', 0, frames, values)
        num_keys += len(frames) * len(channels)

    rig["hybrik_source"] = result.source
    rig["hybrik_fps"] = float(result.fps)
    rig["hybrik_backend"] = result.backend
    if camera_to_world is not None:
        rig["hybrik_camera_to_world"] = [float(v) for v in np.ravel(camera_to_world)]
    start, end = int(frames[0]), int(frames[-1])
    if set_scene:
        set_scene_timing(bpy.context.scene, result.fps, start, end)
    cam = None
    if camera:
        track = None
        if moving:
            cam_track = result.camera
            track = (cam_track.frame_index, frame_camera_to_world(result, base,
                                                                  cam_track.frame_index),
                     cam_track.focal)
        cam = build_camera(result, f"{rig.name}_camera", camera_to_world, video_path,
                           collection, set_scene, frame_offset, track)
    return ImportedTake(rig, mesh, start, end, num_keys, cam)
