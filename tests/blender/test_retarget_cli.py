"""``python -m hybrik_blender retarget``: a take's .blend onto a rig file, in
a fresh process like a user's shell; bad maps get one line naming the bones
and exit code 2."""
import json
import subprocess
import sys

import bpy
import pytest

from hybrik_blender.blender.animation import import_result
from tests.blender import rigs
from tests.conftest import ROOT
from tests.helpers import make_result, random_motion


@pytest.fixture
def files(empty_scene, body_model, tmp_path):
    take = import_result(make_result(random_motion(8, seed=3)), body_model,
                         pose_correctives=False, camera=False)
    take_path = tmp_path / "take.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(take_path))
    text, _, _ = rigs.bvh_text("MOCAP")
    rig_path = tmp_path / "mocap.bvh"
    rig_path.write_text(text)
    return take_path, rig_path, take.rig.name


def _run(*args):
    return subprocess.run([sys.executable, "-m", "hybrik_blender", "retarget", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_retargets_onto_a_bvh_rig_and_exports(files, tmp_path):
    take, rig, source = files
    out, fbx = tmp_path / "out" / "retargeted.blend", tmp_path / "rig.fbx"
    run = _run(take, "--target", rig, "-o", out, "--fbx", fbx, "--fbx-preset", "unreal",
               "--root", "in_place")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "BVH_MOCAP" in run.stdout and f"wrote {fbx}" in run.stdout
    assert out.stat().st_size > 1000 and fbx.stat().st_size > 1000
    bpy.ops.wm.open_mainfile(filepath=str(out))
    rig = bpy.data.objects["mocap"]
    assert rig.animation_data.action["hybrik_retarget_source"] == source


def test_cli_bad_map_and_bad_input(files, tmp_path):
    take, rig, _ = files
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"bones": {
        "pelvis": "Chest", "left_hip": "LeftHip", "right_hip": "RightHip",
        "left_knee": "LeftKnee", "right_knee": "RightKnee", "left_shoulder": "LeftShoulder",
        "right_shoulder": "RightShoulder", "left_elbow": "LeftElbow",
        "right_elbow": "RightElbow"}}))
    run = _run(take, "--target", rig, "-o", tmp_path / "x.blend", "--bone-map", bad)
    assert run.returncode == 2
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "'Chest'" in line and "'LeftHip'" in line
    assert not (tmp_path / "x.blend").exists()
    run = _run(take, "--target", tmp_path / "none.fbx", "-o", tmp_path / "x.blend")
    assert run.returncode == 2 and "does not exist" in run.stderr
    run = _run(take, "--target", take, "-o", tmp_path / "x.blend")
    assert run.returncode == 2 and "own file" in run.stderr
