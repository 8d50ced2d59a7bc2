"""Capture: video in, result file out.

A producer thread decodes frames, tracks the person and cuts the crops while
the main thread runs the backend on the previous batch, so decoding overlaps
with inference; the backend itself loads in a thread while the producer
starts (not when resuming, which checks the partial result against it). Progress goes to a callback (the CLI prints it as JSON
lines). Cancelling (a signal, a cancel file or the token) stops within one
batch and still writes a valid partial result (``complete`` False); a later
run with ``resume`` continues from it. Resuming restarts at the last tracker
chunk boundary (tracking.CHUNK), which makes the resumed result equal to an
uninterrupted run.

Several people (``people`` != 1, see detect/multi.py): the producer yields
per-track items (one per person seen in a frame) instead of one item per
frame; the backend processes them all (the hybrik backend batches every
track's crop of the batch's frames together) and ``finish`` runs once per
track. ``people=1`` keeps the single-person tracker and gives the same
result as before several people existed.
"""
import dataclasses
import logging
import os
import queue
import threading
import time

import numpy as np

from ..core.body.model import load_body_model, rest_joints_29
from ..core.formats.result import (Result, ResultFormatError, load_tracks, pick_track,
                                   save_result)
from .camera import finish_camera, start_camera
from .landmarks import body as mpb
from .refine import joint_confidence_from_29, settle_and_align
from .detect.tracking import CHUNK, PersonTracker
from .landmarks.hands import HAND_EXTRAS, HandTracker, add_hands, hand_extras
from .video.reader import VideoError, VideoSource

log = logging.getLogger(__name__)


class CaptureError(Exception):
    """A failure with an exit code (see cli.py) and a one-line message."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


from .exitcodes import (EXIT_CANCELLED, EXIT_ENVIRONMENT, EXIT_GPU_MEMORY,  # noqa: E402,F401
                        EXIT_INTERNAL, EXIT_MODEL, EXIT_NO_PROGRESS, EXIT_NOBODY, EXIT_OK,
                        EXIT_RESULT, EXIT_USAGE, EXIT_VIDEO, EXIT_WRITE)
from ..core.safe_paths import PathRefused, check_outputs  # noqa: E402


def check_paths(opts, extra_outputs=()):
    """Refuse, before any work, an --out that is one of the inputs (video,
    checkpoint, body model, children's template; by path and by inode) or that
    exists and is not a regular file, and an output folder that cannot be
    written or created (see core.safe_paths). Raises CaptureError."""
    if not opts.out:
        raise CaptureError(EXIT_USAGE, "no output file given (--out)")
    inputs = [("video", opts.video), ("checkpoint", opts.checkpoint),
              ("body model", opts.smpl_model), ("children's template", opts.kid_template)]
    try:
        check_outputs([("--out", opts.out), *extra_outputs], inputs)
    except PathRefused as exc:
        raise CaptureError(exc.code, str(exc)) from None


def check_options(opts):
    """Option values that cannot work, refused before any work (exit 2)."""
    if opts.start is not None and opts.start < 0:
        raise CaptureError(EXIT_USAGE, f"--start must be 0 or more, not {opts.start}")
    if opts.end is not None and opts.end <= (opts.start or 0):
        raise CaptureError(EXIT_USAGE, f"--end ({opts.end}) must be after --start "
                                       f"({opts.start or 0})")
    f = opts.focal_length
    if f is not None and not (np.isfinite(f) and 0 < f < 1e7):
        raise CaptureError(EXIT_USAGE, f"--focal-length must be a positive number of pixels, "
                                       f"not {f}")
    if opts.max_people is not None and opts.max_people < 1:
        raise CaptureError(EXIT_USAGE, "--max-people must be at least 1")


class CancelToken:
    """Set by a signal handler or the caller; also trips when `path` exists."""

    def __init__(self, path=None):
        self.path = path
        self._event = threading.Event()

    def set(self):
        self._event.set()

    def is_set(self):
        if not self._event.is_set() and self.path and os.path.exists(self.path):
            self._event.set()
        return self._event.is_set()


@dataclasses.dataclass
class CaptureOptions:
    video: str
    out: str
    backend: str = "mediapipe"
    checkpoint: str = None
    smpl_model: str = None
    kid_template: str = None   # HybrIK-X: smplx_kid_template.npy (see load_pipeline)
    device: str = "auto"
    # hybrik: "fp32", "bf16" or "auto" (worker/hybrik/speed.py); the CLI's
    # default is auto, this one fp32 (exact, as the API always was)
    precision: str = "fp32"
    batch_size: int = 16
    start: int = 0
    end: int = None
    resume: bool = False
    focal_length: float = None
    flip_test: bool = False
    cleanup: object = None  # core.cleanup.CleanupOptions, applied to complete runs
    people: int = 1         # people followed at once; 0: everybody (see detect/multi.py)
    max_people: int = None  # persons kept in the result (fragments merged first)
    detect_every: int = 5   # several people: person detector every N frames (and on losses)
    camera: str = "auto"    # "static", "auto" or "moving" (see worker.camera)
    hands: bool = False     # finger rotations from mediapipe's hand landmarker (landmarks/hands.py)


# --- backends -------------------------------------------------------------

def clip_betas_of(betas, confidence, valid):
    """The clip's shape as the import computes it (core.formats.result.clip_betas)."""
    b = np.asarray(betas, np.float64)[valid]
    w = np.asarray(confidence, np.float64)[valid]
    w = w if w.sum() > 0 else np.ones_like(w)
    return (b * w[:, None]).sum(0) / w.sum()


class MediapipeBackend:
    """Stores landmarks per frame; solves the whole clip at the end (shape
    fitting needs every frame)."""
    name = "mediapipe"
    needs_crops = False

    def __init__(self, body_model):
        self.body_model = body_model
        self.model_name = "mediapipe-pose-full (model_complexity=1)"

    def process(self, items):
        rows = []
        for it in items:
            det = it["det"]
            if det is None:
                rows.append({"mp_world": np.zeros((33, 3)), "mp_image": np.zeros((33, 2)),
                             "mp_visibility": np.zeros(33)})
            else:
                rows.append({"mp_world": det.world, "mp_image": det.image_xy,
                             "mp_visibility": det.visibility})
        return rows

    def finish(self, cols, valid, focal, principal):
        self.alignment = None
        sol = mpb.solve_clip(cols["mp_world"], cols["mp_image"], cols["mp_visibility"],
                             valid, focal, principal, self.body_model)
        rest29 = self.rest29 = sol.pop("rest29")
        uv, conf = mpb.image_evidence(cols["mp_image"], cols["mp_visibility"])
        betas = sol["betas"][valid][0] if self.body_model is not None and valid.any() else None
        sol, extras, self.alignment = settle_and_align(
            sol, rest29, uv, conf, mpb.joint_confidence(cols["mp_visibility"]), valid,
            cols["time"], cols["bbox"], focal, principal, self.body_model, betas)
        extras.update({k: cols[k].astype(np.float32) for k in ("mp_world", "mp_image",
                                                               "mp_visibility")})
        return sol, extras


class HybrIKBackend:
    """Batched crops -> HybrIK or HybrIK-X network -> IK, on CUDA when present.

    ``model_path``: the body model file (SMPL, or SMPL-X for a HybrIK-X
    checkpoint; default: the one the checkpoint embeds). ``precision``:
    fp32, bf16 or auto (see worker/hybrik/speed.py); the result's ``model``
    says which ran, e.g. "ck.pth (res34_cam, bf16 (auto) on cpu)"."""
    name = "hybrik"
    needs_crops = True
    # per-frame fields of an SMPL-X take, passed through to the result
    SMPLX_FIELDS = ("kid", "expression", "hand_rotmats", "jaw_rotmat", "eye_rotmats",
                    "hand_confidence")

    def __init__(self, checkpoint, model_path, device, flip_test=False, kid_template=None,
                 precision="fp32"):
        import torch
        from .hybrik.checkpoint import CheckpointError, load_pipeline
        from .hybrik.speed import PRECISIONS
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise CaptureError(EXIT_ENVIRONMENT, "--device cuda was asked for, but torch "
                                                 "sees no CUDA device")
        if not checkpoint:
            raise CaptureError(EXIT_USAGE, "the hybrik backend needs --checkpoint")
        if str(precision).lower() not in PRECISIONS:
            raise CaptureError(EXIT_USAGE, f"unknown precision '{precision}' (choose from "
                                           f"{', '.join(PRECISIONS)})")
        try:
            self.pipe = load_pipeline(checkpoint, model_path, kid_template, device=device,
                                      precision=str(precision).lower())
        except (CheckpointError, ValueError) as exc:  # ValueError: body model problems
            raise CaptureError(EXIT_MODEL, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes a reader raise
            raise CaptureError(EXIT_MODEL, f"{os.path.basename(checkpoint)}: cannot be loaded "
                                           f"({type(exc).__name__}: {exc})") from None
        bad = non_finite_weight(self.pipe.net)
        if bad:
            raise CaptureError(EXIT_MODEL, f"{os.path.basename(checkpoint)}: the weight '{bad}' "
                                           "holds NaN or infinite values")
        self.smplx = getattr(self.pipe, "body_model", "smpl") == "smplx"
        # the core body model (SMPL, or SMPL-X with the children's direction)
        # for the clean-up and the hands
        self.body_model = self.pipe.body.model.body if self.smplx else self.pipe.body.model
        self.torch = torch
        self.flip_test = flip_test
        self.checkpoint_name = os.path.basename(checkpoint)

    def warm_up(self):
        """Prepare the network now (BatchNorm folded, bfloat16 weights), as
        its first call would: run_capture does it in the loading thread,
        beside the tracker's first frames. auto still measures on the first
        real crops."""
        self.pipe.prepare()

    @property
    def model_name(self):
        """The checkpoint, its architecture and what ran (precision, device)."""
        return f"{self.checkpoint_name} ({self.pipe.arch}, {self.pipe.describe()})"

    def run_info(self):
        """For the done event: the precision that ran and auto's measurement."""
        info = {"precision": self.pipe.describe()}
        if self.pipe.precision_check is not None:
            info["precision_check"] = self.pipe.precision_check
        return info

    def _run(self, x, boxes, centres):
        try:
            arrays = self.pipe.frame_arrays(self.pipe(x, boxes, centres,
                                                      flip_test=self.flip_test))
        except (self.torch.linalg.LinAlgError, np.linalg.LinAlgError):
            raise CaptureError(EXIT_MODEL, f"{self.model_name}: the network's output cannot be "
                                           "solved (NaN or infinite values): the checkpoint is "
                                           "broken") from None
        except self.torch.cuda.OutOfMemoryError:
            self.torch.cuda.empty_cache()
            if len(x) == 1:
                raise CaptureError(EXIT_GPU_MEMORY, "out of GPU memory even at batch size 1; "
                                                    "try --device cpu") from None
            half = len(x) // 2
            log.warning("CUDA out of memory at batch %d: retrying with %d", len(x), half)
            a = self._run(x[:half], boxes[:half], centres[:half])
            b = self._run(x[half:], boxes[half:], centres[half:])
            return {k: np.concatenate([a[k], b[k]]) for k in a}
        for key, value in arrays.items():
            value = np.asarray(value)
            if value.dtype.kind == "f" and not np.isfinite(value).all():
                raise CaptureError(EXIT_MODEL, f"{self.model_name}: the network gave NaN or "
                                               f"infinite values ({key}): the checkpoint is "
                                               "broken or does not fit")
        return arrays

    def process(self, items):
        from .hybrik import preprocess
        live = [it for it in items if it["det"] is not None]
        rows = [None] * len(items)
        if live:
            # on CUDA the uint8 crops go over (pinned, non-blocking) and are
            # normalised there: a quarter of the float32 bytes
            x = preprocess.normalize_crops(np.stack([it["crop"] for it in live]),
                                           device=self.pipe.device)
            boxes = np.stack([it["square_box"] for it in live])
            centres = np.stack([it["centre"] for it in live])
            arrays = self._run(x, boxes, centres)
            k = 0
            for i, it in enumerate(items):
                if it["det"] is not None:
                    rows[i] = {key: arrays[key][k] for key in arrays}
                    rows[i]["square_box"] = it["square_box"]
                    k += 1
        for i in range(len(items)):
            if rows[i] is None:
                rows[i] = {"rotmats": np.tile(np.eye(3), (24, 1, 1)), "betas": np.zeros(10),
                           "root_translation": np.zeros(3), "joints29": np.zeros((29, 3)),
                           "confidence": 0.0, "square_box": np.array([0.0, 0.0, 256.0, 256.0]),
                           "uv29": np.zeros((29, 2)), "uv29_confidence": np.zeros(29)}
                if self.smplx:
                    rows[i].update(self.pipe.placeholder_row())
        return rows

    def finish(self, cols, valid, focal, principal):
        # HybrIK's camera has f = 1000 px for the 256-px crop, i.e. a different
        # focal length every frame. Scaling the whole root position by
        # F / f_frame keeps the root's projection and expresses it for the one
        # real camera F of the clip (the official demo's transl_camsys does
        # the same for F = 1000); the body around it keeps its metric size.
        self.alignment = None
        box_w = cols["square_box"][:, 2] - cols["square_box"][:, 0]
        k = focal[0] * 256.0 / (1000.0 * np.maximum(box_w, 1e-6))
        root = cols["root_translation"] * k[:, None]
        joints = cols["joints29"] - cols["root_translation"][:, None] + root[:, None]
        fields = {"rotmats": cols["rotmats"], "betas": cols["betas"], "root_translation": root,
                  "joints29": joints, "confidence": cols["confidence"]}
        extras = {"square_box": cols["square_box"].astype(np.float32),
                  "raw_root": cols["root_translation"].astype(np.float32),
                  "raw_rotmats": cols["rotmats"].astype(np.float32),
                  "raw_betas": cols["betas"].astype(np.float32)}
        # the heatmaps' 2D joints in image pixels; joints outside the image
        # are not evidence of anything
        sq = cols["square_box"]
        centre = 0.5 * (sq[:, :2] + sq[:, 2:])
        uv = centre[:, None] + cols["uv29"] * box_w[:, None, None]
        w, h = 2 * principal[0], 2 * principal[1]
        inside = ((uv[..., 0] >= 0) & (uv[..., 0] <= w) & (uv[..., 1] >= 0) & (uv[..., 1] <= h))
        conf = cols["uv29_confidence"] * inside
        # the same fields and extras with or without anybody (tracks must match)
        extras.update(uv29=uv.astype(np.float32), uv29_confidence=conf.astype(np.float32))
        fields["joint_confidence"] = joint_confidence_from_29(conf)
        if valid.any():
            betas0 = clip_betas_of(cols["betas"], cols["confidence"], valid)
            rest29 = rest_joints_29(self.body_model, betas0)[None]
            fields, more, self.alignment = settle_and_align(
                fields, rest29, uv, conf, fields["joint_confidence"], valid, cols["time"],
                cols["bbox"], focal, principal, self.body_model, betas0)
            extras.update(more)
        if self.smplx:
            # SMPL's hand joints 22/23 have no SMPL-X rotation: the fingers
            # hang from the wrists (hand_rotmats), so they stay identity
            fields["rotmats"] = np.array(fields["rotmats"], np.float64)
            fields["rotmats"][:, 22:24] = np.eye(3)
            fields["joint_confidence"] = np.array(fields["joint_confidence"], np.float64)
            fields["joint_confidence"][:, 22:24] = 0.0
            fields.update({k: cols[k] for k in self.SMPLX_FIELDS}, body_model="smplx")
        return fields, extras


def non_finite_weight(net):
    """The name of the first floating-point weight or buffer of `net` with a
    NaN or an infinity, or None."""
    import torch
    with torch.no_grad():
        for name, value in net.state_dict().items():
            # min and max are finite exactly when every value is (NaN
            # propagates through both); one pass, 14x faster than isfinite
            if value.is_floating_point() and value.numel() and not all(
                    bool(torch.isfinite(m)) for m in torch.aminmax(value.detach())):
                return name
    return None


# --- the run ----------------------------------------------------------------

def _load_backend(opts):
    if opts.backend == "hybrik":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise CaptureError(EXIT_ENVIRONMENT, "torch is not installed in the worker "
                                                 "environment") from None
        return HybrIKBackend(opts.checkpoint, opts.smpl_model, opts.device, opts.flip_test,
                             kid_template=opts.kid_template, precision=opts.precision)
    body = None
    if opts.smpl_model:
        try:
            body = load_body_model(opts.smpl_model)
        except ValueError as exc:
            raise CaptureError(EXIT_MODEL, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - whatever a damaged file makes a reader raise
            raise CaptureError(EXIT_MODEL, f"{os.path.basename(opts.smpl_model)}: cannot be "
                                           f"loaded ({type(exc).__name__}: {exc})") from None
    if opts.backend == "mediapipe":
        return MediapipeBackend(body)
    raise CaptureError(EXIT_USAGE, f"unknown backend '{opts.backend}'")


_BACKENDS = {"hybrik": HybrIKBackend, "mediapipe": MediapipeBackend}


class _SingleTrack:
    """The one-person tracker as a per-track source: track 0 in every frame
    (its Detection None where nobody was found)."""

    def __init__(self, tracker):
        self.tracker = tracker

    def observe(self, index, rgb):
        return [(0, self.tracker(index, rgb), {})]

    def close(self):
        self.tracker.close()


class _MultiTrack:
    """detect.multi.MultiPersonTracker as a per-track source: the people
    seen in the frame, each with its torso histogram."""

    def __init__(self, tracker):
        self.tracker = tracker

    def observe(self, index, rgb):
        return [(tid, det, {"appearance": hist}) for tid, det, hist in self.tracker(index, rgb)]

    def close(self):
        self.tracker.close()


class _CameraFeed:
    """``camera.feed`` for each frame in order; with ``beside`` in a thread of
    its own, frame t's while the tracker follows the people of frame t+1
    (several people: the tracker's frame is the longer wait). ``wait()``
    returns once every frame is fed, raising what a feed raised."""

    def __init__(self, camera, beside=False):
        self.camera = camera
        self._pool = None
        if beside and camera is not None:
            import concurrent.futures
            self._pool = concurrent.futures.ThreadPoolExecutor(1, "camera")
        self._pending = None

    def __call__(self, index, rgb, boxes):
        if self._pool is None:
            self.camera.feed(index, rgb, boxes)
            return
        self.wait()
        self._pending = self._pool.submit(self.camera.feed, index, rgb, boxes)

    def wait(self):
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)   # the main thread reads the solver next


def _producer(source, tracks, needs_crops, first, end, batch_size, q, stop, hands=None,
              camera=None):
    """Decode, track and crop; put (items, last frame index) per batch of
    frames. Items are per track: {"index", "time", "track", "det", ...}.
    `hands`: a callable (track id) -> that person's HandTracker, or None;
    `camera`: the camera solver, fed every frame with all people's boxes."""
    feed = _CameraFeed(camera, beside=isinstance(tracks, _MultiTrack))
    try:
        if needs_crops:
            from .hybrik import preprocess
        batch, frames, last = [], 0, None
        for index, t, rgb in source.frames(first, end):
            if stop.is_set():
                break
            if hands is not None:
                hands.frame(index)
            seen = tracks.observe(index, rgb)
            if camera is not None:  # every person of the frame is masked out
                feed(index, rgb, [det.box for _, det, _ in seen if det is not None])
            for track, det, extra in seen:
                item = {"index": index, "time": t, "track": track, "det": det, **extra}
                if hands is not None:  # per track: this person's pose seeds the hands
                    item["hands"] = hands(track)(index, rgb, det and det.image_xy,
                                                 det and det.visibility)
                if needs_crops and det is not None:
                    crop, square, _ = preprocess.crop_person(rgb, det.box)
                    item.update(crop=crop, square_box=np.asarray(square, np.float64),
                                centre=np.array([source.info.width / 2,
                                                 source.info.height / 2]))
                batch.append(item)
            frames, last = frames + 1, (index, t)
            if frames >= batch_size:
                q.put((batch, last))
                batch, frames = [], 0
        feed.wait()
        if frames:
            q.put((batch, last))
        if camera is not None and not stop.is_set():
            camera.finish()   # here, beside the network's last batches; the result is kept
        q.put(None)
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        q.put(exc)
    finally:
        feed.close()


def _previous(opts, info, backend):
    """Takes of a partial result to keep when resuming, and the frame to go on from."""
    if not (opts.resume and os.path.exists(opts.out)):
        return None, opts.start
    try:
        takes = load_tracks(opts.out)
    except ResultFormatError as exc:
        raise CaptureError(EXIT_RESULT, f"cannot resume: {exc}") from None
    prev = takes[0]
    body = "smplx" if getattr(backend, "smplx", False) else "smpl"
    if prev.source != info.name or prev.backend != backend.name or prev.body_model != body:
        raise CaptureError(EXIT_RESULT, f"cannot resume: {opts.out} was made from "
                                        f"'{prev.source}' with {prev.backend} "
                                        f"({prev.body_model})")
    several = len(takes) > 1 or "appearance" in prev.extras
    if several != (opts.people != 1):
        raise CaptureError(EXIT_RESULT, f"cannot resume: {opts.out} was captured with "
                                        f"--people {'N' if several else '1'}")
    if bool(opts.hands) != ("hand_world" in prev.extras):
        raise CaptureError(EXIT_RESULT, f"cannot resume: {opts.out} was made "
                                        f"{'without' if opts.hands else 'with'} --hands")
    if prev.complete:
        return takes, None
    nums = [int(t.frame_index[-1]) for t in takes if t.num_frames]
    last = max(nums) if nums else opts.start - 1
    go_on = max(opts.start, ((last + 1) // CHUNK) * CHUNK)
    return takes, go_on


def _keep_rows(prev, go_on, backend):
    keep = prev.frame_index < go_on
    rows = []
    for i in np.nonzero(keep)[0]:
        row = {"index": int(prev.frame_index[i]), "time": float(prev.time_s[i]),
               "valid": bool(prev.valid[i]), "bbox": prev.bbox[i],
               "confidence": prev.confidence[i]}
        if backend.name == "mediapipe":
            row.update({k: prev.extras[k][i] for k in ("mp_world", "mp_image", "mp_visibility")})
        else:
            raw = prev.extras["raw_root"][i]
            sq = prev.extras["square_box"][i]
            # the refined joints replace HybrIK's own; finish() does not need those
            row.update(rotmats=prev.extras["raw_rotmats"][i], betas=prev.extras["raw_betas"][i],
                       root_translation=raw, square_box=sq, joints29=prev.joints29[i],
                       uv29=(prev.extras["uv29"][i] - 0.5 * (sq[:2] + sq[2:]))
                       / max(float(sq[2] - sq[0]), 1e-6),
                       uv29_confidence=prev.extras["uv29_confidence"][i])
            if prev.body_model == "smplx":   # the HybrIK-X network's own fields
                row.update({k: getattr(prev, k)[i] for k in HybrIKBackend.SMPLX_FIELDS})
        if "appearance" in prev.extras:
            row["appearance"] = prev.extras["appearance"][i]
        row.update({k: prev.extras[k][i] for k in HAND_EXTRAS if k in prev.extras})
        rows.append(row)
    return rows


class _Hands:
    """One HandTracker per person. With several people they all start afresh
    at every chunk boundary (so a resumed run matches an uninterrupted one);
    the single person's own tracker does that itself."""

    def __init__(self, width, height, several):
        self.width, self.height, self.several = width, height, several
        self.trackers = {}

    def frame(self, index):
        if self.several and index % CHUNK == 0:
            self.close()

    def __call__(self, track):
        if track not in self.trackers:
            self.trackers[track] = HandTracker(self.width, self.height)
        return self.trackers[track]

    def close(self):
        for t in self.trackers.values():
            t.close()
        self.trackers = {}


def _make_tracks(opts, info, kept):
    """The per-track source for this run, its state rebuilt from the kept rows."""
    if opts.people == 1:
        tracker = PersonTracker(info.fps, info.width, info.height)
        rows = kept.get(0, [])
        last_valid = [r for r in rows if r["valid"]]
        if last_valid:
            tracker.restart(last_valid[-1]["bbox"], last_valid[-1]["index"])
        return _SingleTrack(tracker)
    from .detect import multi
    from .detect.detector import DetectorUnavailable
    try:
        tracker = multi.MultiPersonTracker(
            info.fps, info.width, info.height, max_people=opts.people or None,
            detect_every=opts.detect_every)
    except DetectorUnavailable as exc:
        raise CaptureError(EXIT_ENVIRONMENT, str(exc)) from None
    return _MultiTrack(tracker)


def _rounded(alignment):
    """The 2D alignment summary for the JSON line (None where nothing was seen)."""
    if not alignment:
        return None
    return {k: {q: (round(float(v), 5) if np.isfinite(v) else None) for q, v in d.items()}
            for k, d in alignment.items()}


def load_backend(opts):
    """The backend that opts names, built once; pass it to run_capture to reuse
    its model for several videos (the batch actors do)."""
    return _load_backend(opts)


def run_capture(opts, progress=None, cancel=None, backend=None):
    """Run a capture; returns the Result written to opts.out (with several
    people, the take with the most valid frames; ``load_tracks`` reads them
    all). `backend` is a prebuilt load_backend(opts) to reuse (default: a new
    one for this run)."""
    progress = progress or (lambda event: None)
    cancel = cancel or CancelToken()
    check_options(opts)
    check_paths(opts)
    try:
        source = VideoSource(opts.video)
    except VideoError as exc:
        raise CaptureError(EXIT_VIDEO, str(exc)) from None
    info = source.info
    loading = None
    if backend is None:
        # the model loads in a thread while the tracker starts and the first
        # frames are decoded and tracked (README "Speed"); a resume needs
        # the backend first to check the partial result against it
        loading = _Loading(opts)
        if opts.resume and os.path.exists(opts.out):
            backend, loading = loading.result(), None
    try:
        return _run_capture(opts, progress, cancel, backend, loading, source)
    finally:
        if loading is not None:
            loading.thread.join()


class _Loading:
    """:func:`load_backend` in a thread; ``result()`` waits and returns the
    backend or raises what loading raised."""

    def __init__(self, opts):
        self.backend = self.error = None
        self.needs_crops = getattr(_BACKENDS.get(opts.backend), "needs_crops", False)
        self.thread = threading.Thread(target=self._load, args=(opts,), daemon=True,
                                       name="hybrik-load")
        self.thread.start()

    def _load(self, opts):
        try:
            backend = _load_backend(opts)
            if hasattr(backend, "warm_up"):
                backend.warm_up()
            self.backend = backend
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            self.error = exc

    def result(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.backend

    def failed(self):
        """The loading error (after waiting for it), or None."""
        self.thread.join()
        return self.error


def _run_capture(opts, progress, cancel, backend, loading, source):
    info = source.info
    if backend is None:
        prev, go_on = None, opts.start   # not a resume (see run_capture)
    else:
        prev, go_on = _previous(opts, info, backend)
    if go_on is None:
        best = pick_track(prev)
        progress({"event": "done", "frames": best.num_frames, "valid": int(best.valid.sum()),
                  "output": opts.out, "complete": True, "note": "already complete",
                  **({"people": len(prev)} if len(prev) > 1 else {})})
        return best
    kept = {t.track_id: _keep_rows(t, go_on, backend) for t in prev or []}
    kept = {k: v for k, v in kept.items() if v}
    prev_cover = _cover(prev) if prev else None

    focal = float(opts.focal_length or mpb.default_focal_length(info.width, info.height))
    principal = (info.width / 2.0, info.height / 2.0)
    try:
        try:
            camera = start_camera(opts, info, focal, source,
                                  sorted((r for v in kept.values() for r in v),
                                         key=lambda r: r["index"]))
        except ValueError as exc:
            raise CaptureError(EXIT_USAGE, str(exc)) from None
        tracks = _make_tracks(opts, info, kept)
    except BaseException:
        # the model's error first, as when it was loaded before the tracker
        if loading is not None and loading.failed() is not None:
            raise loading.error from None
        raise
    if isinstance(tracks, _MultiTrack):
        from .detect.multi import memories_from_rows
        flat = [r for rows in kept.values() for r in rows]
        memory = memories_from_rows(
            np.array([k for k, rows in kept.items() for _ in rows], np.int64),
            np.array([r["index"] for r in flat], np.int64),
            np.array([r["valid"] for r in flat], bool),
            np.array([r["bbox"] for r in flat]).reshape(-1, 4),
            np.array([r["appearance"] for r in flat], np.float32).reshape(len(flat), -1)
            if flat else np.zeros((0, 1), np.float32), go_on)
        thumbs = {t.track_id: t.thumbnail for t in prev or []
                  if t.thumbnail is not None and t.track_id in kept}
        tracks.tracker.restart(memory, go_on, thumbs)
    hands = _Hands(info.width, info.height, opts.people != 1) if opts.hands else None
    end = opts.end if opts.end is not None else None
    total_end = min(end, info.frame_count) if end is not None else info.frame_count
    total = max(total_end - opts.start, 1)

    rows = {k: list(v) for k, v in kept.items()}
    times = {r["index"]: r["time"] for v in kept.values() for r in v}
    q = queue.Queue(maxsize=2)
    stop = threading.Event()
    needs_crops = backend.needs_crops if backend is not None else loading.needs_crops
    thread = threading.Thread(target=_producer, daemon=True,
                              args=(source, tracks, needs_crops, go_on, end, opts.batch_size, q,
                                    stop, hands, camera))
    done_here = 0
    cancelled = False
    last_index = last_time = None
    thread.start()
    try:
        if backend is None:
            backend = loading.result()
        # the clock of the done event's seconds and the progress fps starts
        # with the model ready, as before it loaded beside the tracker
        t0 = time.perf_counter()
        while True:
            batch = q.get()
            if batch is None:
                break
            if isinstance(batch, BaseException):
                if isinstance(batch, VideoError):
                    raise CaptureError(EXIT_VIDEO, str(batch))
                import cv2
                if isinstance(batch, cv2.error):  # the decoder gave up on a frame
                    text = str(batch).strip().splitlines()
                    raise CaptureError(EXIT_VIDEO, f"'{info.name}' cannot be decoded: "
                                                   f"{text[-1] if text else 'OpenCV error'}")
                raise batch
            items, (last_index, last_time) = batch
            for item, out in zip(items, backend.process(items) if items else []):
                out.update(index=item["index"], time=item["time"], valid=item["det"] is not None,
                           bbox=item["det"].box if item["det"] is not None else np.zeros(4))
                out.update(item.get("hands") or {})
                if backend.name == "mediapipe":
                    out["confidence"] = item["det"].score if item["det"] is not None else 0.0
                if "appearance" in item:
                    out["appearance"] = item["appearance"]
                rows.setdefault(item["track"], []).append(out)
                times[item["index"]] = item["time"]
            times[last_index] = last_time
            done_here = last_index + 1 - go_on
            elapsed = time.perf_counter() - t0
            fps = done_here / max(elapsed, 1e-9)
            done = last_index + 1 - opts.start
            progress({"event": "progress", "stage": "capture", "done": int(done),
                      "total": int(max(total, done)), "fps": round(fps, 2),
                      "eta_s": round(max(total - done, 0) / max(fps, 1e-9), 1)})
            if cancel.is_set():
                cancelled = True
                break
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)
        tracks.close()
        if hands is not None:
            hands.close()

    if not rows or not any(rows.values()):
        if cancelled:
            where = "the first frame" if last_index is None else "anybody was found"
            raise CaptureError(EXIT_CANCELLED, f"cancelled before {where} in '{info.name}': "
                                               "nothing was written")
        if last_index is None:
            raise CaptureError(EXIT_VIDEO, f"'{info.name}' has no frames in the requested range")
        raise CaptureError(EXIT_NOBODY, f"nobody was found in '{info.name}'")
    several = isinstance(tracks, _MultiTrack)
    if several:
        from .detect.fragments import fill_gaps, merge_fragments
        placeholder = backend.process([{"index": 0, "time": 0.0, "det": None}])[0]
        if opts.hands:
            placeholder.update(hand_image=np.zeros((2, 21, 3)), hand_world=np.zeros((2, 21, 3)),
                               hand_score=np.zeros(2))
        rows = {k: fill_gaps(v, times, placeholder) for k, v in rows.items() if v}
        if opts.max_people and len(rows) > opts.max_people:
            rows = merge_fragments(rows, opts.max_people, placeholder, times)
    if not any(r["valid"] for v in rows.values() for r in v):
        if not cancelled:
            raise CaptureError(EXIT_NOBODY, f"nobody was found in '{info.name}'")
        if not rows:
            raise CaptureError(EXIT_CANCELLED, f"cancelled before anybody was found in "
                                               f"'{info.name}': nothing was written")
    decoded_end = last_index + 1 if last_index is not None else go_on
    cover = max([decoded_end] + [r["index"] + 1 for v in rows.values() for r in v])
    if prev_cover is not None and cover <= prev_cover and (cancelled or cover < prev_cover):
        # a resume that did not get past its partial result: keep that one
        why = (f"cancelled at frame {cover}, before the end of the partial result (frame "
               f"{prev_cover})" if cancelled else
               f"the video now ends at frame {cover}, before the end of the partial result "
               f"(frame {prev_cover}): it has changed; capture it again without --resume")
        raise CaptureError(EXIT_NO_PROGRESS, f"--resume made no progress: {why}; {opts.out} "
                                             "is unchanged")
    if cancelled and prev_cover is None:
        longer = _longer_capture(opts.out, info, backend, cover)
        if longer:
            raise CaptureError(EXIT_CANCELLED, f"cancelled at frame {cover}: {opts.out} "
                                               f"already holds {longer} of '{info.name}', "
                                               "kept unchanged")
    video_warnings = []
    truncated = None
    if (not cancelled and not os.path.isdir(opts.video) and (end is None or end > decoded_end)
            and _ended_early(info, decoded_end, last_time)):
        truncated = {"declared": int(info.frame_count), "decoded": int(decoded_end)}
        video_warnings.append(
            f"the video ended at frame {decoded_end} of the {info.frame_count} its header "
            f"declares (truncated or damaged): frames {decoded_end}-{info.frame_count - 1} "
            "are missing")
        log.warning("%s: %s", info.name, video_warnings[-1])
    progress({"event": "progress", "stage": "solve", "done": 0, "total": len(rows)})
    # the estimated focal length feeds the backends' finish
    estimate = finish_camera(camera, np.array(sorted(times), np.int64), focal)
    focal = estimate.focal
    takes, alignment = [], {}
    for track_id in sorted(rows):
        take = _finish_take(rows[track_id], track_id, backend, info, focal, principal,
                            cancelled, several, opts.hands, progress)
        take.camera = estimate.track()
        take.warnings = tuple(estimate.warnings) + tuple(video_warnings)
        alignment[track_id] = _rounded(getattr(backend, "alignment", None))
        if opts.cleanup is not None and not cancelled and take.valid.any():
            from ..core.motion.cleanup import clean_take
            progress({"event": "progress", "stage": "cleanup", "done": 0, "total": 1})
            take, matrix = clean_take(take, backend.body_model, opts.cleanup)
            take.camera_to_world = matrix
        if several:
            take.thumbnail = tracks.tracker.thumbnails.get(track_id)
        takes.append(take)
    if several and any(t.thumbnail is None for t in takes):
        from .detect.multi import THUMB_H, THUMB_W
        for t in takes:
            if t.thumbnail is None:
                t.thumbnail = np.zeros((THUMB_H, THUMB_W, 3), np.uint8)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(opts.out)), exist_ok=True)
        save_result(opts.out, takes if several else takes[0])
    except OSError as exc:
        raise CaptureError(EXIT_WRITE, f"cannot write '{opts.out}': "
                                       f"{exc.strerror or exc}") from None
    result = pick_track(takes)
    valid_total = sum(int(t.valid.sum()) for t in takes)
    done_event = {"event": "done", "frames": result.num_frames, "valid": valid_total,
                  "output": opts.out, "complete": result.complete,
                  "seconds": round(time.perf_counter() - t0, 2), "camera": estimate.mode,
                  "focal_px": round(focal, 2),
                  "warnings": list(estimate.warnings) + video_warnings,
                  "alignment": alignment.get(result.track_id)}
    if truncated:
        done_event["truncated"] = truncated
    if hasattr(backend, "run_info"):
        done_event.update(backend.run_info())
    if several:
        done_event["people"] = [{"id": t.track_id, "first": int(t.frame_index[0]),
                                 "last": int(t.frame_index[-1]),
                                 "valid": int(t.valid.sum()),
                                 "alignment": alignment.get(t.track_id)} for t in takes]
    progress(done_event)
    if cancelled:
        raise CaptureError(EXIT_CANCELLED, f"cancelled: {result.num_frames} frames kept in "
                                           f"{opts.out}; run again with --resume to go on")
    return result


def _ended_early(info, decoded_end, last_time):
    """True when the video stopped decoding before the end its header
    declares. Some containers (mkv, webm, variable-rate files) only estimate
    the frame count, as duration x nominal fps, so a variable-rate clip has
    fewer frames than that; the time of the last decoded frame tells the two
    apart: a cut file stops well before the declared duration."""
    if decoded_end >= info.frame_count:
        return False
    if last_time is None:
        return True
    return last_time + 1.5 / info.fps < info.frame_count / info.fps


def _cover(takes):
    """Frames a result covers: one past its last row's frame (0 when empty)."""
    return max([0] + [int(t.frame_index[-1]) + 1 for t in takes if t.num_frames])


def _longer_capture(path, info, backend, cover):
    """What an existing result at `path` holds when it is a capture of the same
    video with the same backend that reaches further than `cover` frames
    (a cancelled run never replaces it), else None."""
    if not os.path.exists(path):
        return None
    try:
        takes = load_tracks(path)
    except (ResultFormatError, OSError):
        return None
    if takes[0].source != info.name or takes[0].backend != backend.name:
        return None
    old = _cover(takes)
    if old < cover:
        return None
    return ("a complete result" if takes[0].complete else
            f"a partial result up to frame {old} (go on with --resume)")


def _finish_take(rows, track_id, backend, info, focal, principal, cancelled, several,
                 with_hands=False, progress=None):
    """One track's rows -> its Result (the backend's per-track finish)."""
    valid = np.array([r["valid"] for r in rows])
    cols = {k: np.stack([np.asarray(r[k], np.float64) for r in rows])
            for k in rows[0] if k not in ("valid",)}
    fields, extras = backend.finish(cols, valid, (focal, focal), principal)
    if with_hands:
        if progress is not None:
            progress({"event": "progress", "stage": "hands", "done": 0, "total": 1})
        fields = add_hands(fields, cols, valid, cols["time"], info.fps, backend.body_model,
                           getattr(backend, "rest29", None))
        extras = dict(extras, **hand_extras(cols))
    if several:
        extras["appearance"] = cols["appearance"].astype(np.float32)
    confidence = np.clip(fields.pop("confidence", cols["confidence"]), 0, 1)
    return Result.from_frames(
        valid=valid, frame_index=cols["index"].astype(np.int64), time_s=cols["time"],
        bbox=cols["bbox"], confidence=confidence, fps=info.fps,
        image_size=(info.width, info.height), focal_length=(focal, focal),
        principal_point=principal, source=info.name, backend=backend.name,
        model=backend.model_name, complete=not cancelled, extras=extras,
        track_id=int(track_id), **fields)
