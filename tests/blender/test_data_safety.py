"""The Blender side of issue 12's command-line half, in the real bpy: a
result's ``source`` never becomes a path outside its folder, exports and
.blend files are written atomically, the add-on's operators refuse paths the
scene reads, only what a run wrote is imported, and the headless commands
end with their documented codes."""
import os
import sys

import bpy
import cv2
import numpy as np
import pytest

import hybrik_blender
from hybrik_blender.__main__ import main as cli_main
from hybrik_blender.core import exitcodes as codes
from hybrik_blender.core.formats.result import save_result
from tests.conftest import SYNTHETIC_MODEL
from tests.helpers import make_result, random_motion


def small_video(path, n=4):
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    for i in range(n):
        wr.write(np.full((48, 64, 3), 40 * i, np.uint8))
    wr.release()
    return str(path)


@pytest.fixture
def addon(empty_scene):
    hybrik_blender.register()
    yield
    hybrik_blender.unregister()


def clip_paths():
    return sorted(bpy.path.abspath(c.filepath) for c in bpy.data.movieclips)


def test_a_result_source_never_leads_out_of_its_folder(tmp_path, capsys):
    outside = small_video(tmp_path / "secret.avi")
    (tmp_path / "takes").mkdir()
    for source in ("../secret.avi", outside, "../../../../etc/passwd", "/etc/passwd"):
        res = tmp_path / "takes" / "r.npz"
        save_result(res, make_result(random_motion(4), source=source))
        assert cli_main(["import", str(res), "-o", str(tmp_path / "takes" / "t.blend"),
                         "--no-cleanup"]) == 0
        assert clip_paths() == [], source
    # the same name beside the result is found: the last part of the name only
    beside = small_video(tmp_path / "takes" / "secret.avi")
    save_result(res, make_result(random_motion(4), source="../secret.avi"))
    assert cli_main(["import", str(res), "-o", str(tmp_path / "takes" / "t.blend"),
                     "--no-cleanup"]) == 0
    assert clip_paths() == [os.path.abspath(beside)]
    capsys.readouterr()


def test_the_addon_import_follows_no_path_from_the_file(addon, tmp_path):
    small_video(tmp_path / "secret.avi")
    (tmp_path / "takes").mkdir()
    res = tmp_path / "takes" / "r.npz"
    save_result(res, make_result(random_motion(4), source=str(tmp_path / "secret.avi")))
    bpy.context.scene.hybrik.cleanup = False
    assert bpy.ops.hybrik.import_result(filepath=str(res)) == {'FINISHED'}
    assert clip_paths() == []


def test_a_failed_export_leaves_the_previous_file_and_no_temporary(empty_scene, body_model,
                                                                   tmp_path, monkeypatch):
    from hybrik_blender.blender import export
    from hybrik_blender.blender.animation import import_result
    from hybrik_blender.core import glb
    take = import_result(make_result(random_motion(4)), body_model, pose_correctives=False)
    path = tmp_path / "take.glb"
    export.export_glb(str(path), take.rig)
    good = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("the disk went away")
    monkeypatch.setattr(glb, "fix_animation_times", broken)
    with pytest.raises(OSError, match="went away"):
        export.export_glb(str(path), take.rig)
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["take.glb"]
    fbx = tmp_path / "take.fbx"
    assert export.export_fbx(str(fbx), take.rig) == str(fbx)
    assert sorted(os.listdir(tmp_path)) == ["take.fbx", "take.glb"]


def test_export_operators_refuse_a_file_the_scene_reads(addon, body_model, tmp_path):
    from hybrik_blender.blender.animation import import_result
    take = import_result(make_result(random_motion(4)), body_model, pose_correctives=False)
    scene = tmp_path / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(scene))
    before = scene.read_bytes()
    rig = bpy.data.objects[take.rig.name]
    bpy.context.view_layer.objects.active = rig
    for op in (bpy.ops.hybrik.export_fbx, bpy.ops.hybrik.export_glb, bpy.ops.hybrik.export_bvh):
        with pytest.raises(RuntimeError, match="refusing to write over an input"):
            op(filepath=str(scene))
    assert scene.read_bytes() == before
    os.mkfifo(tmp_path / "pipe.fbx")
    with pytest.raises(RuntimeError, match="not a regular file"):
        bpy.ops.hybrik.export_fbx(filepath=str(tmp_path / "pipe.fbx"))
    assert bpy.ops.hybrik.export_fbx(filepath=str(tmp_path / "ok.fbx")) == {'FINISHED'}


def test_the_capture_operator_refuses_a_result_path_that_is_the_video(addon, tmp_path):
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    (tmp_path / "hybrik").mkdir()
    video = tmp_path / "hybrik" / "clip.npz"   # where the operator would put clip's result
    small_video(tmp_path / "v.avi")
    os.replace(tmp_path / "v.avi", video)
    before = video.read_bytes()
    bpy.context.scene.hybrik.video_path = str(video)
    with pytest.raises(RuntimeError, match="refusing to write over an input"):
        bpy.ops.hybrik.capture()
    assert video.read_bytes() == before


def test_a_cancel_that_wrote_nothing_imports_nothing(addon, tmp_path):
    """Exit 130 without a done event (cancelled before anybody was found, or
    a longer result kept): the old file of that name is not imported."""
    from hybrik_blender.blender import addon as module
    from hybrik_blender.blender import jobs
    old = tmp_path / "clip.npz"
    save_result(old, make_result(random_motion(4)))
    job = jobs.Job([sys.executable, "-c", "import sys; print('error: cancelled before "
                    "anybody was found', file=sys.stderr); sys.exit(130)"])
    module._start('CAPTURE', job, str(old), "")
    while module.poll_job() is not None:
        pass
    wm = bpy.context.window_manager.hybrik_job
    assert wm.is_error and "cancelled before anybody" in wm.message
    assert not [o for o in bpy.data.objects if o.type == 'ARMATURE']


def test_headless_codes_for_damaged_inputs_and_resume(tmp_path, capsys, monkeypatch):
    res = tmp_path / "r.npz"
    res.write_bytes(b"PK\x03\x04 damaged")
    assert cli_main(["import", str(res), "-o", str(tmp_path / "t.blend")]) == codes.EXIT_RESULT
    assert "truncated or damaged" in capsys.readouterr().err
    save_result(res, make_result(random_motion(4)))
    bad_model = tmp_path / "m.npz"
    bad_model.write_bytes(b"nothing")
    assert cli_main(["import", str(res), "-o", str(tmp_path / "t.blend"), "--smpl-model",
                     str(bad_model)]) == codes.EXIT_MODEL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:")
    # retarget: a take or a rig that cannot be read
    garbage = tmp_path / "garbage.blend"
    garbage.write_bytes(b"BLENDER-v500 not really")
    rig = tmp_path / "rig.bvh"
    rig.write_bytes(b"HIERARCHY\nROOT \xff\x00 {\n")
    assert cli_main(["retarget", str(garbage), "--target", str(rig), "-o",
                     str(tmp_path / "o.blend")]) == codes.EXIT_RESULT
    take = tmp_path / "t.blend"
    assert cli_main(["import", str(res), "-o", str(take), "--smpl-model", SYNTHETIC_MODEL,
                     "--no-cleanup"]) == 0
    assert cli_main(["retarget", str(take), "--target", str(rig), "-o",
                     str(tmp_path / "o.blend")]) == codes.EXIT_RESULT
    assert "cannot read the rig rig.bvh" in capsys.readouterr().err
    assert not (tmp_path / "o.blend").exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    # headless capture forwards --resume to the worker
    from hybrik_blender.blender import jobs
    seen = []

    def fake_start(python, video, out, **kw):
        seen.append(kw)
        return jobs.Job([sys.executable, "-c", "import sys; sys.exit(11)"])
    monkeypatch.setattr(jobs, "start_capture", fake_start)
    video = small_video(tmp_path / "v.avi")
    code = cli_main(["capture", video, "-o", str(tmp_path / "c.blend"), "--resume"])
    assert code == codes.EXIT_NO_PROGRESS and seen[0]["resume"] is True
    assert not (tmp_path / "c.blend").exists()
