"""Batch capture: many videos fanned out over a Ray cluster.

    python -m hybrik_blender.worker batch INPUT... --out-dir DIR [options]

Design (the decisions, in one place):

* Ray does the distribution: placement by resources (``num_cpus`` /
  ``num_gpus`` per worker), restarting dead worker processes and moving them
  off dead nodes. The driver only hands the next video to the worker that
  just finished one (the actor-pool pattern); it has no scheduler of its own.
* One task per video. A clip is never split across machines: tracking and the
  whole-clip solve and smoothing need every frame of it in one place.
* Each worker is a Ray actor holding one capture backend (the HybrIK network,
  or mediapipe's body model) built once and reused for every video it gets;
  one per GPU (``--gpus-per-worker 1``; 0.5 puts two on a GPU) or one per CPU.
  Without GPUs per worker the hybrik backend runs on the CPU, so actors never
  share a GPU that Ray did not give them.
* The actors write results themselves with the single-video code
  (``capture.run_capture``), which writes to a temporary name and renames, so
  a batch result is byte-for-byte the same computation as ``capture`` and a
  killed worker never leaves a half-written file. On several machines, the
  inputs and ``--out-dir`` must be on storage every node sees under the same
  path (NFS, a cloud file system mount).
* Only the driver writes ``DIR/manifest.jsonl``: one JSON line per status
  change (``done``, ``failed``, ``retry``), with frames, fps, duration, wall
  time, the worker's host and the error (code, reason, message). The last
  line for a video is its state.
* Resume is free, and never trusts a stale file: a video is skipped only
  when its result exists, is complete (same backend) and the manifest's last
  record for that output says it was captured from this very video, with
  the same fingerprint (resolved path, size, mtime and a SHA-256 of the
  first and last MiB; for a folder of images, its image list and the ends of
  the first and last image). A different clip of the same name in the same
  --out-dir, or the same file replaced, is captured again (from the start: a
  batch never resumes a partial result it cannot vouch for). So is a video
  whose last recorded failure was its own fault (unreadable: code 3, nobody
  in it: code 4) once its fingerprint changed (``--retry-failed`` tries
  those again anyway). Manifests written before fingerprints had these
  fields get every video captured once more.
* Outputs are checked before anything runs: --out-dir must be a writable
  folder or creatable (else exit 6), and a video whose output would be one
  of the inputs, or exists and is not a regular file, is recorded as failed
  (code 2) without running.
* A worker process or node that dies mid-video fails that call; the video is
  recorded as ``retry`` and queued again, up to ``--max-retries`` times, then
  recorded as ``failed`` (reason ``worker_died``). Ray restarts the actor.
  A capture error fails only its video; the batch goes on. Errors that are
  nobody's video's fault (checkpoint, body model, environment) stop the batch
  before any video runs, since every video would fail the same way.
* Progress is aggregated over all videos (videos and frames done/total,
  frames per second, time left); actors send theirs through a Ray queue.
* ``--export blend,fbx`` runs the headless import (``python -m hybrik_blender
  import``) on the driver's machine, one subprocess per finished video, so bpy
  never loads into the torch workers. The driver's Python must have bpy.
* ``--people N|all`` follows several people per video; every person is kept
  (a result holds one track per person) and ``--export`` writes one .blend
  with a character per person and one ``NAME_personID.fbx`` per person.

Ray is imported only here, and only when a batch runs: the add-on and the
single-video path never import it.
"""
import dataclasses
import hashlib
import importlib.util
import json
import logging
import math
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from ..core.safe_paths import PathRefused, check_folder, check_outputs
from . import exitcodes as codes
from .video.reader import IMAGE_EXTENSIONS, natural_key

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                    ".flv", ".mts", ".m2ts", ".ts", ".3gp", ".ogv")
LIST_EXTENSIONS = (".txt", ".lst", ".list")
MANIFEST = "manifest.jsonl"
EXIT_SOME_FAILED = codes.EXIT_SOME_FAILED
REASONS = {codes.EXIT_INTERNAL: "internal", codes.EXIT_USAGE: "usage",
           codes.EXIT_VIDEO: "video", codes.EXIT_NOBODY: "nobody", codes.EXIT_MODEL: "model",
           codes.EXIT_WRITE: "write", codes.EXIT_ENVIRONMENT: "environment",
           codes.EXIT_GPU_MEMORY: "gpu_memory", codes.EXIT_RESULT: "result",
           codes.EXIT_NO_PROGRESS: "no_progress", codes.EXIT_CANCELLED: "cancelled"}
HASH_BYTES = 1 << 20   # the fingerprint hashes this much at each end of a file
VIDEO_FAULTS = (codes.EXIT_VIDEO, codes.EXIT_NOBODY)
EXPORT_FORMATS = ("blend", "fbx")


class BatchError(Exception):
    """The whole batch cannot run (bad arguments, no cluster, model errors)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class BatchOptions:
    inputs: list
    out_dir: str
    backend: str = "mediapipe"
    checkpoint: str = None
    smpl_model: str = None
    kid_template: str = None
    device: str = "auto"
    precision: str = "fp32"      # hybrik: fp32, bf16 or auto (the CLI's default: auto)
    batch_size: int = 16
    cleanup: object = None
    camera: str = "auto"         # --camera static|auto|moving (see worker.camera)
    ray_address: str = "local"   # "local", "auto", "ray://host:10001", or None: already connected
    num_cpus: int = None         # size of a local cluster (default: all cores)
    workers: int = None          # default: what the cluster's resources allow
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_retries: int = 2
    retry_failed: bool = False
    export: tuple = ()
    progress_interval: float = 1.0
    hands: bool = False
    people: int = 1
    max_people: int = None
    detect_every: int = 5


@dataclasses.dataclass
class Job:
    video: str
    output: str
    frames_total: int = 0
    attempts: int = 0
    needs_capture: bool = True
    fingerprint: dict = None    # of the video when the batch planned it
    error: dict = None          # refused before running: {"code", "reason", "message"}


# --- inputs -----------------------------------------------------------------

def _expand_folder(folder):
    """Videos under a folder (recursively), or the folder itself when it is an
    image sequence (images and no videos)."""
    names = sorted(os.listdir(folder), key=natural_key)
    found, has_images = [], False
    for n in names:
        p = os.path.join(folder, n)
        if os.path.isdir(p):
            # an image sequence in a subfolder is named after the subfolder
            found += [(v, os.path.join(n, rel) if rel else n) for v, rel in _expand_folder(p)]
        elif n.lower().endswith(VIDEO_EXTENSIONS):
            found.append((p, n))
        elif n.lower().endswith(IMAGE_EXTENSIONS):
            has_images = True
    if not found and has_images:
        return [(folder, "")]
    return found


def collect_videos(inputs):
    """(video path, output key) for every video the inputs name, in order,
    each once. INPUT: a video, a folder (videos inside it, recursively; a
    folder of images is one video), or a text file listing either, one per
    line (# comments, paths relative to the list). A path that does not exist
    stays in, so that it is recorded as failed rather than dropped."""
    out = []

    def add(path, list_dir=None):
        path = os.path.expanduser(path)
        if list_dir and not os.path.isabs(path):
            path = os.path.join(list_dir, path)
        path = os.path.abspath(path)
        if os.path.isdir(path):
            base = os.path.basename(path.rstrip(os.sep))
            for video, rel in _expand_folder(path):
                out.append((video, os.path.splitext(rel)[0] if rel else base))
        elif path.lower().endswith(LIST_EXTENSIONS) and os.path.isfile(path) and not list_dir:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        add(line, os.path.dirname(path))
        else:
            out.append((path, os.path.splitext(os.path.basename(path))[0]))

    for item in inputs:
        add(os.fspath(item))
    seen, unique = set(), []
    for video, key in out:
        real = os.path.realpath(video)
        if real not in seen:
            seen.add(real)
            unique.append((video, key))
    counts = {}
    for _, key in unique:
        counts[key] = counts.get(key, 0) + 1
    named = []
    for video, key in unique:
        if counts[key] > 1:  # same name from different places: tell them apart, stably
            key += "-" + hashlib.sha1(os.path.realpath(video).encode()).hexdigest()[:8]
        named.append((video, key))
    return named


def fingerprint(path):
    """What the done-record vouches for: the video's resolved path, size,
    mtime and a SHA-256 of its first and last MiB; for a folder of images
    the sum of their sizes, the latest mtime, and a hash of the image list
    (names, sizes, mtimes) and of the ends of the first and last image.
    None when it cannot be read (or is not a file or folder: a FIFO is never
    opened)."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
        h = hashlib.sha256()
        if stat.S_ISDIR(st.st_mode):
            names = sorted((n for n in os.listdir(real) if n.lower().endswith(IMAGE_EXTENSIONS)),
                           key=natural_key)
            size, mtime = 0, st.st_mtime_ns
            for n in names:
                s = os.stat(os.path.join(real, n))
                size, mtime = size + s.st_size, max(mtime, s.st_mtime_ns)
                h.update(f"{n}\0{s.st_size}\0{s.st_mtime_ns}\n".encode("utf-8", "replace"))
            ends = [os.path.join(real, n) for n in dict.fromkeys(names[:1] + names[-1:])]
        elif stat.S_ISREG(st.st_mode):
            size, mtime, ends = st.st_size, st.st_mtime_ns, [real]
        else:
            return None
        for f in ends:
            if stat.S_ISREG(os.stat(f).st_mode):
                _hash_ends(h, f)
    except OSError:
        return None
    return {"path": real, "size": int(size), "mtime_ns": int(mtime), "sha256": h.hexdigest()}


def _hash_ends(h, path):
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        h.update(fh.read(HASH_BYTES))
        if size > HASH_BYTES:
            fh.seek(max(HASH_BYTES, size - HASH_BYTES))
            h.update(fh.read(HASH_BYTES))


def _probe_frames(path):
    """Frame count from the container header (cheap; 0 when unknown)."""
    try:
        if os.path.isdir(path):
            return sum(n.lower().endswith(IMAGE_EXTENSIONS) for n in os.listdir(path))
        import cv2
        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        try:
            return max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0) if cap.isOpened() else 0
        finally:
            cap.release()
    except Exception:  # noqa: BLE001 - only an estimate for the progress
        return 0


def _result_state(path):
    """(complete, backend) of an existing result file, or None."""
    import numpy as np
    try:
        with np.load(path, allow_pickle=False) as d:
            return bool(d["complete"]), str(d["backend"])
    except Exception:  # noqa: BLE001 - missing or unreadable: capture again
        return None


# --- manifest ---------------------------------------------------------------

def _records(out_dir):
    """The last record of each video and of each output in DIR/manifest.jsonl
    (a torn line from a crash, or anything that is not a record, is ignored)."""
    by_video, by_output = {}, {}
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.isfile(path):
        return by_video, by_output
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("video"), str):
                    by_video[rec["video"]] = rec
                    if isinstance(rec.get("output"), str):
                        by_output[rec["output"]] = rec
    except OSError:
        pass
    return by_video, by_output


def read_manifest(out_dir):
    """The last record of each video in DIR/manifest.jsonl (a torn last line
    from a crash is ignored)."""
    return _records(out_dir)[0]


def _captured(rec):
    """The record says the capture of its video finished (only the export may
    have failed)."""
    return rec.get("status") == "done" or (rec.get("error") or {}).get("reason") == "export"


class Manifest:
    """Append-only JSON lines: earlier records are never rewritten. A line
    torn by a crash is sealed with a newline before the first new record, so
    it costs only itself."""

    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, MANIFEST)
        torn = False
        try:
            with open(self.path, "rb") as fh:
                if fh.seek(0, os.SEEK_END) > 0:
                    fh.seek(-1, os.SEEK_END)
                    torn = fh.read(1) != b"\n"
        except FileNotFoundError:
            pass
        self._fh = open(self.path, "a", encoding="utf-8")
        if torn:
            self._fh.write("\n")

    def write(self, record):
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self):
        self._fh.close()


def _export_paths(out_dir, key, export):
    return {fmt: os.path.join(out_dir, key + "." + fmt) for fmt in export}


def _person_fbx(stem, output):
    """The per-person FBX files a several-people result exports to."""
    try:
        import numpy as np
        with np.load(output, allow_pickle=False) as d:
            ids = [int(i) for i in d["track_ids"]] if "track_ids" in d else [0]
            several = len(ids) > 1 or "x_appearance" in d
    except Exception:  # noqa: BLE001 - unreadable: the import will say so
        return None
    return [f"{stem}_person{i}.fbx" for i in ids] if several else None


# --- the worker actor -----------------------------------------------------------

class CaptureActor:
    """One capture backend, built once, reused for every video sent here."""

    def __init__(self, opts, queue_name):
        import ray
        from . import capture as cap
        # the queue is found by name: an actor handle as a constructor argument
        # would live in the object store, which Ray warns may break restarts
        self.queue = ray.get_actor(queue_name)
        self.cap, self.opts = cap, opts
        self.error = None
        self.host = socket.gethostname()
        self.videos = 0
        try:
            self.backend = cap.load_backend(cap.CaptureOptions(video="", out="", **opts))
        except cap.CaptureError as exc:
            self.backend, self.error = None, {"code": exc.code, "reason": REASONS.get(exc.code),
                                              "message": str(exc)}

    def ping(self):
        return {"pid": os.getpid(), "host": self.host, "error": self.error}

    def capture(self, index, video, output):
        cap = self.cap
        t0 = time.perf_counter()
        last = [0.0]
        self.videos += 1
        base = {"host": self.host, "pid": os.getpid(), "worker_videos": self.videos}

        def progress(event):
            now = time.perf_counter()
            if event.get("event") == "progress" and now - last[0] < 0.5:
                return
            event = dict(event, host=self.host)
            last[0] = now
            try:  # fire and forget: progress never slows the capture down
                self.queue.put_nowait.remote(dict(event, index=index, pid=os.getpid()))
            except Exception:  # noqa: BLE001 - progress is best effort
                pass

        # always from the start: the driver only sends videos whose output it
        # cannot vouch for (see _plan)
        opts = cap.CaptureOptions(video=video, out=output, resume=False, **self.opts)
        try:
            res = cap.run_capture(opts, progress=progress, backend=self.backend)
        except cap.CaptureError as exc:
            rec = dict(base, status="failed", error={"code": exc.code,
                                                     "reason": REASONS.get(exc.code),
                                                     "message": str(exc)})
        except Exception as exc:  # noqa: BLE001 - a bug fails this video, not the batch
            rec = dict(base, status="failed", error={
                "code": codes.EXIT_INTERNAL, "reason": "internal",
                "message": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8)})
        else:
            rec = dict(base, status="done", frames=res.num_frames,
                       valid_frames=int(res.valid.sum()), fps=round(float(res.fps), 3),
                       duration_s=round(res.num_frames / float(res.fps), 3))
            if res.warnings:  # e.g. a video that ended before its declared frame count
                rec["warnings"] = list(res.warnings)
        if rec["status"] == "failed":
            try:
                from .video.reader import VideoSource
                info = VideoSource(video).info
                rec.update(frames=info.frame_count, fps=round(info.fps, 3),
                           duration_s=round(info.frame_count / info.fps, 3))
            except Exception:  # noqa: BLE001 - unreadable: no numbers to give
                pass
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        return rec


# --- progress ---------------------------------------------------------------------

class Progress:
    """Aggregate over all videos: videos and frames done/total, fps, time left.
    Videos skipped as done count as done; those skipped as failed before, as
    failed."""

    def __init__(self, jobs, skipped, failed_before, emit, interval):
        self.total_videos = len(jobs) + skipped + failed_before
        self.skipped, self.done, self.failed = skipped, 0, failed_before
        self.frames_total = {j.video: j.frames_total for j in jobs}
        self.frames_done = {j.video: 0 for j in jobs}
        self.emit, self.interval = emit, interval
        self.t0 = time.perf_counter()
        self.last_emit = 0.0
        self.running = {}   # video -> {"host", "pid"} of the worker on it

    def started(self, video, host=None, pid=None):
        self.running[video] = {"host": host, "pid": pid}

    def frames(self, video, done, total=None):
        if total:
            self.frames_total[video] = max(int(total), done)
        self.frames_done[video] = int(done)

    def finished(self, video, ok, frames=None):
        self.running.pop(video, None)
        if ok:
            self.done += 1
            if frames is not None:
                self.frames_total[video] = self.frames_done[video] = int(frames)
        else:
            self.failed += 1
            self.frames_total[video] = self.frames_done[video]

    def snapshot(self):
        elapsed = time.perf_counter() - self.t0
        fd, ft = sum(self.frames_done.values()), sum(self.frames_total.values())
        fps = fd / elapsed if elapsed > 0 else 0.0
        return {"event": "progress", "videos_done": self.done + self.skipped,
                "videos_failed": self.failed, "videos_total": self.total_videos,
                "frames_done": fd, "frames_total": max(ft, fd),
                "fps": round(fps, 2),
                "eta_s": round(max(ft - fd, 0) / fps, 1) if fps > 0 else None,
                "elapsed_s": round(elapsed, 1),
                "running": [dict(w, video=v, frames_done=self.frames_done.get(v, 0),
                                 frames_total=self.frames_total.get(v, 0))
                            for v, w in self.running.items()]}

    def due(self):
        return time.perf_counter() - self.last_emit >= self.interval

    def tick(self, force=False):
        now = time.perf_counter()
        if force or now - self.last_emit >= self.interval:
            self.last_emit = now
            self.emit(self.snapshot())


class TerminalLine:
    """Progress as one line on a terminal (redrawn), or a line every 10 s."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0

    def __call__(self, event):
        if event.get("event") == "video":
            self._clear()
            err = event.get("error") or {}
            what = event["status"] + (f" ({err.get('reason')}: {err.get('message')})"
                                      if err else f", {event.get('frames', 0)} frames")
            what += "".join(f"; warning: {w}" for w in event.get("warnings") or ())
            self.stream.write(f"{os.path.basename(event['video'])}: {what}\n")
        elif event.get("event") == "progress":
            eta = event["eta_s"]
            line = (f"videos {event['videos_done']}/{event['videos_total']}"
                    + (f" ({event['videos_failed']} failed)" if event["videos_failed"] else "")
                    + f", frames {event['frames_done']}/{event['frames_total']}"
                    f", {event['fps']:.1f} fps"
                    + (f", {eta:.0f} s left" if eta is not None else ""))
            now = time.monotonic()
            if self.tty:
                self.stream.write("\r\033[K" + line)
            elif now - self.last >= 10:
                self.stream.write(line + "\n")
            else:
                return
            self.last = now
        elif event.get("event") == "done":
            self._clear()
            self.stream.write(
                f"batch: {event['done']} done, {event['failed']} failed, {event['skipped']} "
                f"already done" + (f", {event['failed_before']} failed before (--retry-failed "
                                   f"to try them again)" if event["failed_before"] else "")
                + f", {event['frames']} frames in {event['seconds']:.1f} s "
                f"({event['fps']:.1f} fps); manifest: {event['manifest']}\n")
        self.stream.flush()

    def _clear(self):
        if self.tty:
            self.stream.write("\r\033[K")


# --- the batch --------------------------------------------------------------------

def _connect(opts, ray):
    """Connect to (or start) the cluster; True when this call must shut it down."""
    if opts.ray_address is None:
        if not ray.is_initialized():
            raise BatchError(codes.EXIT_USAGE, "no Ray cluster is connected")
        return False
    if ray.is_initialized():
        ray.shutdown()
    kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if opts.ray_address == "local":
            # the workers of a local cluster must import this package even
            # when it runs from a source tree rather than an installed copy
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
            if root not in paths:
                os.environ["PYTHONPATH"] = os.pathsep.join([root] + [p for p in paths if p])
            ray.init(address="local", num_cpus=opts.num_cpus, **kw)
        else:
            ray.init(address=opts.ray_address, **kw)
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds here
        raise BatchError(codes.EXIT_ENVIRONMENT, f"cannot reach the Ray cluster at "
                                                 f"'{opts.ray_address}': {exc}") from None
    return True


def _worker_count(opts, ray, todo):
    if opts.workers:
        return max(1, min(opts.workers, todo))
    res = ray.cluster_resources()
    if opts.gpus_per_worker > 0:
        n = int(res.get("GPU", 0) / opts.gpus_per_worker + 1e-9)
        if n < 1:
            raise BatchError(codes.EXIT_ENVIRONMENT, f"--gpus-per-worker "
                                                     f"{opts.gpus_per_worker:g}: the cluster "
                                                     f"has {res.get('GPU', 0):g} GPUs")
    else:
        n = int(res.get("CPU", 1) / max(opts.cpus_per_worker, 1e-3) + 1e-9)
    return max(1, min(n, todo))


def _inode(path):
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _refusal(opts, video, output, exports, inputs):
    """Why a video's outputs must not be written (an error dict), or None:
    an output that is one of the batch's inputs (any video, the checkpoint,
    the body model; by path and by inode) or is not a regular file, or whose
    folder cannot be written."""
    ins = [("video", video), ("checkpoint", opts.checkpoint), ("body model", opts.smpl_model),
           ("children's template", opts.kid_template)]
    outs = [("output", output)] + [("export", p) for p in exports]
    try:
        for label, path in outs:
            if _inode(path) in inputs or os.path.realpath(path) in inputs:
                raise PathRefused(f"the {label} '{path}' is one of the batch's inputs: "
                                  "refusing to write over it", codes.EXIT_USAGE)
        check_outputs(outs, ins)
        os.makedirs(os.path.dirname(output), exist_ok=True)
    except PathRefused as exc:
        return {"code": exc.code, "reason": REASONS[exc.code], "message": str(exc)}
    except OSError as exc:
        return {"code": codes.EXIT_WRITE, "reason": "write",
                "message": f"cannot create the folder of '{output}': {exc.strerror or exc}"}
    return None


def _plan(opts, videos, records):
    """Split the videos into jobs, those already done and those that failed
    before through their own fault (resume). `records`: the manifest's last
    record per video and per output (see _records)."""
    previous, by_output = records
    inputs = set()
    for path in [v for v, _ in videos] + [opts.checkpoint, opts.smpl_model, opts.kid_template]:
        if path:
            inputs.add(os.path.realpath(path))
            if _inode(path) is not None and os.path.isfile(path):
                inputs.add(_inode(path))
    jobs, skipped, failed_before = [], [], []
    for video, key in videos:
        output = os.path.join(opts.out_dir, key + ".npz")
        fp = fingerprint(video)
        exports = list(_export_paths(opts.out_dir, key, opts.export).values())
        refused = _refusal(opts, video, output, exports, inputs)
        if refused:
            jobs.append(Job(video, output, fingerprint=fp, error=refused))
            continue
        state = _result_state(output)
        if "fbx" in opts.export and os.path.exists(output):
            people_fbx = _person_fbx(os.path.splitext(output)[0], output)
            if people_fbx:
                exports = [p for p in exports if not p.endswith(".fbx")] + people_fbx
        need_export = any(not os.path.exists(p) for p in exports)
        rec = by_output.get(output)
        vouched = (state and state[0] and state[1] == opts.backend and rec is not None
                   and _captured(rec) and rec.get("video") == video and fp is not None
                   and rec.get("fingerprint") == fp)
        if vouched:
            if not need_export:
                skipped.append(video)
                continue
            jobs.append(Job(video, output, needs_capture=False, fingerprint=fp))
            continue
        if state:
            log.info("%s: the result there is not vouched for by the manifest (another "
                     "video, or this one changed): capturing again", output)
        prev = previous.get(video)
        if (prev and prev.get("status") == "failed" and not opts.retry_failed
                and (prev.get("error") or {}).get("code") in VIDEO_FAULTS
                and fp is not None and prev.get("fingerprint") == fp):
            failed_before.append(video)
            continue
        jobs.append(Job(video, output, frames_total=_probe_frames(video), fingerprint=fp))
    return jobs, skipped, failed_before


def _export(opts, job):
    """Headless import of one result into .blend (and .fbx); returns
    (paths, error message or None)."""
    stem = os.path.splitext(job.output)[0]
    paths = {fmt: stem + "." + fmt for fmt in opts.export}
    people_fbx = _person_fbx(stem, job.output) if "fbx" in paths else None
    if people_fbx:
        paths["fbx"] = people_fbx
    name = os.path.basename(stem)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=os.path.dirname(stem)) as tmp:
        blend = os.path.join(tmp, name + ".blend")
        cmd = [sys.executable, "-m", "hybrik_blender", "import", job.output, "-o", blend,
               "--video", job.video]
        if "fbx" in paths:
            cmd += ["--fbx", os.path.join(tmp, name + ".fbx")]
        if opts.smpl_model:
            cmd += ["--smpl-model", opts.smpl_model]
        elif opts.backend == "hybrik" and opts.checkpoint:
            cmd += ["--smpl-model", opts.checkpoint]
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout or "").strip().splitlines()
            return paths, f"import exited with {proc.returncode}: " + (lines[-1] if lines else "")
        for fmt, final in paths.items():  # rename into place: atomic, like the results
            for f in (final if isinstance(final, list) else [final]):
                os.replace(os.path.join(tmp, os.path.basename(f)), f)
    return paths, None


def _check_options(opts):
    """Option values and requirements, before anything runs."""
    bad = [f for f in opts.export if f not in EXPORT_FORMATS]
    if bad:
        raise BatchError(codes.EXIT_USAGE, f"--export: unknown format(s) {', '.join(bad)} "
                                           f"(choose from {', '.join(EXPORT_FORMATS)})")
    if opts.backend == "hybrik" and not opts.checkpoint:
        raise BatchError(codes.EXIT_USAGE, "the hybrik backend needs --checkpoint")
    checks = (("--batch-size", opts.batch_size, 1), ("--max-retries", opts.max_retries, 0),
              ("--gpus-per-worker", opts.gpus_per_worker, 0),
              ("--workers", opts.workers if opts.workers is not None else 1, 1),
              ("--num-cpus", opts.num_cpus if opts.num_cpus is not None else 1, 1),
              ("--detect-every", opts.detect_every, 1))
    for name, value, low in checks:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
            raise BatchError(codes.EXIT_USAGE, f"{name} must be a number of at least {low}, "
                                               f"not {value}")
    if not (math.isfinite(opts.cpus_per_worker) and opts.cpus_per_worker > 0):
        raise BatchError(codes.EXIT_USAGE, "--cpus-per-worker must be more than 0")
    if opts.export and importlib.util.find_spec("bpy") is None:
        raise BatchError(codes.EXIT_ENVIRONMENT, "--export needs Blender's bpy module in this "
                                                 "Python: pip install '.[blender]'")


def run_batch(opts, progress=None):
    """Run the batch; returns the summary (the final "done" event). `progress`
    gets every event: "batch", "progress", "video" (each manifest record),
    "done"."""
    emit = progress or (lambda event: None)
    try:
        import ray
    except ImportError:
        raise BatchError(codes.EXIT_ENVIRONMENT, "batch capture needs Ray: pip install "
                                                 "'hybrik-blender[cluster]'") from None
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.util.queue import Empty, Queue

    _check_options(opts)
    videos = collect_videos(opts.inputs)
    if not videos:
        raise BatchError(codes.EXIT_USAGE, "no videos found in the inputs")
    manifest_path = os.path.join(opts.out_dir, MANIFEST)
    try:
        check_folder("--out-dir", opts.out_dir)
        check_outputs([("the manifest", manifest_path)],
                      [("input", v) for v, _ in videos]
                      + [("checkpoint", opts.checkpoint), ("body model", opts.smpl_model)])
        os.makedirs(opts.out_dir, exist_ok=True)
        if not os.path.isdir(opts.out_dir):
            raise PathRefused(f"--out-dir '{opts.out_dir}' is not a folder", codes.EXIT_WRITE)
    except PathRefused as exc:
        raise BatchError(exc.code, str(exc)) from None
    except OSError as exc:
        raise BatchError(codes.EXIT_WRITE, f"--out-dir '{opts.out_dir}' cannot be created: "
                                           f"{exc.strerror or exc}") from None
    jobs, skipped, failed_before = _plan(opts, videos, _records(opts.out_dir))
    prog = Progress(jobs, len(skipped), len(failed_before), emit, opts.progress_interval)
    try:
        manifest = Manifest(opts.out_dir)
    except OSError as exc:
        raise BatchError(codes.EXIT_WRITE, f"cannot write {manifest_path}: "
                                           f"{exc.strerror or exc}") from None
    t0 = time.perf_counter()
    frames_here = 0
    worker_opts = {"backend": opts.backend, "checkpoint": opts.checkpoint,
                   "smpl_model": opts.smpl_model, "kid_template": opts.kid_template,
                   "batch_size": opts.batch_size, "cleanup": opts.cleanup, "hands": opts.hands,
                   "people": opts.people, "max_people": opts.max_people,
                   "detect_every": opts.detect_every, "camera": opts.camera,
                   "precision": opts.precision,
                   "device": ("cuda" if opts.gpus_per_worker > 0
                              else "cpu" if opts.device == "auto" else opts.device)}
    exporter = ThreadPoolExecutor(max_workers=1) if opts.export else None
    export_futures = []
    lock = threading.Lock()
    counts = {"done": 0, "failed": 0}
    shutdown = False
    actors, events = [], None

    def record(job, rec):
        rec = dict(rec, video=job.video, output=job.output, attempt=job.attempts,
                   fingerprint=job.fingerprint,
                   time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        rec = {k: rec[k] for k in ("video", "output", "status", *sorted(set(rec) - {
            "video", "output", "status"}))}
        with lock:
            manifest.write(rec)
            if rec["status"] in ("done", "failed"):
                counts[rec["status"]] += 1
                prog.finished(job.video, rec["status"] == "done", rec.get("frames"))
            emit(dict(rec, event="video"))

    def finish(job, rec):
        if rec["status"] == "done" and exporter:
            def work():
                paths, err = _export(opts, job)
                if err:
                    record(job, dict(rec, status="failed", export=paths,
                                     error={"code": None, "reason": "export", "message": err}))
                else:
                    record(job, dict(rec, export=paths))
            export_futures.append(exporter.submit(work))
        else:
            record(job, rec)

    try:
        emit({"event": "batch", "videos": len(videos), "todo": len(jobs),
              "skipped": len(skipped), "failed_before": len(failed_before),
              "out_dir": os.path.abspath(opts.out_dir)})
        for job in [j for j in jobs if j.error]:
            record(job, {"status": "failed", "error": job.error})
        for job in [j for j in jobs if not j.needs_capture and not j.error]:
            finish(job, {"status": "done", "note": "result already complete"})
        queue_jobs = [j for j in jobs if j.needs_capture and not j.error]
        if queue_jobs:
            shutdown = _connect(opts, ray)
            n = _worker_count(opts, ray, len(queue_jobs))
            queue_name = f"hybrik-batch-progress-{os.getpid()}-{time.time_ns()}"
            events = Queue(actor_options={"num_cpus": 0, "name": queue_name})
            actor_cls = ray.remote(CaptureActor).options(
                num_cpus=opts.cpus_per_worker, num_gpus=opts.gpus_per_worker,
                max_restarts=max(1, (opts.max_retries + 1) * len(queue_jobs)),
                max_task_retries=0)
            actors = [actor_cls.remote(worker_opts, queue_name) for _ in range(n)]
            hello = ray.get([a.ping.remote() for a in actors])
            for h in hello:
                if h["error"]:
                    raise BatchError(h["error"]["code"], h["error"]["message"])
            log.info("%d workers on %s", n, ", ".join(sorted({h["host"] for h in hello})))
            emit({"event": "workers", "count": n, "hosts": sorted({h["host"] for h in hello}),
                  "gpus_per_worker": opts.gpus_per_worker})
            pending = list(queue_jobs)
            by_index = {i: j for i, j in enumerate(queue_jobs)}
            index_of = {id(j): i for i, j in by_index.items()}
            idle = list(range(n))
            running = {}   # ObjectRef -> ("capture", actor, job) or ("ping", actor, None)
            restarting = {}  # actor -> when to ask again whether Ray has restarted it
            while pending or running or (restarting and pending):
                now = time.monotonic()
                for a, due in list(restarting.items()):
                    if due <= now:
                        del restarting[a]
                        running[actors[a].ping.remote()] = ("ping", a, None)
                while pending and idle:
                    a = idle.pop(0)
                    job = pending.pop(0)
                    job.attempts += 1
                    ref = actors[a].capture.remote(index_of[id(job)], job.video, job.output)
                    running[ref] = ("capture", a, job)
                    prog.started(job.video)
                ready, _ = ray.wait(list(running), num_returns=1,
                                    timeout=min(0.5, opts.progress_interval))
                for ref in ready:
                    kind, a, job = running.pop(ref)
                    try:
                        rec = ray.get(ref)
                    except RayActorError as exc:
                        if kind == "ping":
                            if isinstance(exc, ActorUnavailableError):
                                restarting[a] = time.monotonic() + 0.5
                            else:
                                log.warning("worker %d is gone for good: %s", a, exc)
                            continue
                        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else \
                            type(exc).__name__
                        final = job.attempts > opts.max_retries
                        record(job, {"status": "failed" if final else "retry",
                                     "error": {"code": None, "reason": "worker_died",
                                               "message": msg}})
                        prog.running.pop(job.video, None)
                        if not final:
                            pending.insert(0, job)
                            prog.frames(job.video, 0)
                        running[actors[a].ping.remote()] = ("ping", a, None)
                        continue
                    if kind == "capture":
                        if rec["status"] == "done":
                            frames_here += rec.get("frames", 0)
                        finish(job, rec)
                    idle.append(a)
                if not idle and not running and not restarting and pending:
                    for job in pending:
                        record(job, {"status": "failed", "error": {
                            "code": None, "reason": "worker_died",
                            "message": "no worker left to run it"}})
                    pending = []
                if prog.due():  # the queue is read only when progress is shown
                    try:
                        items = events.get_nowait_batch(events.qsize()) if events.qsize() else []
                    except Empty:
                        items = []
                    for ev in items:
                        job = by_index.get(ev.get("index"))
                        if job is None or job.video not in prog.running:
                            continue
                        prog.started(job.video, ev.get("host"), ev.get("pid"))
                        if ev.get("event") == "progress" and ev.get("stage") == "capture":
                            prog.frames(job.video, ev["done"], ev.get("total"))
                    prog.tick(force=True)
        for f in export_futures:
            f.result()
    finally:
        for actor in actors + ([events.actor] if events else []):
            ray.kill(actor)  # never leave workers behind on a shared cluster
        if exporter:
            exporter.shutdown(wait=True)
        manifest.close()
        if shutdown:
            ray.shutdown()
    prog.running = {}
    prog.tick(force=True)
    seconds = time.perf_counter() - t0
    summary = {"event": "done", "videos_total": len(videos), "done": counts["done"],
               "failed": counts["failed"], "skipped": len(skipped),
               "failed_before": len(failed_before), "frames": frames_here,
               "seconds": round(seconds, 2), "fps": round(frames_here / max(seconds, 1e-9), 2),
               "manifest": manifest.path}
    emit(summary)
    return summary
