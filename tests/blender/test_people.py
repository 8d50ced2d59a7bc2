"""Several people from one result in Blender: a character each with its own
shape and exact skin, one camera, the panel's list with thumbnails, import
of the ticked people, per-person and combined FBX exports."""
import os
import subprocess
import sys

import bpy
import numpy as np
import pytest

from hybrik_blender.blender.people import (export_fbx_all, import_people, person_summaries,
                                           thumbnail_icon, thumbnail_preview)
from hybrik_blender.core.formats.result import load_tracks, save_result
from tests.blender.test_character import (TOLERANCE_M, evaluated_world_vertices,
                                          smplx_vertices)
from tests.conftest import ROOT, SYNTHETIC_MODEL
from tests.helpers import make_result, random_motion


def three_people(tmp_path, n=6):
    rng = np.random.default_rng(5)
    takes = []
    for tid in range(3):
        valid = np.ones(n, bool)
        if tid == 2:
            valid[:2] = False   # the third one comes in late
        thumb = np.full((128, 96, 3), 60 * tid + 20, np.uint8)
        takes.append(make_result(random_motion(n, seed=10 + tid, spread=0.5),
                                 betas=np.tile(rng.normal(0, 1.2, 10), (n, 1)),
                                 root=np.array([-1.0 + tid, 0.3, 4.0 + tid]) + 0.02 * rng.normal(
                                     0, 1, (n, 3)), valid=valid, seed=tid, track_id=tid,
                                 thumbnail=thumb))
    path = tmp_path / "people.npz"
    save_result(path, takes)
    return path


def test_three_people_become_three_exact_characters(empty_scene, body_model, model_arrays,
                                                    tmp_path):
    takes = load_tracks(three_people(tmp_path))
    imported = import_people(takes, body_model)
    assert [t.rig.name for t in imported] == ["Person 1", "Person 2", "Person 3"]
    assert len([o for o in bpy.data.objects if o.type == 'CAMERA']) == 1
    assert all(t.camera == bpy.context.scene.camera for t in imported)
    scene = bpy.context.scene
    assert (scene.frame_start, scene.frame_end) == (1, 6)
    for take, res in zip(imported, takes):
        assert take.rig["hybrik_person"] == res.track_id
        blocks = take.mesh.data.shape_keys.key_blocks
        assert np.allclose([blocks[f"Shape{i:03d}"].value for i in range(10)],
                           res.betas[res.valid][0], atol=1e-6)   # its own shape
        ref = smplx_vertices(model_arrays, body_model, res)
        for k in np.nonzero(res.valid)[0]:
            got = evaluated_world_vertices(take.mesh, 1 + int(res.frame_index[k]))
            err = np.abs(got - ref[k]).max()
            assert err < TOLERANCE_M, f"person {res.track_id}, frame {k}: {err * 1e3:.4f} mm"
    # the late one has no key before it appears
    late = imported[2].rig.animation_data.action
    assert int(round(late.frame_range[0])) == 3


def test_choosing_people_and_summaries(empty_scene, body_model, tmp_path):
    takes = load_tracks(three_people(tmp_path))
    info = person_summaries(takes)
    assert [p["name"] for p in info] == ["Person 1", "Person 2", "Person 3"]
    assert [p["frames"] for p in info] == [6, 6, 4]
    assert info[2]["first"] == 0 and abs(info[0]["confidence"] - 1) < 1e-6
    imported = import_people(takes, body_model, ids=[2, 0])
    assert [t.rig.name for t in imported] == ["Person 1", "Person 3"]
    thumbnail_icon("test#0", takes[0].thumbnail)
    prev = thumbnail_preview("test#0")
    assert tuple(prev.image_size) == (96, 128)
    px = np.empty(96 * 128 * 4, np.float32)
    prev.image_pixels_float.foreach_get(px)
    assert np.allclose(px.reshape(128, 96, 4)[::-1, :, :3] * 255, takes[0].thumbnail, atol=0.6)


def test_panel_lists_people_and_imports_the_ticked_ones(empty_scene, tmp_path):
    import hybrik_blender
    from hybrik_blender.blender import addon
    hybrik_blender.register()
    try:
        path = str(three_people(tmp_path))
        bpy.context.scene.hybrik.cleanup = False
        assert bpy.ops.hybrik.import_result(filepath=path) == {'FINISHED'}
        s = bpy.context.scene.hybrik
        assert [p.label for p in s.persons] == ["Person 1", "Person 2", "Person 3"]
        assert [p.frames for p in s.persons] == [6, 6, 4]
        for p in s.persons:   # each person's thumbnail became a preview
            assert thumbnail_preview(f"{path}#{p.track_id}") is not None
        assert not any(o.type == 'ARMATURE' for o in bpy.data.objects)   # nothing yet
        s.persons[1].selected = False
        assert bpy.ops.hybrik.import_people() == {'FINISHED'}
        rigs = sorted(o.name for o in bpy.data.objects if o.type == 'ARMATURE')
        assert rigs == ["Person 1", "Person 3"]
        # a one-person file still imports at once, without a list
        one = tmp_path / "one.npz"
        save_result(one, make_result(random_motion(4)))
        assert bpy.ops.hybrik.import_result(filepath=str(one)) == {'FINISHED'}
        assert len(s.persons) == 0
    finally:
        hybrik_blender.unregister()
    assert addon.HYBRIK_OT_import_people.is_registered is False


def test_fbx_per_person_and_combined(empty_scene, body_model, tmp_path):
    takes = load_tracks(three_people(tmp_path))
    imported = import_people(takes, body_model, pose_correctives=False)
    path = export_fbx_all(str(tmp_path / "all.fbx"), [t.rig for t in imported])
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.fbx(filepath=path)
    arms = [o for o in bpy.data.objects if o.type == 'ARMATURE']
    assert len(arms) == 3


def test_headless_import_writes_one_fbx_per_person(tmp_path):
    path = three_people(tmp_path)
    out = tmp_path / "take.blend"
    p = subprocess.run([sys.executable, "-m", "hybrik_blender", "import", str(path), "-o",
                        str(out), "--smpl-model", SYNTHETIC_MODEL, "--no-cleanup",
                        "--no-correctives", "--fbx", str(tmp_path / "take.fbx"),
                        "--person", "0,2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "take_person0.fbx").stat().st_size > 50_000
    assert (tmp_path / "take_person2.fbx").exists()
    assert not (tmp_path / "take_person1.fbx").exists()
    bpy.ops.wm.open_mainfile(filepath=str(out))
    assert sorted(o.name for o in bpy.data.objects if o.type == 'ARMATURE') == \
        ["Person 1", "Person 3"]
    p = subprocess.run([sys.executable, "-m", "hybrik_blender", "import", str(path), "-o",
                        str(out), "--no-cleanup", "--person", "7"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "no person 7" in p.stderr


def two_people_clip(path, n=20):
    """The astronaut and the ball player of OpenCV's basketball1.png side by
    side (real photos pasted on a grey background), drifting a little."""
    import cv2
    from tests.conftest import DATA
    astro = cv2.resize(cv2.imread(os.path.join(DATA, "astronaut.png")), (150, 150))
    player = cv2.imread(os.path.join(DATA, "basketball1.png"))[60:480, 0:200]
    car = cv2.resize(player, (100, 210))
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (400, 240))
    for i in range(n):
        f = np.full((240, 400, 3), 90, np.uint8)
        f[60:210, 10 + i:160 + i] = astro
        f[15:225, 260 - i:360 - i] = car
        wr.write(f)
    wr.release()
    return str(path)


def test_capture_with_several_people_lists_them_in_the_panel(empty_scene, tmp_path):
    import hybrik_blender
    from hybrik_blender.blender import addon
    from tests.blender.test_capture_ui import run_like_the_timer, start_capture
    hybrik_blender.register()
    try:
        clip = two_people_clip(tmp_path / "two.avi")
        bpy.context.scene.hybrik.cleanup = False
        out = tmp_path / "two.npz"
        job = start_capture(addon, clip, out, people=2)
        assert "--people" in job.args and "2" in job.args
        run_like_the_timer(addon)
        wm = bpy.context.window_manager.hybrik_job
        assert not wm.is_error and "Found 2 people" in wm.message, wm.message
        s = bpy.context.scene.hybrik
        assert len(s.persons) == 2 and all(p.frames >= 15 for p in s.persons)
        assert bpy.ops.hybrik.import_people() == {'FINISHED'}
        rigs = [o for o in bpy.data.objects if o.type == 'ARMATURE']
        assert sorted(r.name for r in rigs) == ["Person 1", "Person 2"]
        cams = [o for o in bpy.data.objects if o.type == 'CAMERA']
        assert len(cams) == 1 and cams[0].data.background_images[0].clip is not None
    finally:
        hybrik_blender.unregister()
