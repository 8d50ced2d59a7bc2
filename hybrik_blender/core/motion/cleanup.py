"""One entry point for the motion clean-up of a take: :func:`clean_take`.

Order of the steps (each one can be switched off):

1. **Shape per track** (``shape="track"``): one robust, confidence-weighted
   average of the betas for the whole take (:func:`robust_betas`), so bone
   lengths stay constant; ``"per_frame"`` keeps the estimator's betas.
2. **Smoothing** (``smoothing``): ``"offline"`` zero-phase filtering of all
   24 rotations in the log map and, separately, of the root translation
   (:mod:`.filters`); ``"one_euro"`` the causal filter (what a live preview
   gets); ``"off"``. Strength 0 leaves that channel bit-identical. An SMPL-X
   take's finger, jaw and eye rotations and its expression coefficients are
   filtered the same way with the rotation strength (fingers and face move
   as fast as the body's joints; the body-only steps below leave them alone).
3. **Floor** (needed by ``root_mode`` "world"/"in_place" and by foot
   locking): fitted to the soles of the smoothed motion (:mod:`.ground`),
   giving the 4x4 ``camera_to_world`` into a Z-up world with the floor at 0.
4. **Foot locking** (``foot_locking``): ``"auto"`` grounding plus IK pinning
   of planted feet, ``"grounding"`` only the root height, ``"off"``
   (:mod:`.footlock`).
5. **Root mode** (``root_mode``): ``"camera"`` the motion as captured, with
   the default camera (``homogeneous(CAMERA_TO_BLENDER)``); ``"world"`` the
   grounded world transform; ``"in_place"`` the world transform with the
   horizontal root motion removed (the pelvis stays above the world origin,
   keeping its height and orientation: for game loops).

Rotations and root translation stay in the camera coordinates of each
frame (joint 0 in that camera's frame), and the returned matrix is
what :func:`..blender_space.pose_channels` takes as ``camera_to_world``.
``joints29`` is recomputed from the cleaned pose (the leaves rigidly attached
to their parent joints) whenever the pose changed. Invalid frames keep their
placeholder rows and stay invalid.
"""
import dataclasses

import numpy as np

from ..body.average import fitted_average_skeleton
from ..blender_space import CAMERA_TO_BLENDER, homogeneous
from .filters import (ROTATION_BASE_CUTOFF_HZ, one_euro_rotations, one_euro_translation,
                      smooth_rotations, smooth_translation, strength_to_cutoff)
from .footlock import lock_feet
from ..body.model import rest_joints_29
from .ground import SOLE_JOINTS, Skeleton, estimate_floor, posed_skeleton, transform_points
from .world import is_moving, to_frame_cameras, to_reference_camera
from ..align.refine import evidence_weight
from ..body.kinematics import forward_kinematics
from ..body.skeleton import LEAF_PARENTS, PARENTS

SMOOTHING_MODES = ("off", "offline", "one_euro")
SMOOTHING_METHODS = ("gaussian", "butterworth")
SHAPE_MODES = ("track", "per_frame")
FOOT_LOCKING_MODES = ("off", "grounding", "auto")
ROOT_MODES = ("camera", "world", "in_place")


@dataclasses.dataclass
class CleanupOptions:
    """Clean-up settings; the defaults suit a finished HybrIK take at 25-60 fps.

    smoothing: "offline" (default; zero-phase, for finished clips),
        "one_euro" (causal, for streaming/preview) or "off".
    rotation_strength: 0 = untouched; 1 (default) = -3 dB at 4 Hz for the
        offline filter (One Euro: 1.5 Hz minimum cutoff); 2 = twice as smooth.
    translation_strength: the same for the root translation (1 = 3 Hz).
    method: offline filter shape, "gaussian" (default, no overshoot) or
        "butterworth" (2nd order, forward-backward magnitude).
    shape: "track" (default) one robust shape for the take, or "per_frame".
    foot_locking: "auto" (default), "grounding" or "off".
    blend_frames: frames of smoothstep blending into and out of each
        contact (inside it), at 30 fps (scaled with fps); default 3.
    root_mode: "world" (default), "camera" or "in_place".
    contact_height_m, contact_speed_mps: contact "on" thresholds (lowest sole
        point above the floor, horizontal ankle speed); the "off" thresholds
        are twice these (hysteresis). Defaults 0.03 m and 0.25 m/s.
    """
    smoothing: str = "offline"
    rotation_strength: float = 1.0
    translation_strength: float = 1.0
    method: str = "gaussian"
    shape: str = "track"
    foot_locking: str = "auto"
    blend_frames: int = 3
    root_mode: str = "world"
    contact_height_m: float = 0.03
    contact_speed_mps: float = 0.25

    def validate(self):
        for name, allowed in (("smoothing", SMOOTHING_MODES), ("method", SMOOTHING_METHODS),
                              ("shape", SHAPE_MODES), ("foot_locking", FOOT_LOCKING_MODES),
                              ("root_mode", ROOT_MODES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; "
                                 f"got {getattr(self, name)!r}")
        for name in ("rotation_strength", "translation_strength", "contact_height_m",
                     "contact_speed_mps"):
            value = float(getattr(self, name))
            if not (value >= 0 and np.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0; got {value}")
        if int(self.blend_frames) < 0:
            raise ValueError("blend_frames must be >= 0")
        return self


def robust_betas(betas, confidence=None, valid=None, iterations=30, eps=1e-4):
    """One shape for a track: the confidence-weighted geometric median of the
    valid frames' betas (Weiszfeld's IRLS: each frame weighted by confidence /
    distance to the current estimate), so a minority of wrong frames moves it
    little, unlike the mean. Falls back to equal weights when all confidences
    are zero. Returns (10,) float64."""
    b = np.asarray(betas, np.float64)
    n = b.shape[0]
    valid = np.ones(n, bool) if valid is None else np.asarray(valid, bool)
    if not valid.any():
        raise ValueError("no valid frame to average the shape over")
    b = b[valid]
    w = np.ones(len(b)) if confidence is None else np.asarray(confidence, np.float64)[valid]
    if not w.sum() > 0:
        w = np.ones(len(b))
    m = _weighted_median(b, w)
    for _ in range(iterations):
        d = np.linalg.norm(b - m, axis=1)
        wi = w / np.maximum(d, eps)
        new = wi @ b / wi.sum()
        if np.abs(new - m).max() < 1e-9:
            m = new
            break
        m = new
    return m


def _weighted_median(x, w):
    order = np.argsort(x, axis=0)
    xs = np.take_along_axis(x, order, 0)
    cw = np.cumsum(w[order], axis=0)
    idx = np.argmax(cw >= 0.5 * cw[-1], axis=0)
    return xs[idx, np.arange(x.shape[1])]


def clean_take(result, model, options=None):
    """Clean up a take; returns ``(new_result, camera_to_world)``.

    result: :class:`.result.Result`; model: :class:`.body_model.BodyModel`
    (needed for bone lengths and soles), or None for the built-in average
    skeleton fitted to the result's joints (then shape is always per track);
    options: :class:`CleanupOptions` (defaults when None). The input is not
    modified.

    With a moving camera (``result.camera`` mode "moving") the clean-up runs
    in the reference camera, where the person moves as in the world
    (:mod:`.world`); the rows go back to their own frames' cameras after it
    and the matrix maps the reference camera to the world. Root mode
    "camera" keeps the motion as captured, in each frame's camera.

    Per-joint confidences (``joint_confidence``) weight the rotation filter
    and decide which feet the floor fit and foot locking may use.
    """
    opt = (options or CleanupOptions()).validate()
    if not is_moving(result) or opt.root_mode == "camera":
        return _clean(result, model, opt)
    cleaned, matrix = _clean(to_reference_camera(result), model, opt)
    return to_frame_cameras(cleaned, result), matrix


def _clean(result, model, opt):
    if model is None:
        opt = dataclasses.replace(opt, shape="track")
    default_m = homogeneous(CAMERA_TO_BLENDER)
    valid = np.asarray(result.valid, bool)
    fps = float(result.fps)
    if not valid.any():
        return dataclasses.replace(result), default_m

    use_kid = result.kid is not None and model is not None and model.has_kid
    if use_kid:  # the children's coefficient is an 11th beta (HybrIK-X)
        both = robust_betas(np.concatenate([result.betas, result.kid[:, None]], axis=1),
                            result.confidence, valid)
        track_betas, track_kid = both[:-1], float(both[-1])
    else:
        track_betas = robust_betas(result.betas, result.confidence, valid)
        track_kid = None
    betas = result.betas
    kid = result.kid
    if opt.shape == "track":
        betas = result.betas.copy()
        betas[valid] = track_betas.astype(betas.dtype)
        if use_kid:
            kid = result.kid.copy()
            kid[valid] = track_kid
    skeleton = None

    rot = result.rotmats
    root = result.root_translation
    seen = None
    if result.joint_confidence is not None:
        seen = evidence_weight(result.joint_confidence)
    if opt.smoothing == "offline":
        rot = smooth_rotations(rot, fps, opt.rotation_strength, valid, opt.method, weights=seen)
        root = smooth_translation(root, fps, opt.translation_strength, valid, opt.method)
    elif opt.smoothing == "one_euro":
        rot = one_euro_rotations(rot, fps, opt.rotation_strength, valid, result.time_s)
        root = one_euro_translation(root, fps, opt.translation_strength, valid, result.time_s)

    need_floor = opt.root_mode != "camera" or opt.foot_locking != "off"
    matrix = default_m
    if need_floor:
        skeleton = _skeleton(model, track_betas, result, track_kid)
        rot64 = np.asarray(rot, np.float64)
        root64 = np.asarray(root, np.float64)
        _, _, soles = posed_skeleton(rot64[valid], skeleton, root64[valid])
        floor = estimate_floor(soles, fps=fps,
                               weights=None if seen is None else seen[valid][:, SOLE_JOINTS])
        world = floor.camera_to_world()
        if opt.foot_locking != "off":
            scale = fps / 30.0
            params = dict(height_on=opt.contact_height_m, height_off=2 * opt.contact_height_m,
                          speed_on=opt.contact_speed_mps, speed_off=2 * opt.contact_speed_mps)
            rot64, root64, _ = lock_feet(rot64, root64, skeleton, world, valid, fps,
                                         mode=opt.foot_locking, contact_params=params,
                                         blend_frames=int(round(opt.blend_frames * scale)),
                                         seen=None if seen is None else seen[:, [7, 8]] > 0.5)
            rot, root = rot64, root64
        if opt.root_mode == "in_place":
            root_w = transform_points(world, root64)
            root_w[:, :2] = 0.0
            root = transform_points(np.linalg.inv(world), root_w)
        if opt.root_mode != "camera":
            matrix = world

    extras = _smooth_smplx_fields(result, opt, fps, valid)
    if kid is not result.kid:
        extras["kid"] = kid
    changed = rot is not result.rotmats or root is not result.root_translation
    if not changed and betas is result.betas:
        return dataclasses.replace(result, **extras), matrix
    rot = _keep_invalid(np.asarray(rot, np.float32), result.rotmats, valid)
    root = _keep_invalid(np.asarray(root, np.float32), result.root_translation, valid)
    joints29 = result.joints29
    if changed or opt.shape == "track":
        if skeleton is None:
            skeleton = _skeleton(model, track_betas, result, track_kid)
        joints29 = result.joints29.copy()
        if opt.shape == "per_frame":
            # bone lengths of each frame's own shape
            rest29 = rest_joints_29(model, betas[valid], kid=kid[valid] if use_kid else None)
            j29 = _per_frame_joints(rot[valid], rest29, root[valid])
        else:
            _, j29, _ = posed_skeleton(rot[valid].astype(np.float64), skeleton,
                                       root[valid].astype(np.float64))
        joints29[valid] = j29.astype(joints29.dtype)
    return dataclasses.replace(result, rotmats=rot, betas=betas, root_translation=root,
                               joints29=joints29, **extras), matrix


_EXTRA_ROTATIONS = {"hand_rotmats": 30, "jaw_rotmat": None, "eye_rotmats": 2}


def _smooth_smplx_fields(result, opt, fps, valid):
    """The SMPL-X-only fields of a take, smoothed like the body rotations."""
    out = {}
    if opt.smoothing == "off" or strength_to_cutoff(opt.rotation_strength,
                                                    ROTATION_BASE_CUTOFF_HZ) is None:
        return out
    for key, joints in _EXTRA_ROTATIONS.items():
        rot = getattr(result, key, None)
        if rot is None:
            continue
        r = rot.reshape((len(rot), joints or 1, 3, 3))
        if opt.smoothing == "offline":
            new = smooth_rotations(r, fps, opt.rotation_strength, valid, opt.method)
        else:
            new = one_euro_rotations(r, fps, opt.rotation_strength, valid, result.time_s)
        out[key] = _keep_invalid(np.asarray(new, np.float32).reshape(rot.shape), rot, valid)
    if result.expression is not None:
        e = result.expression
        if opt.smoothing == "offline":
            cutoff = strength_to_cutoff(opt.rotation_strength, ROTATION_BASE_CUTOFF_HZ)
            new = smooth_translation(e, fps, valid=valid, method=opt.method, cutoff_hz=cutoff)
        else:
            new = one_euro_translation(e, fps, opt.rotation_strength, valid, result.time_s)
        out["expression"] = _keep_invalid(np.asarray(new, np.float32), e, valid)
    return out


def _skeleton(model, betas, result, kid=None):
    if model is not None:
        return Skeleton.from_model(model, betas, kid)
    return Skeleton.from_rest29(fitted_average_skeleton(result.joints29, result.valid))


def _keep_invalid(new, old, valid):
    if not valid.all():
        new = new.copy() if new is old else new
        new[~valid] = old[~valid]
    return new


def _per_frame_joints(rot, rest29, root):
    rot = rot.astype(np.float64)
    glob, posed = forward_kinematics(rot, rest29[:, :24], PARENTS, root.astype(np.float64))
    offsets = rest29[:, 24:] - rest29[:, LEAF_PARENTS]
    leaves = posed[:, LEAF_PARENTS] + np.einsum("nkab,nkb->nka", glob[:, LEAF_PARENTS], offsets)
    return np.concatenate([posed, leaves], 1)


def add_cleanup_arguments(parser, default_on):
    """The clean-up options as command-line flags (worker and headless CLIs).

    With default_on the clean-up runs unless ``--no-cleanup``; otherwise only
    with ``--clean``. Any explicit option switches it on."""
    g = parser.add_argument_group("motion clean-up")
    if default_on:
        g.add_argument("--no-cleanup", action="store_true",
                       help="import the raw motion: no smoothing, floor or foot locking")
    else:
        g.add_argument("--clean", action="store_true",
                       help="smooth, ground and foot-lock the motion before writing it")
    d = CleanupOptions()
    g.add_argument("--smoothing", choices=("offline", "one_euro", "off"),
                   help=f"temporal filter (default {d.smoothing})")
    from ..argtypes import non_negative_float
    g.add_argument("--smooth-strength", type=non_negative_float,
                   help=f"rotation smoothing strength, 0 = none (default {d.rotation_strength})")
    g.add_argument("--root-smooth-strength", type=non_negative_float,
                   help=f"root translation smoothing (default {d.translation_strength})")
    g.add_argument("--foot-locking", choices=("auto", "grounding", "off"),
                   help=f"pin planted feet (default {d.foot_locking})")
    g.add_argument("--root-mode", choices=("camera", "world", "in_place"),
                   help=f"camera space, grounded world, or in place (default {d.root_mode})")
    g.add_argument("--shape", choices=("track", "per_frame"),
                   help=f"one shape per track or per frame (default {d.shape})")


_ARG_FIELDS = {"smoothing": "smoothing", "smooth_strength": "rotation_strength",
               "root_smooth_strength": "translation_strength",
               "foot_locking": "foot_locking", "root_mode": "root_mode", "shape": "shape"}


def cleanup_options_from_args(args):
    """CleanupOptions from parsed flags, or None when no clean-up is asked."""
    given = {f: getattr(args, a) for a, f in _ARG_FIELDS.items()
             if getattr(args, a, None) is not None}
    if getattr(args, "no_cleanup", False):
        return None
    if not (given or getattr(args, "clean", False) or hasattr(args, "no_cleanup")):
        return None
    return dataclasses.replace(CleanupOptions(), **given).validate()
