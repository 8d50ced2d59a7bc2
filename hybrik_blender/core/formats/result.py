"""The result file: what the worker writes and Blender reads.

A result is a NumPy ``.npz`` archive (no pickled objects; always loaded with
``allow_pickle=False``). It holds one capture of one video: one or more
*tracks* (people), each a take of its own. Format version 2; version-1 files
(one person, no ``track`` column) still load as a single track with id 0.

Rows are stored in long format: every row is one frame of one track, rows are
grouped by track (ascending id) and, inside a track, ordered by frame.

=================  ==============  ============================================
key                shape / dtype   meaning
=================  ==============  ============================================
format             () str          ``"hybrik-blender.result"``
version            () int64        ``2``
-- per row (N rows over all tracks) -------------------------------------------
track              (N,) int64      track (person) id, >= 0; absent in v1
frame_index        (N,) int64      source frame number (0 = first frame of the
                                   video), strictly increasing within a track
time_s             (N,) float64    presentation time of that frame, seconds
rotmats            (N,24,3,3) f32  local joint rotations, SMPL convention
                                   (parent-relative; joint 0 is the global
                                   orientation in the camera frame). For an
                                   SMPL-X take (``body_model`` "smplx") joints
                                   0-21 are SMPL-X's body joints and 22-23 are
                                   identity; the hands are in ``hand_rotmats``
betas              (N,10) f32      shape coefficients
root_translation   (N,3) f32       pelvis joint position in camera coordinates
                                   (x right, y down, z forward), metres. For
                                   smplx use ``transl = root_translation -
                                   J_0(betas)``.
joints29           (N,29,3) f32    24 SMPL joints + 5 HybrIK leaves, camera
                                   coordinates, metres
bbox               (N,4) f32       person box x0, y0, x1, y1 in pixels
confidence         (N,) f32        0..1
valid              (N,) bool       False where the person was not found; those
                                   rows hold finite placeholders, never
                                   estimates
-- optional per row ------------------------------------------------------------
joint_confidence   (N,24) f32      0..1 per rotation joint (how well the
                                   joint's rotation is supported by evidence)
hand_rotmats       (N,30,3,3) f32  local rotations of the 15 finger joints of
                                   each hand, SMPL-X order (left index1-3,
                                   middle1-3, pinky1-3, ring1-3, thumb1-3, then
                                   the right hand); identity where unknown
hand_confidence    (N,30) f32      0..1 per finger joint
jaw_rotmat         (N,3,3) f32     SMPL-X jaw, local
eye_rotmats        (N,2,3,3) f32   SMPL-X left and right eye, local
expression         (N,10) f32      SMPL-X expression coefficients
kid                (N,) f32        HybrIK-X's 11th shape coefficient (the
                                   kid-template blend)
-- per clip --------------------------------------------------------------------
fps                () float64      nominal frame rate of the source
image_size         (2,) int64      width, height in pixels
focal_length       (2,) float64    fx, fy in pixels (of the first frame when
                                   the camera track has a focal per frame)
principal_point    (2,) float64    cx, cy in pixels
source             () str          source video *display name*; readers never
                                   open a path taken from it
backend            () str          e.g. ``"hybrik"``, ``"mediapipe"``
model              () str          e.g. the checkpoint file name
complete           () bool         False for a partial (cancelled) run
-- optional per clip ------------------------------------------------------------
body_model         () str          ``"smpl"`` (default) or ``"smplx"``
track_ids          (T,) int64      the ids present, ascending (checked against
                                   ``track``)
track_thumbnails   (T,h,w,3) uint8 a small crop of each person, h, w <= 128
warnings           () str          newline-separated notes on the capture,
                                   e.g. a video that ended before its declared
                                   frame count
camera_frame_index (F,) int64      video frames of the camera track, strictly
                                   increasing
camera_rotation    (F,3,3) f64     rotation taking camera-k coordinates to the
                                   reference camera's (the camera of the first
                                   camera frame); identity for a static camera
camera_focal       (F,) float64    focal length in pixels per camera frame
camera_mode        () str          ``"static"`` or ``"moving"``: what the
                                   capture decided (see the worker's --camera)
camera_to_world    (4,4) float64   the reference camera's rigid pose in a Z-up
                                   world whose floor is z = 0 (written when the
                                   worker already ran the motion clean-up);
                                   without it the camera sits at the origin
                                   looking down +Y
=================  ==============  ============================================

Per-row data stay in the camera of their own frame, as measured, so the
overlay on the video is exact; the world position of a frame is the camera
track applied to it.

Optional keys starting with ``x_`` carry backend-specific per-row data
(leading dimension N, numeric, finite), e.g. the raw mediapipe landmarks that
let ``--resume`` reproduce an uninterrupted run. Readers that do not know
them ignore them. Both backends write ``x_uv29`` (N, 29, 2) and
``x_uv29_confidence`` (N, 29): the 2D evidence (the detector's image points
per joint) that the alignment metric (core.align.metric) measures against;
hybrik also keeps its raw ``x_raw_rotmats`` and ``x_raw_betas`` for resume.

The reader reads only the members named above (and ``x_`` extras), each
after its declared size and ``.npy`` header are checked against the limits
below (:mod:`.bounded`); unknown members are never read. It refuses missing
keys, wrong shapes or dtypes, NaN or infinite values (checked after every
cast to the working dtype), values outside their sane range (``MAX_*``
below), non-rotation matrices, truncated archives and versions newer than it
knows, each with a one-line message naming the problem.
"""
import dataclasses
import os
import tempfile

import numpy as np

from . import bounded

FORMAT_NAME = "hybrik-blender.result"
FORMAT_VERSION = 2


class ResultFormatError(ValueError):
    """The file is not a valid result file; the message (one line) says why."""

    def __init__(self, message=""):
        super().__init__(bounded.one_line(message, 600))


# name -> (per-row trailing shape, dtype kind); the required row fields
_FRAME_FIELDS = {
    "frame_index": ((), "i"), "time_s": ((), "f"), "rotmats": ((24, 3, 3), "f"),
    "betas": ((10,), "f"), "root_translation": ((3,), "f"), "joints29": ((29, 3), "f"),
    "bbox": ((4,), "f"), "confidence": ((), "f"), "valid": ((), "b"),
}
# optional row fields: name -> (trailing shape, kind, placeholder for invalid rows)
_OPTIONAL_FRAME_FIELDS = {
    "joint_confidence": ((24,), "f", "zero"), "hand_rotmats": ((30, 3, 3), "f", "eye"),
    "hand_confidence": ((30,), "f", "zero"), "jaw_rotmat": ((3, 3), "f", "eye"),
    "eye_rotmats": ((2, 3, 3), "f", "eye"), "expression": ((10,), "f", "zero"),
    "kid": ((), "f", "zero"),
}
_ROTATION_FIELDS = ("rotmats", "hand_rotmats", "jaw_rotmat", "eye_rotmats")
_UNIT_FIELDS = ("confidence", "joint_confidence", "hand_confidence")
_CLIP_FIELDS = {
    "fps": ((), "f"), "image_size": ((2,), "i"), "focal_length": ((2,), "f"),
    "principal_point": ((2,), "f"), "source": ((), "U"), "backend": ((), "U"),
    "model": ((), "U"), "complete": ((), "b"),
}
_FRAME_DTYPES = {"frame_index": np.int64, "time_s": np.float64, "valid": np.bool_}
BODY_MODELS = ("smpl", "smplx")
CAMERA_MODES = ("static", "moving")

# sanity bounds for values that a file states about the world
MAX_FPS = 1000.0
MAX_IMAGE_SIDE = 65536
MAX_METRES = 1e4           # translations and joint positions
MAX_BETA = 1e3             # shape and expression coefficients
MAX_FRAME_INDEX = 2 ** 40
MAX_TIME_S = 1e8
MAX_TEXT_CHARS = 4096


@dataclasses.dataclass(eq=False)
class CameraTrack:
    """The capture camera per video frame: rotation to the reference camera
    and focal length in pixels (see the module docstring)."""
    frame_index: np.ndarray
    rotation: np.ndarray
    focal: np.ndarray
    mode: str = "static"

    def at(self, frame_index):
        """Rotations and focals for the given video frames (nearest camera
        frame at or before each; the first one before the track starts)."""
        i = np.searchsorted(self.frame_index, np.asarray(frame_index), side="right") - 1
        i = np.clip(i, 0, len(self.frame_index) - 1)
        return self.rotation[i], self.focal[i]


@dataclasses.dataclass(eq=False)
class Result:
    """One person's take: the rows of one track plus the clip's data."""
    frame_index: np.ndarray
    time_s: np.ndarray
    rotmats: np.ndarray
    betas: np.ndarray
    root_translation: np.ndarray
    joints29: np.ndarray
    bbox: np.ndarray
    confidence: np.ndarray
    valid: np.ndarray
    fps: float
    image_size: tuple
    focal_length: tuple
    principal_point: tuple
    source: str = ""
    backend: str = ""
    model: str = ""
    complete: bool = True
    extras: dict = dataclasses.field(default_factory=dict)
    camera_to_world: np.ndarray = None
    track_id: int = 0
    body_model: str = "smpl"
    joint_confidence: np.ndarray = None
    hand_rotmats: np.ndarray = None
    hand_confidence: np.ndarray = None
    jaw_rotmat: np.ndarray = None
    eye_rotmats: np.ndarray = None
    expression: np.ndarray = None
    kid: np.ndarray = None
    thumbnail: np.ndarray = None
    camera: CameraTrack = None
    warnings: tuple = ()

    @property
    def num_frames(self):
        return len(self.frame_index)

    @classmethod
    def from_frames(cls, *, valid, **kw):
        """Build a result, replacing the rows of invalid frames by finite
        placeholders (identity rotations, zeros)."""
        valid = np.asarray(valid, dtype=bool)
        fields = {}
        for key in _FRAME_FIELDS:
            if key == "valid":
                continue
            arr = np.array(kw.pop(key), dtype=_FRAME_DTYPES.get(key, np.float32))
            if key == "rotmats":
                arr[~valid] = np.eye(3, dtype=np.float32)
            elif key not in ("frame_index", "time_s"):
                arr[~valid] = 0
            fields[key] = arr
        for key, (_, _, fill) in _OPTIONAL_FRAME_FIELDS.items():
            if kw.get(key) is None:
                continue
            arr = np.array(kw.pop(key), dtype=np.float32)
            arr[~valid] = np.eye(3, dtype=np.float32) if fill == "eye" else 0
            fields[key] = arr
        return cls(valid=valid, **fields, **kw)

    def optional_rows(self):
        """The optional per-row fields this take has, by name."""
        return {k: getattr(self, k) for k in _OPTIONAL_FRAME_FIELDS
                if getattr(self, k) is not None}

    def to_arrays(self):
        """The arrays of a one-track file (see :func:`tracks_to_arrays`)."""
        return tracks_to_arrays([self])


def tracks_to_arrays(tracks):
    """The archive arrays of several takes of one video (same clip data)."""
    tracks = sorted(tracks, key=lambda r: r.track_id)
    if not tracks:
        raise ResultFormatError("a result needs at least one track")
    first = tracks[0]
    ids = [int(r.track_id) for r in tracks]
    if len(set(ids)) != len(ids):
        raise ResultFormatError(f"duplicate track ids {ids}")
    opt = set(first.optional_rows())
    for r in tracks[1:]:
        if set(r.optional_rows()) != opt:
            raise ResultFormatError("all tracks must carry the same optional fields")
        if set(r.extras) != set(first.extras):
            raise ResultFormatError("all tracks must carry the same backend extras")
    out = {"format": np.array(FORMAT_NAME), "version": np.array(FORMAT_VERSION, np.int64)}
    out["track"] = np.concatenate([np.full(r.num_frames, r.track_id, np.int64) for r in tracks])
    for key in _FRAME_FIELDS:
        out[key] = np.concatenate([np.asarray(getattr(r, key),
                                              dtype=_FRAME_DTYPES.get(key, np.float32))
                                   for r in tracks])
    for key in sorted(opt):
        out[key] = np.concatenate([np.asarray(getattr(r, key), np.float32) for r in tracks])
    out["fps"] = np.array(float(first.fps))
    out["image_size"] = np.asarray(first.image_size, dtype=np.int64)
    out["focal_length"] = np.asarray(first.focal_length, dtype=np.float64)
    out["principal_point"] = np.asarray(first.principal_point, dtype=np.float64)
    for key in ("source", "backend", "model", "body_model"):
        out[key] = np.array(str(getattr(first, key)))
    out["complete"] = np.array(all(bool(r.complete) for r in tracks))
    out["track_ids"] = np.asarray(ids, np.int64)
    if all(r.thumbnail is not None for r in tracks):
        out["track_thumbnails"] = np.stack([np.asarray(r.thumbnail, np.uint8) for r in tracks])
    notes = [w for r in tracks for w in r.warnings]
    if notes:
        out["warnings"] = np.array("\n".join(dict.fromkeys(notes)))
    if first.camera is not None:
        cam = first.camera
        out["camera_frame_index"] = np.asarray(cam.frame_index, np.int64)
        out["camera_rotation"] = np.asarray(cam.rotation, np.float64)
        out["camera_focal"] = np.asarray(cam.focal, np.float64)
        out["camera_mode"] = np.array(str(cam.mode))
    if first.camera_to_world is not None:
        out["camera_to_world"] = np.asarray(first.camera_to_world, np.float64)
    for key in first.extras:
        out["x_" + key] = np.concatenate([np.asarray(r.extras[key]) for r in tracks])
    return out


def _check_rotations(fail, key, rot):
    if not len(rot):
        return
    rot = rot.reshape(-1, 3, 3).astype(np.float64)
    err = np.abs(rot @ np.swapaxes(rot, -1, -2) - np.eye(3)).max()
    if err > 1e-3 or np.linalg.det(rot).min() < 0:
        fail(f"'{key}' are not rotation matrices (|R R^T - I| up to {err:.2g})")


def _finite_after_cast(fail, key, arr, dtype, bound=None):
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.asarray(arr).astype(dtype)
    if out.dtype.kind == "f" and not np.all(np.isfinite(out)):
        fail(f"'{key}' contains NaN or infinite values")
    if bound is not None and out.size and np.abs(out).max() > bound:
        fail(f"'{key}' has values beyond {bound:g}")
    return out


def validate_tracks(arrays, name="result"):
    """Check a dict of arrays against the format; return the list of takes
    (one Result per track, ascending id)."""
    def fail(msg):
        raise ResultFormatError(f"{name}: {msg}")

    if "format" not in arrays or np.shape(arrays["format"]) != () \
            or str(arrays["format"]) != FORMAT_NAME:
        fail("not a hybrik-blender result file (no 'format' marker)")
    try:
        raw_version = np.asarray(arrays["version"])
        if raw_version.shape != () or raw_version.dtype.kind not in "iuf":
            raise TypeError
        version = int(raw_version)
    except (KeyError, TypeError, ValueError, OverflowError):
        fail("missing or unreadable 'version'")
    if version > FORMAT_VERSION:
        fail(f"format version {version} was written by a newer hybrik-blender; this one "
             f"reads up to version {FORMAT_VERSION}: please update the add-on")
    if version < 1:
        fail(f"invalid format version {version}")

    missing = [k for k in (*_FRAME_FIELDS, *_CLIP_FIELDS) if k not in arrays]
    if missing:
        fail(f"missing key(s): {', '.join(missing)}")

    n = np.shape(arrays["frame_index"])
    if len(n) != 1:
        fail(f"'frame_index' has shape {n}, expected (N,)")
    n = n[0]
    values = {}
    optional = {k: v for k, v in _OPTIONAL_FRAME_FIELDS.items() if k in arrays}
    fields = {**_FRAME_FIELDS, **{k: v[:2] for k, v in optional.items()}, **_CLIP_FIELDS}
    for key, (tail, kind) in fields.items():
        arr = np.asarray(arrays[key])
        want = tail if key in _CLIP_FIELDS else ((n,) + tail)
        if arr.shape != want:
            fail(f"'{key}' has shape {arr.shape}, expected {want}")
        ok_kind = {"f": "fiu", "i": "iu", "b": "b", "U": "U"}[kind]
        if arr.dtype.kind not in ok_kind:
            fail(f"'{key}' has dtype {arr.dtype}, expected {kind}-kind")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            fail(f"'{key}' contains NaN or infinite values")
        values[key] = arr

    # casts to the working dtypes, each checked again
    cast = {}
    for key in (*_FRAME_FIELDS, *optional):
        dtype = _FRAME_DTYPES.get(key, np.float32)
        bound = {"root_translation": MAX_METRES, "joints29": MAX_METRES, "betas": MAX_BETA,
                 "expression": MAX_BETA, "kid": MAX_BETA, "time_s": MAX_TIME_S,
                 "bbox": 16 * MAX_IMAGE_SIDE}.get(key)
        if key == "frame_index":
            fi = values[key]
            if n and (fi.min() < 0 or fi.max() > MAX_FRAME_INDEX):
                fail(f"'frame_index' must lie in [0, {MAX_FRAME_INDEX}]")
            cast[key] = fi.astype(np.int64)
        else:
            cast[key] = _finite_after_cast(fail, key, values[key], dtype, bound)

    if "track" in arrays:
        track = np.asarray(arrays["track"])
        if track.shape != (n,) or track.dtype.kind not in "iu":
            fail(f"'track' must be {n} integers, got {track.dtype} {track.shape}")
        if n and (track.min() < 0 or track.max() > 2 ** 31):
            fail("'track' ids must lie in [0, 2^31]")
        track = track.astype(np.int64)
    else:
        track = np.zeros(n, np.int64)
    if n and np.any(np.diff(track) < 0):
        fail("rows are not grouped by ascending 'track'")
    same = track[1:] == track[:-1]
    if n and np.any(np.diff(cast["frame_index"])[same] <= 0):
        fail("'frame_index' is not strictly increasing within a track")
    ids = np.unique(track)
    if "track_ids" in arrays:
        listed = np.asarray(arrays["track_ids"])
        if listed.ndim != 1 or listed.dtype.kind not in "iu" \
                or not np.array_equal(listed.astype(np.int64), ids):
            fail(f"'track_ids' does not match the rows' tracks {ids.tolist()}")

    fps = float(values["fps"])
    if not 0 < fps <= MAX_FPS:
        fail(f"fps must be positive and at most {MAX_FPS:g}, got {fps:g}")
    size = values["image_size"]
    if np.any(size <= 0) or np.any(size > MAX_IMAGE_SIDE):
        fail(f"image size must lie in [1, {MAX_IMAGE_SIDE}], got {size.tolist()}")
    focal = values["focal_length"].astype(np.float64)
    if np.any(focal <= 0) or np.any(focal > 1e3 * MAX_IMAGE_SIDE):
        fail("focal length must be positive and sane")
    if np.abs(values["principal_point"].astype(np.float64)).max() > 16 * MAX_IMAGE_SIDE:
        fail("principal point lies far outside the image")
    for key in _UNIT_FIELDS:
        if key in cast and n and (cast[key].min() < 0 or cast[key].max() > 1):
            fail(f"'{key}' must lie in [0, 1]")
    for key in _ROTATION_FIELDS:
        if key in cast:
            _check_rotations(fail, key, cast[key])

    body_model = str(arrays["body_model"]) if "body_model" in arrays else "smpl"
    if body_model not in BODY_MODELS:
        fail(f"unknown body_model '{bounded.shown(body_model)}'")
    for key in ("source", "backend", "model"):
        if len(str(values[key])) > MAX_TEXT_CHARS:
            fail(f"'{key}' is longer than {MAX_TEXT_CHARS} characters")

    extras = {}
    for key in arrays:
        if key.startswith("x_"):
            arr = np.asarray(arrays[key])
            if arr.shape[:1] != (n,) or arr.dtype.kind not in "fiub":
                fail(f"'{key}' must be numeric with {n} rows, got {arr.dtype} {arr.shape}")
            if arr.dtype.kind == "f":
                # finite in the float32 that the consumers compute in
                _finite_after_cast(fail, key, arr, np.float32)
            extras[key[2:]] = arr

    cam = None
    if "camera_to_world" in arrays:
        cam = np.asarray(arrays["camera_to_world"])
        if cam.shape != (4, 4) or cam.dtype.kind not in "fiu":
            fail("'camera_to_world' must be a finite 4x4 matrix")
        cam = _finite_after_cast(fail, "camera_to_world", cam, np.float64, MAX_METRES)
        r = cam[:3, :3]
        if np.abs(r @ r.T - np.eye(3)).max() > 1e-4 or np.abs(cam[3] - [0, 0, 0, 1]).max() > 0:
            fail("'camera_to_world' is not a rigid transform")

    camera = _camera_track(arrays, fail)
    thumbs = None
    if "track_thumbnails" in arrays:
        thumbs = np.asarray(arrays["track_thumbnails"])
        if thumbs.dtype != np.uint8 or thumbs.ndim != 4 or thumbs.shape[0] != len(ids) \
                or thumbs.shape[3] != 3 or max(thumbs.shape[1:3]) > 128:
            fail(f"'track_thumbnails' must be ({len(ids)}, h<=128, w<=128, 3) uint8")
    warnings = ()
    if "warnings" in arrays:
        text = np.asarray(arrays["warnings"])
        if text.shape != () or text.dtype.kind != "U":
            fail("'warnings' must be a string")
        warnings = tuple(bounded.one_line(w, 1000) for w in str(text).split("\n") if w)

    clip = dict(
        fps=fps, image_size=tuple(int(v) for v in size),
        focal_length=tuple(float(v) for v in focal),
        principal_point=tuple(float(v) for v in values["principal_point"]),
        source=str(values["source"]), backend=str(values["backend"]),
        model=str(values["model"]), complete=bool(values["complete"]),
        camera_to_world=cam, body_model=body_model, camera=camera, warnings=warnings)
    takes = []
    for t, tid in enumerate(ids):
        rows = track == tid
        takes.append(Result(
            **{k: cast[k][rows] for k in _FRAME_FIELDS},
            **{k: cast[k][rows] for k in optional},
            extras={k: v[rows] for k, v in extras.items()},
            track_id=int(tid), thumbnail=None if thumbs is None else thumbs[t], **clip))
    if not takes:  # an empty capture still describes its clip
        takes.append(Result(**{k: cast[k] for k in _FRAME_FIELDS},
                            **{k: cast[k] for k in optional}, extras=extras, **clip))
    return takes


def _camera_track(arrays, fail):
    keys = ("camera_frame_index", "camera_rotation", "camera_focal")
    present = [k for k in keys if k in arrays]
    if not present:
        return None
    if len(present) != len(keys):
        fail(f"the camera track needs all of {', '.join(keys)}")
    fi = np.asarray(arrays["camera_frame_index"])
    if fi.ndim != 1 or fi.dtype.kind not in "iu" or not len(fi):
        fail("'camera_frame_index' must be a non-empty list of integers")
    f = len(fi)
    rot = np.asarray(arrays["camera_rotation"])
    foc = np.asarray(arrays["camera_focal"])
    if rot.shape != (f, 3, 3) or rot.dtype.kind not in "fiu":
        fail(f"'camera_rotation' has shape {rot.shape}, expected {(f, 3, 3)}")
    if foc.shape != (f,) or foc.dtype.kind not in "fiu":
        fail(f"'camera_focal' has shape {foc.shape}, expected {(f,)}")
    if fi.min() < 0 or fi.max() > MAX_FRAME_INDEX \
            or np.any(np.diff(fi.astype(np.int64)) <= 0):
        fail("'camera_frame_index' must be increasing frame numbers")
    rot = _finite_after_cast(fail, "camera_rotation", rot, np.float64)
    foc = _finite_after_cast(fail, "camera_focal", foc, np.float64)
    _check_rotations(fail, "camera_rotation", rot)
    if foc.min() <= 0 or foc.max() > 1e3 * MAX_IMAGE_SIDE:
        fail("'camera_focal' must be positive and sane")
    mode = str(arrays["camera_mode"]) if "camera_mode" in arrays else "static"
    if mode not in CAMERA_MODES:
        fail(f"unknown camera_mode '{bounded.shown(mode)}'")
    return CameraTrack(fi.astype(np.int64), rot, foc, mode)


def validate_arrays(arrays, name="result", track=None):
    """Check a dict of arrays; return one take (see :func:`pick_track`)."""
    return pick_track(validate_tracks(arrays, name), track, name)


def pick_track(takes, track=None, name="result"):
    """The take with id `track`; by default the only one, or the one with the
    most valid frames (the lowest id on a tie)."""
    if track is None:
        return max(takes, key=lambda r: (int(np.count_nonzero(r.valid)), -r.track_id))
    for r in takes:
        if r.track_id == int(track):
            return r
    raise ResultFormatError(f"{name}: no person {track} (the file has "
                            f"{', '.join(str(r.track_id) for r in takes)})")


# limits of the reader (bytes of one member), checked on each member's
# declared size and .npy header before its data are read
MAX_ROWS = 1 << 24
_ROW_BYTES = 30 * 9 * 8          # the widest row field (hand_rotmats) in float64
MAX_EXTRA_ROW_BYTES = 16 << 10   # one row of one x_ extra
MAX_TEXT_BYTES = 4 * 4096        # source, backend, model, ...: 4,096 characters
MAX_WARNINGS_BYTES = 4 << 18     # 262,144 characters
MAX_SMALL_BYTES = 4096           # fps, version, image size, camera_to_world, ...
MAX_TRACKS = 1 << 16
MAX_RESULT_MEMBERS = 4096
_TEXT_KEYS = ("format", "source", "backend", "model", "body_model", "camera_mode")
_CAMERA_ROWS = {"camera_frame_index": 8, "camera_rotation": 72, "camera_focal": 8}


def _used_keys(members):
    """The members a reader uses, in reading order: nothing else is read."""
    known = ("format", "version", *_FRAME_FIELDS, *_OPTIONAL_FRAME_FIELDS, *_CLIP_FIELDS,
             "track", "track_ids", "track_thumbnails", "warnings", "body_model",
             *_CAMERA_ROWS, "camera_mode", "camera_to_world")
    keys = list(dict.fromkeys(k for k in known if k in members))
    keys += sorted(k for k in members if k.startswith("x_"))
    return keys


def _member_limit(key, rows, cameras, tracks):
    if key in _TEXT_KEYS:
        return MAX_TEXT_BYTES, "U"
    if key == "warnings":
        return MAX_WARNINGS_BYTES, "U"
    if key == "track_thumbnails":
        return tracks * 128 * 128 * 3 + MAX_SMALL_BYTES, "u"
    if key in _CAMERA_ROWS:
        return cameras * _CAMERA_ROWS[key] + MAX_SMALL_BYTES, "biuf"
    if key.startswith("x_"):
        return rows * MAX_EXTRA_ROW_BYTES + MAX_SMALL_BYTES, "biuf"
    if key in _FRAME_FIELDS or key in _OPTIONAL_FRAME_FIELDS or key in ("track", "track_ids"):
        return rows * _ROW_BYTES + MAX_SMALL_BYTES, "biuf"
    return MAX_SMALL_BYTES, "biufU"


def _strip_name(text, name):
    prefix = f"'{name}': "
    return text[len(prefix):] if text.startswith(prefix) else text


def _read_arrays(path):
    path = os.fspath(path)
    name = bounded.shown(os.path.basename(path))
    try:
        zf = bounded.BoundedZip(path, name, max_members=MAX_RESULT_MEMBERS, what="result file")
    except FileNotFoundError:
        raise ResultFormatError(f"{name}: file not found") from None
    except OSError as exc:
        raise ResultFormatError(f"{name}: cannot read the file "
                                f"({bounded.one_line(exc.strerror or exc, 80)})") from None
    except bounded.LimitError as exc:
        raise ResultFormatError(str(exc)) from None
    except bounded.ArchiveError as exc:
        raise ResultFormatError(f"{name}: truncated or damaged file "
                                f"({_strip_name(str(exc), name)})") from None
    arrays = {}
    try:
        with zf:
            members = bounded.npz_members(zf)
            if "format" not in members:
                raise ResultFormatError(f"{name}: not a hybrik-blender result file (no "
                                        "'format' marker)")
            rows = cameras = tracks = 0
            for key, member in ((k, members[k]) for k in ("frame_index", "camera_frame_index",
                                                          "track_ids") if k in members):
                shape, _, dtype = zf.npy_header(member, MAX_ROWS * 8 + MAX_SMALL_BYTES, "iuf")
                count = shape[0] if len(shape) == 1 else 0
                if count > (MAX_TRACKS if key == "track_ids" else MAX_ROWS):
                    raise ResultFormatError(f"{name}: '{key}' lists {count} entries; at most "
                                            f"{MAX_TRACKS if key == 'track_ids' else MAX_ROWS}")
                if key == "frame_index":
                    rows = count
                elif key == "camera_frame_index":
                    cameras = count
                else:
                    tracks = count
            tracks = max(tracks, 1)
            for key in _used_keys(members):
                limit, kinds = _member_limit(key, rows, cameras, tracks)
                arrays[key] = zf.read_npy(members[key], limit, kinds)
    except bounded.LimitError as exc:
        raise ResultFormatError(f"{name}: {_strip_name(str(exc), name)}") from None
    except bounded.ArchiveError as exc:
        text = _strip_name(str(exc), name)
        if "damaged" in text or "truncated" in text:
            raise ResultFormatError(f"{name}: truncated or damaged file ({text})") from None
        raise ResultFormatError(f"{name}: not a result file ({text})") from None
    except OSError as exc:
        raise ResultFormatError(f"{name}: cannot read the file "
                                f"({bounded.one_line(exc.strerror or exc, 80)})") from None
    except MemoryError:
        raise ResultFormatError(f"{name}: needs more memory than is available") from None
    return arrays, name


def load_tracks(path):
    """Read and validate a result file; every take in it, ascending id."""
    arrays, name = _read_arrays(path)
    return validate_tracks(arrays, name)


def load_result(path, track=None):
    """Read and validate a result file; one take (see :func:`pick_track`).
    Raises ResultFormatError."""
    arrays, name = _read_arrays(path)
    return validate_arrays(arrays, name, track)


def save_result(path, result):
    """Validate and write atomically (temporary file, then rename), so a crash
    never leaves a half-written result under the final name. `result` is one
    take or a list of takes of the same video."""
    path = os.fspath(path)
    takes = list(result) if isinstance(result, (list, tuple)) else [result]
    arrays = tracks_to_arrays(takes)
    validate_tracks(arrays, os.path.basename(path))
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def clip_betas(result):
    """One shape for the whole clip: the confidence-weighted mean of the
    valid frames' betas (plain mean when all confidences are zero)."""
    valid = np.asarray(result.valid, bool)
    if not valid.any():
        raise ResultFormatError("the result has no valid frame")
    b = np.asarray(result.betas, np.float64)[valid]
    w = np.asarray(result.confidence, np.float64)[valid]
    if w.sum() <= 0:
        w = np.ones_like(w)
    return (b * w[:, None]).sum(0) / w.sum()
