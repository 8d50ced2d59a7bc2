"""Batch capture on a local Ray cluster that this module starts with 2 CPUs:
statuses in the manifest, results equal to single-video captures, a worker
process killed mid-batch, resume doing no work, the CLI with --export, and
Ray never imported by the single-video path or the add-on."""
import json
import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hybrik_blender.core.formats.result import load_result
from hybrik_blender.worker import batch
from hybrik_blender.worker import capture as cap
from tests.conftest import DATA, ROOT

if os.environ.get("CI"):
    import ray  # CI installs the cluster extra: a missing Ray must fail, not skip
else:
    ray = pytest.importorskip("ray")

PHOTO = os.path.join(DATA, "astronaut.png")
GOOD = ("clips/a", "clips/b", "clips/sub/c", "d")


def person_video(path, n, start_x=0, step=1, size=(160, 120)):
    """The real photo of a person sliding across a 160x120 frame (MJPG avi)."""
    w, h = size
    person = cv2.resize(cv2.imread(PHOTO), (h, h))
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    for i in range(n):
        f = np.full((h, w, 3), 30, np.uint8)
        x = min(start_x + i * step, w - h)
        f[:, x:x + h] = person
        wr.write(f)
    wr.release()
    return str(path)


def noise_video(path, n):
    rng = np.random.default_rng(3)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (160, 120))
    for _ in range(n):
        wr.write(rng.integers(0, 255, (120, 160, 3), np.uint8))
    wr.release()
    return str(path)


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs, shut down (all its processes) at the end."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 1024 * 1024, configure_logging=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """6 videos through the three kinds of INPUT: a folder (with a subfolder,
    a corrupt file and a video of noise with nobody in it), a list file, and a
    plain path."""
    root = tmp_path_factory.mktemp("videos")
    (root / "clips" / "sub").mkdir(parents=True)
    for i, name in enumerate(GOOD):
        person_video(root / f"{name}.avi", 24 + 4 * i, start_x=3 * i, step=i % 2 + 1)
    noise_video(root / "clips" / "noise.avi", 12)
    (root / "clips" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 900)
    (root / "list.txt").write_text("# the loose one\nd.avi\n")
    return root, [str(root / "clips"), str(root / "list.txt")]


def opts_for(out_dir, args, **kw):
    return batch.BatchOptions(inputs=args, out_dir=str(out_dir), ray_address=None,
                              batch_size=8, progress_interval=0.2, **kw)


def manifest_lines(out_dir):
    with open(os.path.join(out_dir, batch.MANIFEST)) as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def first_run(cluster, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("batch")
    events = []
    summary = batch.run_batch(opts_for(out, inputs[1]), progress=events.append)
    return out, summary, events


def test_inputs_expand_folders_lists_and_image_sequences(tmp_path, inputs):
    root, args = inputs
    found = batch.collect_videos(args + [str(root / "d.avi")])  # d twice: kept once
    assert [k for _, k in found] == ["a", "b", "broken", "noise", "sub/c", "d"]
    seq = tmp_path / "seq"
    seq.mkdir()
    for i in range(3):
        cv2.imwrite(str(seq / f"f{i}.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "x").mkdir()
    person_video(tmp_path / "x" / "a.avi", 2)
    got = batch.collect_videos([str(seq), str(root / "clips" / "a.avi"),
                                str(tmp_path / "x" / "a.avi"), str(tmp_path / "missing.mp4")])
    keys = [k for _, k in got]
    assert keys[0] == "seq" and keys[3] == "missing" and got[0][0] == str(seq)
    assert keys[1].startswith("a-") and keys[2].startswith("a-") and keys[1] != keys[2]


def test_batch_statuses_progress_and_results_equal_single_capture(first_run, inputs):
    out, summary, events = first_run
    root, _ = inputs
    assert summary["done"] == 4 and summary["failed"] == 2 and summary["skipped"] == 0
    last = batch.read_manifest(out)
    assert len(last) == 6
    by_name = {os.path.basename(v): r for v, r in last.items()}
    assert by_name["broken.mp4"]["status"] == "failed"
    assert by_name["broken.mp4"]["error"]["code"] == 3
    assert by_name["broken.mp4"]["error"]["reason"] == "video"
    noise = by_name["noise.avi"]
    assert noise["status"] == "failed" and noise["error"]["code"] == 4
    assert noise["error"]["reason"] == "nobody" and noise["frames"] == 12
    assert not os.path.exists(out / "noise.npz") and not os.path.exists(out / "broken.npz")
    for i, name in enumerate(GOOD):
        rec = by_name[os.path.basename(name) + ".avi"]
        assert rec["status"] == "done" and "error" not in rec
        assert rec["frames"] == 24 + 4 * i and rec["fps"] == 25.0
        assert rec["duration_s"] == pytest.approx(rec["frames"] / 25.0)
        assert rec["valid_frames"] > 0.8 * rec["frames"] and rec["seconds"] > 0
        got = load_result(rec["output"])
        single = cap.run_capture(cap.CaptureOptions(
            video=str(root / f"{name}.avi"), out=str(out / "single.npz"), batch_size=8))
        assert got.complete and got.source == single.source and got.model == single.model
        for key in ("frame_index", "time_s", "valid", "bbox", "rotmats", "betas",
                    "root_translation", "joints29", "confidence"):
            assert np.array_equal(getattr(got, key), getattr(single, key)), (name, key)
        for key in single.extras:
            assert np.array_equal(got.extras[key], single.extras[key]), (name, key)
    assert os.path.exists(out / "sub" / "c.npz")  # a subfolder is mirrored
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]
    # aggregated progress: videos and frames over the whole batch
    prog = [e for e in events if e["event"] == "progress"]
    assert prog[-1]["videos_done"] == 4 and prog[-1]["videos_failed"] == 2
    assert prog[-1]["videos_total"] == 6 and prog[-1]["running"] == []
    assert prog[-1]["frames_done"] == prog[-1]["frames_total"] >= 4 * 24
    assert any(e["running"] and e["running"][0]["frames_done"] > 0 for e in prog[:-1])
    assert [e["event"] for e in events].count("video") == 6
    workers = [e for e in events if e["event"] == "workers"]
    assert workers and workers[0]["count"] == 2
    # two model actors did all six videos, each reusing its backend
    pids = {r["pid"] for r in last.values()}
    assert len(pids) == 2 and max(r["worker_videos"] for r in last.values()) >= 3


def test_second_run_does_no_work(first_run, inputs):
    out, _, _ = first_run
    before = open(out / batch.MANIFEST).read()
    mtimes = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out)}
    events = []
    summary = batch.run_batch(opts_for(out, inputs[1]), progress=events.append)
    assert summary["skipped"] == 4 and summary["failed_before"] == 2
    assert summary["done"] == summary["failed"] == summary["frames"] == 0
    assert not [e for e in events if e["event"] in ("workers", "video")]
    assert open(out / batch.MANIFEST).read() == before
    assert {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out)} == mtimes
    # a video that failed is tried again once its file changes...
    noise = inputs[0] / "clips" / "noise.avi"
    st = os.stat(noise)
    os.utime(noise, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    summary = batch.run_batch(opts_for(out, inputs[1]))
    assert summary["skipped"] == 4 and summary["failed"] == 1 and summary["failed_before"] == 1
    # ... and every failed one with --retry-failed
    summary = batch.run_batch(opts_for(out, inputs[1], retry_failed=True))
    assert summary["skipped"] == 4 and summary["failed"] == 2 and summary["failed_before"] == 0


def test_a_different_clip_of_the_same_name_or_a_replaced_file_is_captured_again(cluster,
                                                                               tmp_path):
    """The done-record vouches for the very file (path, size, mtime, content
    hash): another clip.avi into the same --out-dir, or clip.avi replaced, is
    captured again; a result the manifest knows nothing of is not trusted."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    a = person_video(tmp_path / "one" / "clip.avi", 8)
    b = person_video(tmp_path / "two" / "clip.avi", 12, start_x=10)
    out = tmp_path / "out"
    assert batch.run_batch(opts_for(out, [a]))["done"] == 1
    assert load_result(out / "clip.npz").num_frames == 8
    summary = batch.run_batch(opts_for(out, [b]))
    assert summary["done"] == 1 and summary["skipped"] == 0
    assert load_result(out / "clip.npz").num_frames == 12
    # the same file replaced, by a clip cut short: captured again, with a warning
    person_video(b, 16, start_x=4)
    data = open(b, "rb").read()
    open(b, "wb").write(data[:len(data) // 2])
    summary = batch.run_batch(opts_for(out, [b]))
    assert summary["done"] == 1 and summary["skipped"] == 0
    rec = batch.read_manifest(out)[b]
    got = load_result(out / "clip.npz")
    assert got.complete and got.num_frames == rec["frames"] < 16
    assert any("header declares" in w for w in rec["warnings"])
    assert rec["fingerprint"] == batch.fingerprint(b)
    # unchanged: nothing runs
    assert batch.run_batch(opts_for(out, [b]))["skipped"] == 1
    # a result without a done-record for this video (the manifest lost) is redone
    os.unlink(out / batch.MANIFEST)
    summary = batch.run_batch(opts_for(out, [b]))
    assert summary["done"] == 1 and summary["skipped"] == 0


def test_killed_worker_is_retried_and_every_good_video_is_done(cluster, inputs, tmp_path):
    root, args = inputs
    long = person_video(tmp_path / "long.avi", 160, step=0)
    out = tmp_path / "out"
    killed = []

    def kill_mid_video(event):
        if event["event"] != "progress" or killed:
            return
        for w in event["running"]:
            if w["pid"] and 8 <= w["frames_done"] and w["video"] == long:
                with open(f"/proc/{w['pid']}/cmdline", "rb") as fh:
                    cmd = fh.read()
                # only ever a worker of this test's cluster running our actor
                assert b"CaptureActor" in cmd, cmd
                os.kill(w["pid"], signal.SIGKILL)
                killed.append(w)
                return

    summary = batch.run_batch(opts_for(out, args + [long], max_retries=2),
                              progress=kill_mid_video)
    assert killed, "no worker was seen mid-video"
    lines = manifest_lines(out)
    retry = [r for r in lines if r["status"] == "retry"]
    assert retry and retry[0]["video"] == long and retry[0]["attempt"] == 1
    assert retry[0]["error"]["reason"] == "worker_died"
    last = batch.read_manifest(out)
    assert last[long]["status"] == "done" and last[long]["attempt"] == 2
    assert last[long]["pid"] != killed[0]["pid"] and last[long]["frames"] == 160
    assert summary["done"] == 5 and summary["failed"] == 2
    done = sorted(os.path.basename(v) for v, r in last.items() if r["status"] == "done")
    assert done == ["a.avi", "b.avi", "c.avi", "d.avi", "long.avi"]
    assert load_result(out / "long.npz").complete


def test_worker_deaths_beyond_the_limit_fail_only_that_video(cluster, tmp_path):
    """A video whose worker dies on every attempt is recorded as failed after
    max_retries, and the batch still finishes the others."""
    bad = person_video(tmp_path / "crash.avi", 120, step=0)
    good = person_video(tmp_path / "good.avi", 12)
    killed = set()

    def kill_every_attempt(event):
        for w in event.get("running", ()):
            if w["video"] == bad and w["pid"] and w["frames_done"] and w["pid"] not in killed:
                with open(f"/proc/{w['pid']}/cmdline", "rb") as fh:
                    assert b"CaptureActor" in fh.read()
                os.kill(w["pid"], signal.SIGKILL)
                killed.add(w["pid"])

    summary = batch.run_batch(opts_for(tmp_path / "out", [bad, good], max_retries=1,
                                       workers=1), progress=kill_every_attempt)
    assert len(killed) == 2
    lines = manifest_lines(tmp_path / "out")
    crash = [r for r in lines if r["video"] == bad]
    assert [r["status"] for r in crash] == ["retry", "failed"]
    assert crash[-1]["error"]["reason"] == "worker_died" and crash[-1]["attempt"] == 2
    assert batch.read_manifest(tmp_path / "out")[good]["status"] == "done"
    assert summary["done"] == 1 and summary["failed"] == 1


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    """A random-weight HybrIK checkpoint with the synthetic SMPL buffers."""
    from tests.helpers import write_random_checkpoint
    return write_random_checkpoint(tmp_path_factory.mktemp("ck") / "hybrik_res34_random.pth")


def test_hybrik_actor_loads_the_network_once(cluster, tmp_path, checkpoint_path):
    videos = [person_video(tmp_path / f"h{i}.avi", 6, start_x=4 * i) for i in range(2)]
    summary = batch.run_batch(opts_for(tmp_path / "out", videos, backend="hybrik",
                                       checkpoint=checkpoint_path, workers=1))
    assert summary["done"] == 2
    last = batch.read_manifest(tmp_path / "out")
    recs = [last[v] for v in videos]
    assert recs[0]["pid"] == recs[1]["pid"]
    assert sorted(r["worker_videos"] for r in recs) == [1, 2]
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the actor (Ray gives it OMP_NUM_THREADS=1): same sums
    try:
        for v, rec in zip(videos, recs):
            single = cap.run_capture(cap.CaptureOptions(
                video=v, out=str(tmp_path / "single.npz"), backend="hybrik",
                checkpoint=checkpoint_path, batch_size=8, device="cpu"))
            got = load_result(rec["output"])
            assert got.backend == "hybrik" and got.valid.all()
            for key in ("rotmats", "root_translation", "joints29", "betas", "bbox"):
                assert np.array_equal(getattr(got, key), getattr(single, key)), key
    finally:
        torch.set_num_threads(threads)


def test_model_errors_stop_the_batch_before_any_video(cluster, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    video = person_video(tmp_path / "v.avi", 4)
    with pytest.raises(batch.BatchError) as err:
        batch.run_batch(opts_for(tmp_path / "out", [video], backend="hybrik",
                                 checkpoint=str(bad)))
    assert err.value.code == 5
    assert batch.read_manifest(tmp_path / "out") == {}


def test_cli_on_a_running_cluster_with_export(cluster, inputs, tmp_path):
    """The command line against the cluster's address (as on a real cluster):
    JSON lines on stdout, one line per video on stderr, .blend and .fbx per
    video through the headless import."""
    root, _ = inputs
    listing = tmp_path / "videos.txt"
    listing.write_text(f"{root / 'clips' / 'a.avi'}\n{root / 'clips' / 'noise.avi'}\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hybrik_blender.worker", "batch", str(listing),
           "--out-dir", str(out), "--ray-address", cluster, "--export", "blend,fbx"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == batch.EXIT_SOME_FAILED, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[0]["event"] == "batch" and events[-1]["event"] == "done"
    assert events[-1]["done"] == 1 and events[-1]["failed"] == 1
    assert "a.avi: done" in proc.stderr and "noise.avi: failed (nobody" in proc.stderr
    rec = batch.read_manifest(out)[str(root / "clips" / "a.avi")]
    assert rec["export"] == {"blend": str(out / "a.blend"), "fbx": str(out / "a.fbx")}
    assert os.path.getsize(out / "a.blend") > 10000
    assert open(out / "a.fbx", "rb").read(18) == b"Kaydara FBX Binary"
    # the export is resumed too: with the files there, nothing runs again
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    done = json.loads(proc.stdout.splitlines()[-1])
    assert done["skipped"] == 1 and done["failed_before"] == 1 and done["frames"] == 0


def test_bad_arguments(tmp_path):
    with pytest.raises(batch.BatchError, match="no videos"):
        batch.run_batch(opts_for(tmp_path, [str(tmp_path)]))
    with pytest.raises(batch.BatchError, match="unknown format"):
        batch.run_batch(opts_for(tmp_path, ["x.mp4"], export=("obj",)))
    with pytest.raises(batch.BatchError, match="needs --checkpoint"):
        batch.run_batch(opts_for(tmp_path, ["x.mp4"], backend="hybrik"))


def test_single_video_path_and_addon_never_import_ray(tmp_path):
    video = person_video(tmp_path / "v.avi", 6)
    code = (
        "import sys\n"
        "from hybrik_blender.worker import cli\n"
        f"assert cli.main(['capture', {video!r}, '--out', {str(tmp_path / 'v.npz')!r}]) == 0\n"
        "import hybrik_blender\n"
        "hybrik_blender.register()\n"
        "hybrik_blender.unregister()\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
        "print('no ray')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "no ray" in proc.stdout, proc.stderr[-2000:]


def test_several_people_keeps_everybody_and_exports_one_fbx_each(cluster, tmp_path):
    """--people all: every person of a video is in its result (the same as a
    single capture's), and --export fbx writes NAME_personID.fbx per person."""
    astro = cv2.resize(cv2.imread(PHOTO), (150, 150))
    player = cv2.resize(cv2.imread(os.path.join(DATA, "basketball1.png"))[60:480, 0:200],
                        (100, 210))
    clip = tmp_path / "two.avi"
    wr = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (400, 240))
    for i in range(12):
        f = np.full((240, 400, 3), 90, np.uint8)
        f[60:210, 10 + i:160 + i] = astro
        f[15:225, 260 - i:360 - i] = player
        wr.write(f)
    wr.release()
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hybrik_blender.worker", "batch", str(clip), "--out-dir",
           str(out), "--ray-address", cluster, "--people", "all", "--export", "fbx"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from hybrik_blender.core.formats.result import load_tracks
    takes = load_tracks(out / "two.npz")
    assert len(takes) == 2
    single = tmp_path / "single.npz"
    cap.run_capture(cap.CaptureOptions(video=str(clip), out=str(single), people=0,
                                       batch_size=16))
    for a, b in zip(takes, load_tracks(single)):
        assert a.track_id == b.track_id and np.array_equal(a.valid, b.valid)
        assert np.allclose(a.rotmats, b.rotmats, atol=1e-5)
    rec = batch.read_manifest(out)[str(clip)]
    assert rec["export"]["fbx"] == [str(out / f"two_person{t.track_id}.fbx") for t in takes]
    for t in takes:
        assert open(out / f"two_person{t.track_id}.fbx", "rb").read(18) == b"Kaydara FBX Binary"
