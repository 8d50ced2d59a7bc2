"""From the camera of each frame to the reference camera, and to the world.

A result's rows are in the camera of their own frame (what the overlay on
the video needs). Its camera track (``Result.camera``) gives, per video
frame, the rotation R_k taking frame-k camera coordinates to the reference
camera's (the first camera frame's). For a moving camera:

* the pose in the *reference camera*: global orientation ``R_k G_k``, root
  ``R_k t_k``, joints ``R_k p`` (the local joint rotations do not change);
  the character then moves as it does in the world, whatever the camera did;
* the *world*: ``camera_to_world`` (reference camera -> Z-up floor world,
  from the clean-up's floor fit) applied to that;
* in Blender, each frame's capture camera sits at ``camera_to_world @ R_k``.

A static camera (no track, or mode "static") has R_k = I throughout, and
every function here returns its input unchanged.
"""
import dataclasses

import numpy as np


def is_moving(result):
    cam = getattr(result, "camera", None)
    return cam is not None and cam.mode == "moving" and len(cam.frame_index) > 0


def row_rotations(result):
    """(N, 3, 3) R_k for each row's frame (identity for a static camera)."""
    n = result.num_frames
    if not is_moving(result):
        return np.tile(np.eye(3), (n, 1, 1))
    rot, _ = result.camera.at(result.frame_index)
    return np.asarray(rot, np.float64)


def rotate_rows(result, rot):
    """A copy of `result` with every row turned by rot (N, 3, 3): global
    orientation, root translation and joints. Invalid rows stay as they are."""
    valid = np.asarray(result.valid, bool)
    rot = np.asarray(rot, np.float64)
    rm = result.rotmats.astype(np.float64)
    rm[valid, 0] = rot[valid] @ rm[valid, 0]
    root = result.root_translation.astype(np.float64)
    root[valid] = np.einsum("nij,nj->ni", rot[valid], root[valid])
    joints = result.joints29.astype(np.float64)
    joints[valid] = np.einsum("nij,nkj->nki", rot[valid], joints[valid])
    dt = result.rotmats.dtype
    return dataclasses.replace(result, rotmats=rm.astype(dt),
                               root_translation=root.astype(result.root_translation.dtype),
                               joints29=joints.astype(result.joints29.dtype))


def to_reference_camera(result):
    """Rows in the reference camera (see the module docstring)."""
    if not is_moving(result):
        return result
    return rotate_rows(result, row_rotations(result))


def to_frame_cameras(result_ref, camera_result=None):
    """Inverse of :func:`to_reference_camera`: rows back in the camera of
    their own frame. `camera_result` supplies the camera track (default:
    `result_ref`'s own)."""
    src = camera_result if camera_result is not None else result_ref
    if not is_moving(src):
        return result_ref
    return rotate_rows(result_ref, np.swapaxes(row_rotations(src), -1, -2))


def frame_camera_to_world(result, camera_to_world, frames=None):
    """(N, 4, 4) the pose of each row's capture camera in the world:
    ``camera_to_world @ [R_k 0; 0 1]``. `frames`: video frame numbers to
    use instead of the rows'."""
    m = np.asarray(camera_to_world, np.float64)
    fi = result.frame_index if frames is None else np.asarray(frames)
    out = np.tile(m, (len(fi), 1, 1))
    if is_moving(result):
        rot, _ = result.camera.at(fi)
        out[:, :3, :3] = m[:3, :3] @ rot
    return out
