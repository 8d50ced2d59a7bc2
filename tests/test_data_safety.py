"""No command destroys the user's data, trusts a path from a file, reports a
cut video as whole, loops on resume or ends without its documented code
(issue 12, the command-line half): outputs over inputs and over special
files refused before any work, option values checked up front, stale cancel
files, resumes that cannot go round in circles, truncated videos, batch
fingerprints, and the exit-code table as the contract."""
import hashlib
import json
import os
import re
import stat
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hybrik_blender.core import exitcodes as codes
from hybrik_blender.core import safe_paths
from hybrik_blender.core.formats.result import load_result, load_tracks, save_result
from hybrik_blender.worker import batch
from hybrik_blender.worker import capture as cap
from hybrik_blender.worker import cli
from tests.conftest import DATA, ROOT, SYNTHETIC_MODEL
from tests.helpers import cancel_after, make_result, random_motion
from tests.test_worker_capture import photo_frames, write_video


def digest(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """40 frames of a real photo of a person, 160x120 (MJPG avi)."""
    return write_video(tmp_path_factory.mktemp("v") / "walk.avi",
                       photo_frames(40, (160, 120), step=0), fourcc="MJPG")


def _worker(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "hybrik_blender.worker", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _headless(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "hybrik_blender", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def one_error_line(stderr):
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return errors[0]


def _run_cli(capsys, *args):
    """The worker CLI in this process: (exit code, JSON events, stderr)."""
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return code, events, err


# --- no output over an input ------------------------------------------------------------

def test_worker_refuses_an_output_that_is_its_input(tmp_path, clip, capsys):
    video = tmp_path / "v.avi"
    video.write_bytes(open(clip, "rb").read())
    before = digest(video)
    os.link(video, tmp_path / "hard.avi")
    os.symlink(video, tmp_path / "soft.npz")
    model = tmp_path / "model.npz"
    model.write_bytes(open(SYNTHETIC_MODEL, "rb").read())
    for out, extra in ((video, []), (tmp_path / "hard.avi", []), (tmp_path / "soft.npz", []),
                       (model, ["--smpl-model", model]),
                       (tmp_path / "t.npz", ["--cancel-file", video])):
        code, events, err = _run_cli(capsys, "capture", video, "--out", out, *extra)
        assert code == codes.EXIT_USAGE, err
        assert "refusing to write over an input" in one_error_line(err)
        assert not [e for e in events if e["event"] == "progress"]  # before any work
        assert events[-1] == {"event": "error", "code": 2, "message": events[-1]["message"]}
    assert digest(video) == before and digest(model) == digest(SYNTHETIC_MODEL)
    assert sorted(os.listdir(tmp_path)) == ["hard.avi", "model.npz", "soft.npz", "v.avi"]
    # the real process: one line, exit 2, the video unchanged
    p = _worker("capture", video, "--out", video)
    assert p.returncode == 2 and "is the video" in one_error_line(p.stderr)
    assert digest(video) == before


def test_outputs_that_are_not_regular_files_are_never_replaced(tmp_path, clip, capsys):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    folder = tmp_path / "dir.npz"
    folder.mkdir()
    targets = [fifo, folder]
    if os.geteuid() == 0:  # a character device of our own (never /dev/full itself)
        dev = tmp_path / "null.npz"
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        targets.append(dev)
        os.symlink(dev, tmp_path / "link-to-device.npz")
        targets.append(tmp_path / "link-to-device.npz")
    for out in targets:
        code, events, err = _run_cli(capsys, "capture", clip, "--out", out)
        assert code == codes.EXIT_USAGE and "not a regular file" in one_error_line(err), err
        assert not [e for e in events if e["event"] == "progress"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.path.isdir(folder)
    if os.geteuid() == 0:
        assert stat.S_ISCHR(os.stat(tmp_path / "null.npz").st_mode)
    # a cancel file that is a folder would cancel every run: refused too
    (tmp_path / "t.npz.cancel").mkdir()
    code, _, err = _run_cli(capsys, "capture", clip, "--out", tmp_path / "t.npz")
    assert code == codes.EXIT_USAGE and "--cancel-file" in err
    # the checks themselves (what the Blender side and the batch use too)
    with pytest.raises(safe_paths.PathRefused, match="a FIFO"):
        safe_paths.check_outputs([("-o", fifo)])
    assert safe_paths.video_beside(tmp_path / "r.npz", "fifo.npz") is None


def test_impossible_output_folders_fail_before_the_capture(tmp_path, clip, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, events, err = _run_cli(capsys, "capture", clip, "--out", blocker / "sub" / "t.npz")
    assert code == codes.EXIT_WRITE and "is not a folder" in one_error_line(err)
    assert not [e for e in events if e["event"] == "progress"]
    # a missing folder that can be created is created for the result
    code, events, err = _run_cli(capsys, "capture", clip, "--out", tmp_path / "new" / "t.npz",
                                 "--end", "2")
    assert code == 0, err
    assert load_result(tmp_path / "new" / "t.npz").num_frames == 2


@pytest.mark.parametrize("option", [["--focal-length", "-1"], ["--focal-length", "nan"],
                                    ["--focal-length", "inf"], ["--batch-size", "0"],
                                    ["--start", "-3"], ["--start", "5", "--end", "5"],
                                    ["--smooth-strength", "nan"], ["--max-people", "0"]])
def test_bad_option_values_fail_at_once(tmp_path, clip, option, capsys):
    try:
        code, events, err = _run_cli(capsys, "capture", clip, "--out", tmp_path / "t.npz",
                                     *option)
    except SystemExit as exc:  # argparse's own refusal
        code, events, err = exc.code, [], capsys.readouterr().err
    assert code == codes.EXIT_USAGE
    line = one_error_line(err)
    assert any(flag in line for flag in option if flag.startswith("--")), line
    assert not [e for e in events if e["event"] == "progress"]
    assert not os.listdir(tmp_path)


def test_headless_commands_refuse_outputs_over_inputs_before_loading_blender(tmp_path, clip):
    res = tmp_path / "r.npz"
    save_result(res, make_result(random_motion(4)))
    video = tmp_path / "v.avi"
    video.write_bytes(open(clip, "rb").read())
    keep = {p: digest(p) for p in (res, video)}
    cases = [
        (["capture", video, "-o", tmp_path / "take.blend", "--result", video], "is the video"),
        (["capture", video, "-o", video], "is the video"),
        (["capture", video, "-o", tmp_path / "take.npz"], "are the same file"),
        (["capture", video, "-o", tmp_path / "t.blend", "--fbx", tmp_path / "t.blend"],
         "are the same file"),
        (["import", res, "-o", res], "is the result"),
        (["import", res, "-o", tmp_path / "t.blend", "--glb", res], "is the result"),
        (["import", res, "-o", tmp_path / "t.blend", "--smpl-model", SYNTHETIC_MODEL,
          "--bvh", SYNTHETIC_MODEL], "is the --smpl-model"),
        (["retarget", video, "--target", res, "-o", video], "is the take"),
        (["retarget", tmp_path / "none.blend", "--target", res, "-o", tmp_path / "o.blend"],
         "does not exist"),
    ]
    for args, text in cases:
        p = _headless(*args)
        assert p.returncode == codes.EXIT_USAGE, (args, p.stderr)
        assert text in one_error_line(p.stderr), (args, p.stderr)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = _headless("import", res, "-o", tmp_path / "t.blend", "--fbx", blocker / "t.fbx")
    assert p.returncode == codes.EXIT_WRITE and "not a folder" in one_error_line(p.stderr)
    assert {p: digest(p) for p in keep} == keep
    assert sorted(os.listdir(tmp_path)) == ["file", "r.npz", "v.avi"]


def test_atomic_output_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with safe_paths.atomic_output(path) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("the writer died")
    assert path.read_bytes() == b"good" and os.listdir(tmp_path) == ["out.bin"]
    with safe_paths.atomic_output(path) as tmp:
        open(tmp, "wb").write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]
    safe_paths.write_text_atomic(tmp_path / "m.json", "{}\n")
    assert (tmp_path / "m.json").read_text() == "{}\n"


# --- trust nothing a file says -----------------------------------------------------------

def test_the_video_is_only_looked_for_beside_the_result(tmp_path):
    (tmp_path / "takes").mkdir()
    res = tmp_path / "takes" / "r.npz"
    res.write_bytes(b"")
    (tmp_path / "takes" / "clip.mp4").write_bytes(b"v")
    (tmp_path / "takes" / "passwd").write_bytes(b"v")
    (tmp_path / "secret.mp4").write_bytes(b"v")
    beside = safe_paths.video_beside
    assert beside(res, "clip.mp4") == str(tmp_path / "takes" / "clip.mp4")
    assert beside(res, "../secret.mp4") is None
    assert beside(res, str(tmp_path / "secret.mp4")) is None
    assert beside(res, "..\\..\\secret.mp4") is None
    # only the last part of the name counts, and only in the result's folder
    assert beside(res, "../../../../etc/passwd") == str(tmp_path / "takes" / "passwd")
    for name in ("", ".", "..", "/", "r.npz", "a\x00b", "missing.mp4"):
        assert beside(res, name) is None


# --- honest completeness -----------------------------------------------------------------

def test_a_video_cut_in_half_is_complete_with_a_warning(tmp_path, capsys):
    full = write_video(tmp_path / "full.avi", photo_frames(24, (160, 120), step=0),
                       fourcc="MJPG")
    data = open(full, "rb").read()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:len(data) // 2])
    code, events, err = _run_cli(capsys, "capture", cut, "--out", tmp_path / "t.npz")
    assert code == 0, err
    res = load_result(tmp_path / "t.npz")
    decoded = res.num_frames
    assert 6 < decoded < 24
    assert res.complete  # nothing more can be read from the file ...
    # ... and the result says what is missing
    assert any(f"ended at frame {decoded} of the 24 its header declares" in w
               for w in res.warnings), res.warnings
    done = events[-1]
    assert done["event"] == "done" and done["truncated"] == {"declared": 24, "decoded": decoded}
    assert any("header declares" in w for w in done["warnings"])
    # a whole video, or a range that ends before the cut, has no such warning
    whole = cap.run_capture(cap.CaptureOptions(video=full, out=str(tmp_path / "w.npz")))
    part = cap.run_capture(cap.CaptureOptions(video=str(cut), out=str(tmp_path / "p.npz"),
                                              end=5))
    # a variable-frame-rate clip, whose container only estimates its frame
    # count from the duration (18 for these 10 frames), is not cut either
    import imageio_ffmpeg
    vfr = tmp_path / "vfr.mkv"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", full, "-vf",
                    "setpts='if(lt(N,5),N*0.04,0.2+(N-5)*0.12)/TB'", "-frames:v", "10",
                    "-fps_mode", "vfr", "-c:v", "mjpeg", str(vfr)], check=True)
    from hybrik_blender.worker.video.reader import VideoSource
    assert VideoSource(vfr).info.frame_count > 10
    varied = cap.run_capture(cap.CaptureOptions(video=str(vfr), out=str(tmp_path / "f.npz")))
    assert varied.num_frames == 10
    for take in (whole, part, varied):
        assert not [w for w in take.warnings if "header declares" in w], take.warnings


# --- cancel and resume that cannot loop -------------------------------------------------

def test_a_stale_cancel_file_is_cleared_at_the_start(tmp_path, clip, capsys):
    out = tmp_path / "take.npz"
    (tmp_path / "take.npz.cancel").touch()   # left by a Ctrl-C of an earlier run
    code, events, err = _run_cli(capsys, "capture", clip, "--out", out, "--batch-size", "8",
                                 "--end", "16")
    assert code == 0, err
    res = load_result(out)   # it would have cancelled itself after the first 8 frames
    assert res.complete and res.num_frames == 16
    assert not (tmp_path / "take.npz.cancel").exists()


def test_cancel_never_replaces_a_longer_result_and_resume_cannot_loop(tmp_path, clip, capsys):
    out = str(tmp_path / "take.npz")
    opts = dict(video=clip, out=out, batch_size=8)
    token, progress = cancel_after(3)
    with pytest.raises(cap.CaptureError) as err:
        cap.run_capture(cap.CaptureOptions(**opts), progress=progress, cancel=token)
    assert err.value.code == codes.EXIT_CANCELLED
    partial = load_result(out)
    assert not partial.complete and partial.num_frames == 24
    kept = digest(out)
    # the same command again, cancelled sooner: the longer partial result stays
    token, progress = cancel_after(1)
    with pytest.raises(cap.CaptureError, match="kept unchanged") as err:
        cap.run_capture(cap.CaptureOptions(**opts), progress=progress, cancel=token)
    assert err.value.code == codes.EXIT_CANCELLED and digest(out) == kept
    # a resume that is cancelled before it gets past the partial result's end
    # writes nothing and says so with its own code (a script cannot loop on 130)
    token, progress = cancel_after(1)
    with pytest.raises(cap.CaptureError, match="made no progress") as err:
        cap.run_capture(cap.CaptureOptions(resume=True, **opts), progress=progress,
                        cancel=token)
    assert err.value.code == codes.EXIT_NO_PROGRESS and digest(out) == kept
    # the CLI accepts --resume; a parent process that is gone cancels every run
    # (as when a command line copied from the add-on is run again): no loop
    gone = subprocess.Popen(["true"])
    gone.wait()
    p = _worker("capture", clip, "--out", out, "--resume", "--batch-size", "8",
                "--parent-pid", gone.pid)
    assert p.returncode == codes.EXIT_NO_PROGRESS, p.stderr[-2000:]
    assert "made no progress" in one_error_line(p.stderr) and digest(out) == kept
    # the video replaced by a shorter one: the resume cannot reach the end
    short = tmp_path / "walk.avi"   # same name, 16 frames
    write_video(short, photo_frames(16, (160, 120), step=0), fourcc="MJPG")
    code, events, err = _run_cli(capsys, "capture", short, "--out", out, "--resume")
    assert code == codes.EXIT_NO_PROGRESS and "now ends at frame 16" in one_error_line(err)
    assert digest(out) == kept
    # and a real resume finishes it
    code, events, err = _run_cli(capsys, "capture", clip, "--out", out, "--resume",
                                 "--batch-size", "8")
    assert code == 0, err
    assert load_result(out).complete and load_result(out).num_frames == 40


def test_resume_of_a_damaged_or_foreign_result_is_code_10(tmp_path, clip, capsys):
    out = tmp_path / "take.npz"
    out.write_bytes(b"PK\x03\x04 not a zip")
    code, _, err = _run_cli(capsys, "capture", clip, "--out", out, "--resume")
    assert code == codes.EXIT_RESULT and "cannot resume" in one_error_line(err)
    save_result(out, make_result(random_motion(4), complete=False))
    code, _, err = _run_cli(capsys, "capture", clip, "--out", out, "--resume")
    assert code == codes.EXIT_RESULT and "was made from" in one_error_line(err)


def test_several_people_cancelled_before_anybody_is_found_is_130(tmp_path):
    noise = [np.random.default_rng(i).integers(0, 255, (120, 160, 3), np.uint8)
             for i in range(16)]
    path = write_video(tmp_path / "empty.avi", noise, fourcc="MJPG")
    token, progress = cancel_after(1)
    with pytest.raises(cap.CaptureError, match="cancelled before anybody") as err:
        cap.run_capture(cap.CaptureOptions(video=path, out=str(tmp_path / "x.npz"), people=0,
                                           batch_size=4), progress=progress, cancel=token)
    assert err.value.code == codes.EXIT_CANCELLED
    assert not (tmp_path / "x.npz").exists()


# --- every error path has its code ------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from tests.helpers import write_random_checkpoint
    return write_random_checkpoint(tmp_path_factory.mktemp("ck") / "hybrik_res34_random.pth")


def test_check_says_5_for_a_bad_model_file_and_nan_weights(tmp_path, checkpoint, capsys):
    import torch
    state = torch.load(checkpoint, weights_only=True)["model"]
    key = next(k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
               and not k.startswith("smpl."))
    state[key] = torch.full_like(state[key], float("nan"))
    nan = tmp_path / "nan.pth"
    torch.save({"model": state}, nan)
    assert cli.main(["check", "--checkpoint", str(nan)]) == codes.EXIT_MODEL
    assert f"MISSING checkpoint: nan.pth: tensor '{key}' holds NaN" in capsys.readouterr().out
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    assert cli.main(["check", "--smpl-model", str(bad)]) == codes.EXIT_MODEL
    assert "MISSING body model" in capsys.readouterr().out
    assert cli.main(["check", "--checkpoint", checkpoint]) == codes.EXIT_OK
    # the capture says it before any frame, not as a traceback deep inside
    with pytest.raises(cap.CaptureError, match="NaN or infinite") as err:
        cap.load_backend(cap.CaptureOptions(video="", out="", backend="hybrik",
                                            checkpoint=str(nan)))
    assert err.value.code == codes.EXIT_MODEL


def test_out_of_gpu_memory_at_batch_1_and_no_cuda_have_their_codes(tmp_path, clip, checkpoint,
                                                                     monkeypatch):
    import torch
    from hybrik_blender.worker.hybrik.model import HybrIKPipeline
    if not torch.cuda.is_available():
        with pytest.raises(cap.CaptureError) as err:
            cap.load_backend(cap.CaptureOptions(video="", out="", backend="hybrik",
                                                checkpoint=checkpoint, device="cuda"))
        assert err.value.code == codes.EXIT_ENVIRONMENT

    def always(self, x, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
    monkeypatch.setattr(HybrIKPipeline, "__call__", always)
    with pytest.raises(cap.CaptureError, match="even at batch size 1") as err:
        cap.run_capture(cap.CaptureOptions(video=clip, out=str(tmp_path / "t.npz"),
                                           backend="hybrik", checkpoint=checkpoint, end=4,
                                           batch_size=4, device="cpu"))
    assert err.value.code == codes.EXIT_GPU_MEMORY


def test_a_worker_python_that_cannot_run_is_code_7(tmp_path, clip):
    p = _headless("capture", clip, "-o", tmp_path / "t.blend", "--worker-python",
                  tmp_path / "no-such-python")
    assert p.returncode == codes.EXIT_ENVIRONMENT, p.stderr[-2000:]
    assert "cannot run" in one_error_line(p.stderr)
    assert not os.listdir(tmp_path)


def test_a_bug_is_one_line_and_exit_1(tmp_path, clip, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("something nobody expected")
    monkeypatch.setattr(cap, "run_capture", broken)
    code, _, err = _run_cli(capsys, "capture", clip, "--out", tmp_path / "t.npz")
    assert code == codes.EXIT_INTERNAL
    assert "internal error" in one_error_line(err) and "KeyError" in err


def test_batch_refuses_bad_out_dirs_and_outputs_before_any_video(tmp_path, clip):
    pytest.importorskip("ray")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    opts = dict(ray_address=None, batch_size=8)
    with pytest.raises(batch.BatchError, match="not a folder") as err:
        batch.run_batch(batch.BatchOptions(inputs=[clip], out_dir=str(blocker / "out"), **opts))
    assert err.value.code == codes.EXIT_WRITE
    with pytest.raises(batch.BatchError, match="not a folder") as err:
        batch.run_batch(batch.BatchOptions(inputs=[clip], out_dir=str(blocker), **opts))
    assert err.value.code == codes.EXIT_WRITE
    with pytest.raises(batch.BatchError, match="--batch-size") as err:
        batch.run_batch(batch.BatchOptions(inputs=[clip], out_dir=str(tmp_path / "o"),
                                           ray_address=None, batch_size=0))
    assert err.value.code == codes.EXIT_USAGE
    # outputs that are a folder, or one of the inputs: that video fails, no work runs
    out = tmp_path / "out"
    (out / "walk.npz").mkdir(parents=True)
    given = tmp_path / "given.npz"   # a "video" named like its own output
    given.write_bytes(b"not a video")
    summary = batch.run_batch(batch.BatchOptions(inputs=[str(given)], out_dir=str(tmp_path),
                                                 **opts))
    last = batch.read_manifest(tmp_path)
    assert last[str(given)]["error"]["code"] == codes.EXIT_USAGE
    assert "one of the batch's inputs" in last[str(given)]["error"]["message"]
    assert given.read_bytes() == b"not a video" and summary["failed"] == 1
    summary = batch.run_batch(batch.BatchOptions(inputs=[clip], out_dir=str(out), **opts))
    rec = batch.read_manifest(out)[clip]
    assert rec["status"] == "failed" and rec["error"]["code"] == codes.EXIT_USAGE
    assert "a folder" in rec["error"]["message"] and os.path.isdir(out / "walk.npz")


def test_batch_fingerprint_sees_content_names_and_image_sequences(tmp_path):
    a = tmp_path / "a.avi"
    a.write_bytes(b"\x01" * (3 << 20))
    fp = batch.fingerprint(str(a))
    assert fp["size"] == 3 << 20 and fp["path"] == os.path.realpath(a)
    st = os.stat(a)
    with open(a, "r+b") as fh:  # same size, same mtime, other content at the end
        fh.seek((3 << 20) - 10)
        fh.write(b"\x02" * 10)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert batch.fingerprint(str(a))["sha256"] != fp["sha256"]
    fifo = tmp_path / "f.avi"
    os.mkfifo(fifo)
    assert batch.fingerprint(str(fifo)) is None   # never opened: it would block
    # an image sequence in a subfolder gets its folder's name, not "seq1/.npz"
    seq = tmp_path / "clips" / "seq1"
    seq.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(seq / f"f{i}.png"), np.zeros((8, 8, 3), np.uint8))
    write_video(tmp_path / "clips" / "b.avi", [np.zeros((8, 8, 3), np.uint8)] * 2,
                fourcc="MJPG")
    assert [k for _, k in batch.collect_videos([str(tmp_path / "clips")])] == ["b", "seq1"]
    before = batch.fingerprint(str(seq))
    cv2.imwrite(str(seq / "f2.png"), np.zeros((8, 8, 3), np.uint8))
    assert batch.fingerprint(str(seq)) != before


def test_a_torn_manifest_line_costs_only_itself(tmp_path):
    path = tmp_path / batch.MANIFEST
    path.write_text('{"video": "a", "status": "done"}\n{"video": "b", "sta')
    m = batch.Manifest(str(tmp_path))
    m.write({"video": "c", "status": "done"})
    m.close()
    assert sorted(batch.read_manifest(str(tmp_path))) == ["a", "c"]


# --- the contract -------------------------------------------------------------------------

# where each documented code is produced by a real run (this file or another)
PRODUCED_BY = {
    0: "tests/test_data_safety.py::test_a_stale_cancel_file_is_cleared_at_the_start",
    1: "tests/test_data_safety.py::test_a_bug_is_one_line_and_exit_1",
    2: "tests/test_data_safety.py::test_worker_refuses_an_output_that_is_its_input",
    3: "tests/test_worker_capture.py::test_cli_json_lines_and_error_codes",
    4: "tests/test_worker_capture.py::test_nobody_in_the_video",
    5: "tests/test_data_safety.py::test_check_says_5_for_a_bad_model_file_and_nan_weights",
    6: "tests/test_data_safety.py::test_impossible_output_folders_fail_before_the_capture",
    7: "tests/test_data_safety.py::test_a_worker_python_that_cannot_run_is_code_7",
    8: "tests/test_data_safety.py::test_out_of_gpu_memory_at_batch_1_and_no_cuda_have_their_"
       "codes",
    9: "tests/test_batch.py::test_cli_on_a_running_cluster_with_export",
    10: "tests/test_data_safety.py::test_resume_of_a_damaged_or_foreign_result_is_code_10",
    11: "tests/test_data_safety.py::test_cancel_never_replaces_a_longer_result_and_resume_"
        "cannot_loop",
    130: "tests/test_data_safety.py::test_several_people_cancelled_before_anybody_is_found_is_130",
}


def test_the_readme_table_is_the_exit_code_contract():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    table = {int(k): v for k, v in re.findall(r"^ *\| (\d+) \| (.+?) \|$", readme, re.M)}
    assert table == codes.MEANINGS
    assert set(PRODUCED_BY) == set(codes.MEANINGS)
    for code, where in PRODUCED_BY.items():
        path, name = where.split("::")
        source = open(os.path.join(ROOT, path), encoding="utf-8").read()
        assert f"def {name}(" in source, (code, where)
    # the worker's --help lists them too
    p = _worker("--help")
    for code in codes.MEANINGS:
        assert re.search(rf"^  {code}\s", p.stdout, re.M), code
