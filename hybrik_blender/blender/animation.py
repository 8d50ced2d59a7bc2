"""Import a result file onto an SMPL or SMPL-X character as keyframes."""
import dataclasses
import os

import bpy
import numpy as np

from ..core.body import model as bm
from ..core.body.average import average_rest_points_x, fitted_average_skeleton
from ..core.body.kinematics import pose_corrective_features
from ..core.body.pose import is_smplx_take, smplx_rotmats, weighted_clip_value
from ..core.body.skeleton import SMPLX_PARENTS
from ..core.blender_space import CAMERA_TO_BLENDER, homogeneous, pose_channels
from ..core.formats.result import ResultFormatError, clip_betas
from ..core.motion.cleanup import clean_take
from ..core.motion.world import frame_camera_to_world, is_moving
from .camera import build_camera
from .character import (EXPRESSION_KEY_NAMES, KID_KEY_NAME, SHAPE_KEY_NAMES, bone_names,
                        build_armature, build_armature_x, build_character, pose_key_names,
                        rest_matrices)
from .keyframes import ActionWriter

BODY_MODEL_CHOICES = ("auto", "smpl", "smplx")
# A bone's location is keyed only where it moves: the root always, every bone
# with per-frame betas, else the bones whose joint per-frame expressions shift
# by more than this (SMPL-X's head and jaw joints depend a little on the
# expression); below it the skin error is at most twice this.
LOCATION_EPS_M = 1e-6


@dataclasses.dataclass
class ImportedTake:
    rig: object
    mesh: object
    frame_start: int
    frame_end: int
    num_keys: int
    camera: object = None
    model_type: str = "smpl"
    notes: tuple = ()


def set_scene_timing(scene, fps, frame_start, frame_end):
    """Scene fps as Blender wants it: an integer fps and a divisor (29.97 ->
    30 / 1.001), and the frame range of the clip."""
    base = max(1, int(round(fps)))
    scene.render.fps = base
    scene.render.fps_base = base / float(fps)
    scene.frame_start = int(frame_start)
    scene.frame_end = int(frame_end)
    scene.frame_current = int(frame_start)


def character_type(result, model=None, body_model="auto"):
    """Which character a take gets: the model file's type when there is one;
    without one ``body_model``, where "auto" means SMPL-X for a take made for
    SMPL-X (``body_model == "smplx"`` or hands/jaw/eyes/expression/kid
    fields), else SMPL. Raises ValueError when `body_model` contradicts the
    file."""
    if body_model not in BODY_MODEL_CHOICES:
        raise ValueError(f"body model must be one of {', '.join(BODY_MODEL_CHOICES)}; "
                         f"got {body_model!r}")
    if model is not None:
        if body_model != "auto" and body_model != model.model_type:
            want = {"smpl": "SMPL", "smplx": "SMPL-X"}
            raise bm.BodyModelError(f"{model.source or 'the body model'} is an "
                                    f"{want[model.model_type]} model, but "
                                    f"{want[body_model]} was chosen")
        return model.model_type
    if body_model != "auto":
        return body_model
    return "smplx" if is_smplx_take(result) else "smpl"


def _animated_bones(result, kind, hands, count):
    """Which bones get keys. An SMPL-X character's fingers, jaw and eyes are
    keyed only when the take has them (and ``hands`` for the fingers);
    otherwise they stay unkeyed at rest, which is exact (a bone at its rest
    rotation needs no offset whatever the shape) and leaves them free to
    be posed by hand."""
    out = np.ones(count, bool)
    if kind == "smplx":
        out[22] = result.jaw_rotmat is not None
        out[23:25] = result.eye_rotmats is not None
        out[25:] = bool(hands) and result.hand_rotmats is not None
    return out


def import_result(result, model, *, name=None, per_frame_betas=False,
                  pose_correctives=True, frame_offset=1, collection=None,
                  set_scene=True, cleanup=None, camera=True, video_path=None,
                  body_model="auto", hands=True, expressions=True, camera_to_world=None):
    """Build a character and key the result's valid frames onto it.

    Source frame k becomes scene frame ``frame_offset + k`` (video frame 0 ->
    scene frame 1, as a MovieClip shows it). Frames without a person get no
    key. The shape is the clip's confidence-weighted mean betas (and kid
    coefficient), held constant, unless `per_frame_betas` (then shape keys
    and bone offsets are keyed per frame; the skin stays exact, see
    core/blender_space.py).

    The character is SMPL or SMPL-X as :func:`character_type` decides (the
    model file's type; without a file ``body_model``). An SMPL-X character
    takes the body rotations, the jaw and eyes and, with ``hands``, the
    fingers (``hand_rotmats``) of the take; with ``expressions`` its
    expression coefficients are keyed on the Exp shape keys. What the take
    lacks stays at the model's rest (straight fingers, closed jaw, neutral
    face). An SMPL-X take on an SMPL character keeps its body only; the
    returned ``notes`` say what was left out.

    Without a body model (``model=None``) an armature alone is built on the
    built-in average skeleton, scaled to the limb lengths in the result (for
    SMPL-X with the average hand and face points of
    :func:`..core.body.average.average_rest_points_x`).

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

    ``camera_to_world`` (4x4) places the take with that camera pose instead
    of its own (several people share one camera and one floor; see
    blender/people.py).
    """
    valid = np.asarray(result.valid, bool)
    if not valid.any():
        raise ResultFormatError("the result has no frame with a person in it")
    shared = camera_to_world
    kind = character_type(result, model, body_model)
    camera_to_world = result.camera_to_world
    if cleanup is not None:
        result, camera_to_world = clean_take(result, model, cleanup)
    if shared is not None:
        camera_to_world = np.asarray(shared, np.float64)
    # a moving camera: each frame's capture camera turned from the reference
    # one, for the character and for the Blender camera alike
    camera_moves = is_moving(result) and (cleanup is None or cleanup.root_mode != "camera")
    base = homogeneous(CAMERA_TO_BLENDER) if camera_to_world is None else camera_to_world
    frames = (frame_offset + result.frame_index[valid]).astype(np.float64)
    root = result.root_translation[valid].astype(np.float64)
    rest_betas = clip_betas(result)
    name = name or f"{'SMPLX' if kind == 'smplx' else 'SMPL'}_" \
                   f"{os.path.splitext(result.source)[0] or 'take'}"
    notes = []
    moving = np.zeros(0, bool)  # bones whose rest joint moves per frame (SMPL-X expressions)

    if kind == "smplx":
        rot = smplx_rotmats(result, hands=hands, rows=valid)
        parents = SMPLX_PARENTS
    else:
        rot = result.rotmats[valid].astype(np.float64)
        parents = None
        if is_smplx_take(result):
            notes.append("the SMPL character has no fingers, jaw, eyes or expressions: "
                         "only the body of this SMPL-X take is imported")

    expression = None
    if kind == "smplx" and expressions and result.expression is not None:
        expression = result.expression[valid].astype(np.float64)
    kid, frame_kid = 0.0, None
    if result.kid is not None and kind == "smplx":
        if model is not None and model.has_kid:
            kid = float(weighted_clip_value(result.kid, result))
            frame_kid = result.kid[valid].astype(np.float64) if per_frame_betas else kid
        elif model is not None and np.any(result.kid[valid] != 0):
            notes.append("the take has a children's shape (kid) but the body model has no "
                         "children's template (smplx_kid_template.npy): it is ignored")

    if model is None:
        rest29 = fitted_average_skeleton(result.joints29, valid)
        if kind == "smplx":
            points = average_rest_points_x(rest29)
            rig = build_armature_x(name, points, collection)
            joints = points[None, :55]
        else:
            rig = build_armature(name, rest29, collection)
            joints = rest29[None, :24]
        mesh = None
        per_frame_betas = pose_correctives = False
        expression = None
    else:
        frame_betas = result.betas[valid].astype(np.float64) if per_frame_betas else rest_betas
        if kind == "smplx":
            rest = bm.model_joints(model, rest_betas, kid=kid if model.has_kid else None)
            joints = rest[None]
            if per_frame_betas or expression is not None:
                joints = bm.model_joints(model, frame_betas, expression,
                                         frame_kid if model.has_kid else None)
                shifted = np.abs(joints - rest).max(axis=-1)
                moving = shifted.reshape(-1, shifted.shape[-1]).max(axis=0) > LOCATION_EPS_M
        else:
            joints = bm.rest_joints(model, frame_betas)
            joints = joints if per_frame_betas else joints[None]
        rig, mesh = build_character(model, rest_betas, name, pose_correctives, collection,
                                    expressions=expressions, kid=kid)
    names = bone_names(rig)
    kw = {} if parents is None else {"parents": parents}
    pose_camera = (frame_camera_to_world(result, base, result.frame_index[valid])
                   if camera_moves else camera_to_world)
    quats, locs = pose_channels(rest_matrices(rig, names), rot, joints, root,
                                camera_to_world=pose_camera, **kw)

    arm = ActionWriter(rig, f"{rig.name}_motion")
    num_keys = 0
    animated = _animated_bones(result, kind, hands, len(names))
    for i, bname in enumerate(names):
        if not animated[i]:
            continue
        path = f'pose.bones["{bname}"]'
        arm.add_array(f"{path}.rotation_quaternion", frames, quats[:, i], group=bname)
        num_keys += 4
        if i == 0 or per_frame_betas or (i < len(moving) and moving[i]):
            arm.add_array(f"{path}.location", frames, locs[:, i], group=bname)
            num_keys += 3
    num_keys *= len(frames)

    channels = []
    if pose_correctives:
        feats = pose_corrective_features(rot)
        keyed = np.any(feats != 0, axis=0)  # a corrective at 0 on every frame needs no key
        channels += [(n, feats[:, k]) for k, n in enumerate(pose_key_names(kind)) if keyed[k]]
    if per_frame_betas:
        channels += list(zip(SHAPE_KEY_NAMES, result.betas[valid].astype(np.float64).T))
        if kind == "smplx" and model.has_kid and result.kid is not None:
            channels.append((KID_KEY_NAME, np.broadcast_to(frame_kid, frames.shape)))
    if expression is not None:
        channels += list(zip(EXPRESSION_KEY_NAMES[:model.num_expression],
                             expression[:, :model.num_expression].T))
    if channels:
        shapes = ActionWriter(mesh.data.shape_keys, f"{rig.name}_shapes", id_type='KEY')
        for kname, values in channels:
            shapes.add(f'key_blocks["{kname}"].value', 0, frames, values)
        num_keys += len(frames) * len(channels)

    rig["hybrik_source"] = result.source
    rig["hybrik_fps"] = float(result.fps)
    rig["hybrik_backend"] = result.backend
    rig["hybrik_hands"] = bool(kind == "smplx" and animated[25:].all())
    if notes:
        rig["hybrik_notes"] = "\n".join(notes)
    if camera_to_world is not None:
        rig["hybrik_camera_to_world"] = [float(v) for v in np.ravel(camera_to_world)]
    start, end = int(frames[0]), int(frames[-1])
    if set_scene:
        set_scene_timing(bpy.context.scene, result.fps, start, end)
    cam = None
    if camera:
        track = None
        if camera_moves:
            cam_track = result.camera
            track = (cam_track.frame_index, frame_camera_to_world(result, base,
                                                                  cam_track.frame_index),
                     cam_track.focal)
        cam = build_camera(result, f"{rig.name}_camera", camera_to_world, video_path,
                           collection, set_scene, frame_offset, track)
    return ImportedTake(rig, mesh, start, end, num_keys, cam, kind, tuple(notes))
