"""The add-on as an animator uses it: installed from the extension zip, a
capture in a background worker process polled like the UI timer does, the
automatic import, cancel, crashes, and the headless capture command."""
import os
import subprocess
import sys
import time
import zipfile

import bpy
import cv2
import numpy as np
import pytest

import build_addon
from hybrik_blender.core.blender_space import CAMERA_TO_BLENDER, SMPL_TO_BLENDER
from hybrik_blender.core.formats.result import load_result
from hybrik_blender.core.body.skeleton import JOINT_NAMES, PARENTS
from tests.conftest import DATA, ROOT, SYNTHETIC_MODEL

EXT_MODULE = "bl_ext.user_default.hybrik_blender"
# The worker runs in its own environment, as for users: on the LTS Blender
# venvs (no torch or mediapipe there) dev.sh points this at the main venv.
WORKER_PYTHON = os.environ.get("HYBRIK_TEST_WORKER_PYTHON", sys.executable)


def photo_clip(path, n, size=(256, 192)):
    img = cv2.imread(os.path.join(DATA, "astronaut.png"))
    w, h = size
    person = cv2.resize(img, (h, h))
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
    for i in range(n):
        f = np.full((h, w, 3), 30, np.uint8)
        x = 5 + (i % max(1, min(40, w - h - 5)))
        f[:, x:x + h] = person
        wr.write(f)
    wr.release()
    return str(path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return photo_clip(tmp_path_factory.mktemp("v") / "dance.mp4", 24)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    return photo_clip(tmp_path_factory.mktemp("v") / "long.mp4", 400, (128, 96))


@pytest.fixture
def addon(empty_scene):
    import hybrik_blender
    from hybrik_blender.blender import addon as module
    hybrik_blender.register()
    yield module
    hybrik_blender.unregister()


def run_like_the_timer(module, timeout=180):
    """bpy's module build runs no timers: call the add-on's timer callback
    the way Blender would, until it unregisters itself (returns None)."""
    deadline = time.monotonic() + timeout
    while module.poll_job() is not None:
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.05)


def start_capture(module, video, out, **kw):
    from hybrik_blender.blender import jobs
    job = jobs.start_capture(WORKER_PYTHON, video, str(out), **kw)
    module._start('CAPTURE', job, str(out), video)
    return job


# --- packaging ------------------------------------------------------------------

def test_extension_zip_installs_and_registers_twice(empty_scene, tmp_path):
    path = build_addon.build(str(tmp_path))
    names = zipfile.ZipFile(path).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    assert "worker/requirements.txt" in names and "core/body/model.py" in names
    assert not any(n.startswith(("tests/", ".venv")) or "__pycache__" in n or n.endswith(".pyc")
                   for n in names)
    assert bpy.ops.extensions.package_install_files(
        filepath=path, repo="user_default", enable_on_install=True) == {'FINISHED'}
    import addon_utils
    try:
        assert EXT_MODULE in bpy.context.preferences.addons
        assert hasattr(bpy.types.Scene, "hybrik") and hasattr(bpy.types.WindowManager, "hybrik_job")
        for _ in range(2):
            addon_utils.disable(EXT_MODULE, default_set=True)
            assert not hasattr(bpy.types.Scene, "hybrik")
            assert not hasattr(bpy.types, "HYBRIK_OT_capture")
            addon_utils.enable(EXT_MODULE, default_set=True)
            assert hasattr(bpy.types.Scene, "hybrik")
        assert bpy.ops.hybrik.capture.poll()
    finally:
        addon_utils.disable(EXT_MODULE, default_set=True)


# --- capture in the background -------------------------------------------------------

def test_capture_runs_the_worker_and_imports_the_result(addon, clip, tmp_path):
    """The real worker subprocess on a generated video, imported in bpy: the
    objects, fps, frame range, camera and background, and the keyed
    rotations equal the result file's."""
    scene = bpy.context.scene
    scene.hybrik.cleanup = False
    out = tmp_path / "dance.npz"
    job = start_capture(addon, clip, out)
    assert bpy.context.window_manager.hybrik_job.running
    run_like_the_timer(addon)
    wm = bpy.context.window_manager.hybrik_job
    assert not wm.running and not wm.is_error, wm.message
    assert "Imported" in wm.message and job.state.returncode == 0
    result = load_result(out)
    assert result.complete and result.num_frames == 24
    rig = next(o for o in bpy.data.objects if o.type == 'ARMATURE')
    cam = scene.camera
    assert cam is not None and cam.type == 'CAMERA'
    assert abs(scene.render.fps / scene.render.fps_base - 25.0) < 1e-4
    valid_frames = 1 + result.frame_index[result.valid]
    assert (scene.frame_start, scene.frame_end) == (valid_frames[0], valid_frames[-1])
    assert abs(cam.data.lens - result.focal_length[0] * 36 / 256) < 1e-4
    bg = cam.data.background_images[0]
    assert bg.source == 'MOVIE_CLIP' and os.path.samefile(bpy.path.abspath(bg.clip.filepath), clip)
    # local rotations read back from the evaluated pose equal the file's (the
    # root seen from that frame's camera, which may have turned)
    from hybrik_blender.core.motion.world import row_rotations
    turned = row_rotations(result)
    rest = np.array([np.array(rig.data.bones[n].matrix_local) for n in JOINT_NAMES])
    for f in valid_frames[::5]:
        scene.frame_set(int(f))
        k = int(np.nonzero(result.frame_index == f - 1)[0][0])
        pose = np.array([np.array(rig.pose.bones[n].matrix) for n in JOINT_NAMES])
        deform = pose[:, :3, :3] @ np.swapaxes(rest[:, :3, :3], 1, 2)
        glob = turned[k].T @ CAMERA_TO_BLENDER.T @ deform @ SMPL_TO_BLENDER
        local = glob.copy()
        local[1:] = np.swapaxes(glob[PARENTS[1:]], 1, 2) @ glob[1:]
        assert np.abs(local - result.rotmats[k]).max() < 1e-4


def test_cancel_imports_the_partial_result(addon, long_clip, tmp_path):
    out = tmp_path / "long.npz"
    job = start_capture(addon, long_clip, out, batch_size=8)
    deadline = time.monotonic() + 60
    while job.poll().done < 8:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    bpy.ops.hybrik.cancel()
    run_like_the_timer(addon)
    wm = bpy.context.window_manager.hybrik_job
    assert "partial" in wm.message and not wm.is_error
    partial = load_result(out)
    assert not partial.complete and 8 <= partial.num_frames < 400
    assert bpy.context.scene.hybrik.last_partial
    assert any(o.type == 'ARMATURE' for o in bpy.data.objects)


def test_worker_failures_show_a_clear_message_and_blender_stays_usable(addon, clip, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(open(clip, "rb").read()[:600])
    start_capture(addon, str(broken), tmp_path / "b.npz")
    run_like_the_timer(addon)
    wm = bpy.context.window_manager.hybrik_job
    assert wm.is_error and "broken.mp4" in wm.message and "Traceback" not in wm.message
    # a crash: the worker process dies without a word
    job = start_capture(addon, clip, tmp_path / "c.npz")
    job.proc.kill()
    run_like_the_timer(addon)
    assert wm.is_error and "stopped unexpectedly" in wm.message
    # Blender is still usable: another capture runs and imports
    bpy.context.scene.hybrik.cleanup = False
    start_capture(addon, clip, tmp_path / "d.npz", end=6)
    run_like_the_timer(addon)
    assert not wm.is_error and "Imported" in wm.message


def test_disabling_the_addon_stops_the_worker(empty_scene, long_clip, tmp_path):
    import hybrik_blender
    from hybrik_blender.blender import addon as module
    hybrik_blender.register()
    job = start_capture(module, long_clip, tmp_path / "o.npz")
    time.sleep(1.0)
    hybrik_blender.unregister()
    assert job.proc.poll() is not None, "the worker outlived the add-on"


def test_operator_refuses_a_missing_video(addon):
    bpy.context.scene.hybrik.video_path = "/nonexistent/clip.mp4"
    with pytest.raises(RuntimeError, match="Choose a video"):
        bpy.ops.hybrik.capture()


def test_hands_option_reaches_the_worker(addon, clip, monkeypatch):
    """The panel's Hands checkbox: the operator starts the worker with --hands."""
    from hybrik_blender.blender import jobs
    started = []

    def fake_start(python, video, out, **kw):
        started.append(jobs.capture_args(python, video, out, **kw))
        return jobs.Job([sys.executable, "-c", "pass"])
    monkeypatch.setattr(addon, "worker_python", lambda prefs: sys.executable)
    monkeypatch.setattr(addon.jobs, "start_capture", fake_start)
    settings = bpy.context.scene.hybrik
    settings.video_path = clip
    for hands in (True, False):
        settings.hands = hands
        assert bpy.ops.hybrik.capture() == {'FINISHED'}
        run_like_the_timer(addon)
        assert ("--hands" in started[-1]) is hands


def test_precision_preference_reaches_the_worker(addon, clip, monkeypatch):
    """The add-on preference Precision: the operator passes it to the worker
    (auto, the default, is the worker's own default and needs no flag)."""
    from types import SimpleNamespace
    from hybrik_blender.blender import jobs
    started = []

    def fake_start(python, video, out, **kw):
        started.append(jobs.capture_args(python, video, out, **kw))
        return jobs.Job([sys.executable, "-c", "pass"])
    prop = addon.HYBRIK_AP_preferences.bl_rna.properties["precision"]
    assert {i.identifier for i in prop.enum_items} == {"auto", "bf16", "fp32"}
    assert prop.default == "auto"
    monkeypatch.setattr(addon, "worker_python", lambda prefs: sys.executable)
    monkeypatch.setattr(addon.jobs, "start_capture", fake_start)
    bpy.context.scene.hybrik.video_path = clip
    for precision in ("bf16", "fp32", "auto"):
        prefs = SimpleNamespace(checkpoint_path="", body_model_path="", device="cpu",
                                precision=precision)
        monkeypatch.setattr(addon, "preferences", lambda context=None, p=prefs: p)
        assert bpy.ops.hybrik.capture() == {'FINISHED'}
        run_like_the_timer(addon)
        args = started[-1]
        if precision == "auto":
            assert "--precision" not in args
        else:
            assert args[args.index("--precision") + 1] == precision


def test_worker_environment_setup_and_check(tmp_path):
    from hybrik_blender.blender import jobs
    req = tmp_path / "requirements.txt"
    req.write_text("# nothing to install\n")
    job = jobs.Job(jobs.setup_args(sys.executable, str(tmp_path / "venv"), str(req)))
    state = job.wait(300)
    assert state.returncode == 0 and os.path.exists(state.final["python"])
    bad = tmp_path / "bad.txt"
    bad.write_text(str(tmp_path / "no-such-package-dir") + "\n")
    state = jobs.Job(jobs.setup_args(sys.executable, str(tmp_path / "venv2"), str(bad))).wait(300)
    assert state.returncode != 0 and "installing the worker packages failed" in state.error
    ok, text = jobs.run_check(WORKER_PYTHON)
    assert ok and "mediapipe 0.10.21" in text
    ok, text = jobs.run_check(jobs.venv_python(str(tmp_path / "venv")))
    assert not ok and "MISSING numpy" in text and "MISSING torch" in text


# --- the headless main job --------------------------------------------------------------

def test_headless_capture_builds_blend_and_fbx(tmp_path):
    out = tmp_path / "take.blend"
    p = subprocess.run([sys.executable, "-m", "hybrik_blender", "capture", "-o", str(out),
                        "--end", "20", "--smpl-model", SYNTHETIC_MODEL,
                        "--fbx", str(tmp_path / "take.fbx"), "--worker-python", WORKER_PYTHON],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert out.exists() and (tmp_path / "take.fbx").stat().st_size > 100_000
    assert (tmp_path / "take.npz").exists()
    bpy.ops.wm.open_mainfile(filepath=str(out))
    kinds = sorted(o.type for o in bpy.data.objects)
    assert kinds == ["ARMATURE", "CAMERA", "MESH"]
    assert bpy.context.scene.camera.data.background_images[0].clip is not None
    assert bpy.context.scene.frame_end == 20


def test_headless_capture_forwards_the_precision(clip, monkeypatch, tmp_path):
    """python -m hybrik_blender capture --precision bf16 hands it to the worker."""
    import hybrik_blender.__main__ as cli
    from hybrik_blender.blender import jobs
    seen = {}

    class Stop(Exception):
        pass

    def fake_start(python, video, out, **kw):
        seen.update(kw)
        raise Stop
    monkeypatch.setattr(jobs, "start_capture", fake_start)
    # the command line turns any unexpected exception into one line and exit 1
    assert cli.main(["capture", clip, "-o", str(tmp_path / "t.blend"), "--backend", "hybrik",
                     "--precision", "bf16", "--device", "cpu"]) == 1
    assert seen["precision"] == "bf16" and seen["device"] == "cpu"
