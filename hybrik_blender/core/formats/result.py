"""The result file: what the worker writes and Blender reads.

A result is a NumPy ``.npz`` archive (no pickled objects; always loaded with
``allow_pickle=False``). Format version 1:

=================  ==============  ============================================
key                shape / dtype   meaning
=================  ==============  ============================================
format             () str          ``"hybrik-blender.result"``
version            () int64        ``1``
-- per frame (N frames) --------------------------------------------------------
frame_index        (N,) int64      source frame number (0 = first frame of the
                                   video), strictly increasing
time_s             (N,) float64    presentation time of that frame, seconds
rotmats            (N,24,3,3) f32  local joint rotations, SMPL convention
                                   (parent-relative; joint 0 is the global
                                   orientation in the camera frame)
betas              (N,10) f32      SMPL shape coefficients
root_translation   (N,3) f32       pelvis joint position in camera coordinates
                                   (x right, y down, z forward), metres. For
                                   smplx use ``transl = root_translation -
                                   J_0(betas)``.
joints29           (N,29,3) f32    24 SMPL joints + 5 HybrIK leaves, camera
                                   coordinates, metres
bbox               (N,4) f32       person box x0, y0, x1, y1 in pixels
confidence         (N,) f32        0..1
valid              (N,) bool       False where nobody was found; those rows
                                   hold finite placeholders, never estimates
-- per clip --------------------------------------------------------------------
fps                () float64      nominal frame rate of the source
image_size         (2,) int64      width, height in pixels
focal_length       (2,) float64    fx, fy in pixels
principal_point    (2,) float64    cx, cy in pixels
source             () str          source video file name
backend            () str          e.g. ``"hybrik"``, ``"mediapipe"``
model              () str          e.g. the checkpoint file name
complete           () bool         False for a partial (cancelled) run
=================  ==============  ============================================

Optional ``camera_to_world`` (4, 4) float64: the capture camera's rigid pose
in a Z-up world whose floor is z = 0 (written when the worker already ran the
motion clean-up); without it the camera sits at the origin looking down +Y.

Optional keys starting with ``x_`` carry backend-specific per-frame data
(leading dimension N, numeric, finite), e.g. the raw mediapipe landmarks that
let ``--resume`` reproduce an uninterrupted run. Readers that do not know
them ignore them.

The reader refuses missing keys, wrong shapes or dtypes, NaN or infinite
values, non-rotation matrices, truncated archives and versions newer than it
knows, each with a one-line message naming the problem.
"""
import dataclasses
import os
import tempfile
import zipfile

import numpy as np

FORMAT_NAME = "hybrik-blender.result"
FORMAT_VERSION = 1


class ResultFormatError(ValueError):
    """The file is not a valid result file; the message says why."""


# name -> (per-frame trailing shape or clip shape, dtype kind)
_FRAME_FIELDS = {
    "frame_index": ((), "i"), "time_s": ((), "f"), "rotmats": ((24, 3, 3), "f"),
    "betas": ((10,), "f"), "root_translation": ((3,), "f"), "joints29": ((29, 3), "f"),
    "bbox": ((4,), "f"), "confidence": ((), "f"), "valid": ((), "b"),
}
_CLIP_FIELDS = {
    "fps": ((), "f"), "image_size": ((2,), "i"), "focal_length": ((2,), "f"),
    "principal_point": ((2,), "f"), "source": ((), "U"), "backend": ((), "U"),
    "model": ((), "U"), "complete": ((), "b"),
}
_FRAME_DTYPES = {"frame_index": np.int64, "time_s": np.float64, "valid": np.bool_}


@dataclasses.dataclass(eq=False)
class Result:
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
        return cls(valid=valid, **fields, **kw)

    def to_arrays(self):
        out = {"format": np.array(FORMAT_NAME), "version": np.array(FORMAT_VERSION, np.int64)}
        for key in _FRAME_FIELDS:
            out[key] = np.asarray(getattr(self, key), dtype=_FRAME_DTYPES.get(key, np.float32))
        out["fps"] = np.array(float(self.fps))
        out["image_size"] = np.asarray(self.image_size, dtype=np.int64)
        out["focal_length"] = np.asarray(self.focal_length, dtype=np.float64)
        out["principal_point"] = np.asarray(self.principal_point, dtype=np.float64)
        for key in ("source", "backend", "model"):
            out[key] = np.array(str(getattr(self, key)))
        out["complete"] = np.array(bool(self.complete))
        if self.camera_to_world is not None:
            out["camera_to_world"] = np.asarray(self.camera_to_world, np.float64)
        for key, value in self.extras.items():
            out["x_" + key] = np.asarray(value)
        return out


def validate_arrays(arrays, name="result"):
    """Check a dict of arrays against format version 1; return a Result."""
    def fail(msg):
        raise ResultFormatError(f"{name}: {msg}")

    if "format" not in arrays or str(arrays["format"]) != FORMAT_NAME:
        fail("not a hybrik-blender result file (no 'format' marker)")
    try:
        version = int(arrays["version"])
    except (KeyError, TypeError, ValueError):
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
    for key, (tail, kind) in {**_FRAME_FIELDS, **_CLIP_FIELDS}.items():
        arr = np.asarray(arrays[key])
        want = ((n,) + tail) if key in _FRAME_FIELDS else tail
        if arr.shape != want:
            fail(f"'{key}' has shape {arr.shape}, expected {want}")
        ok_kind = {"f": "fiu", "i": "iu", "b": "b", "U": "U"}[kind]
        if arr.dtype.kind not in ok_kind:
            fail(f"'{key}' has dtype {arr.dtype}, expected {kind}-kind")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            fail(f"'{key}' contains NaN or infinite values")
        values[key] = arr

    if n and np.any(np.diff(values["frame_index"]) <= 0):
        fail("'frame_index' is not strictly increasing")
    if not values["fps"] > 0:
        fail(f"fps must be positive, got {float(values['fps'])}")
    if np.any(values["image_size"] <= 0) or np.any(values["focal_length"] <= 0):
        fail("image size and focal length must be positive")
    conf = values["confidence"]
    if n and (conf.min() < 0 or conf.max() > 1):
        fail("'confidence' must lie in [0, 1]")
    extras = {}
    for key in arrays:
        if key.startswith("x_"):
            arr = np.asarray(arrays[key])
            if arr.shape[:1] != (n,) or arr.dtype.kind not in "fiub":
                fail(f"'{key}' must be numeric with {n} rows, got {arr.dtype} {arr.shape}")
            if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                fail(f"'{key}' contains NaN or infinite values")
            extras[key[2:]] = arr
    cam = None
    if "camera_to_world" in arrays:
        cam = np.asarray(arrays["camera_to_world"], np.float64)
        if cam.shape != (4, 4) or not np.all(np.isfinite(cam)):
            fail("'camera_to_world' must be a finite 4x4 matrix")
        r = cam[:3, :3]
        if np.abs(r @ r.T - np.eye(3)).max() > 1e-4 or np.abs(cam[3] - [0, 0, 0, 1]).max() > 0:
            fail("'camera_to_world' is not a rigid transform")
    rot = values["rotmats"].astype(np.float64)
    if n:
        err = np.abs(rot @ np.swapaxes(rot, -1, -2) - np.eye(3)).max()
        if err > 1e-3 or np.linalg.det(rot).min() < 0:
            fail(f"'rotmats' are not rotation matrices (|R R^T - I| up to {err:.2g})")

    return Result(
        **{k: values[k].astype(_FRAME_DTYPES.get(k, np.float32)) for k in _FRAME_FIELDS},
        fps=float(values["fps"]), image_size=tuple(int(v) for v in values["image_size"]),
        focal_length=tuple(float(v) for v in values["focal_length"]),
        principal_point=tuple(float(v) for v in values["principal_point"]),
        source=str(values["source"]), backend=str(values["backend"]),
        model=str(values["model"]), complete=bool(values["complete"]), extras=extras,
        camera_to_world=cam)


def load_result(path):
    """Read and validate a result file. Raises ResultFormatError."""
    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise ResultFormatError(f"{name}: file not found") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ResultFormatError(f"{name}: truncated or damaged file ({exc})") from None
    except ValueError as exc:
        raise ResultFormatError(f"{name}: not a result file ({exc})") from None
    return validate_arrays(arrays, name)


def save_result(path, result):
    """Validate and write atomically (temporary file, then rename), so a crash
    never leaves a half-written result under the final name."""
    path = os.fspath(path)
    arrays = result.to_arrays()
    validate_arrays(arrays, os.path.basename(path))
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
