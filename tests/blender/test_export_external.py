"""Readers nobody here wrote accept the exports: every GLB passes the Khronos
glTF validator (npm ``gltf-validator``) with zero errors, every FBX opens in
Assimp (``assimp`` from Debian's assimp-utils) with its skeleton, mesh, and
animation duration and channel count intact.

Tools: ``assimp`` on PATH; the validator's node_modules folder in
HYBRIK_GLTF_VALIDATOR (a folder holding ``node_modules/gltf-validator``) or
in ``npm root -g``. Without them these tests skip, unless
HYBRIK_EXTERNAL_READERS=1 (CI), where a missing tool is a failure.
"""
import json
import os
import re
import shutil
import subprocess

import bpy
import numpy as np
import pytest

from hybrik_blender.blender.animation import import_result
from hybrik_blender.blender.export import export_fbx, export_glb
from hybrik_blender.blender.retarget import retarget
from tests.blender.test_retarget import MIXAMO, MIXAMO_WORLD, build_rig, humanoid_bones
from tests.helpers import make_result, random_motion

FPS = 25.0
NUM_FRAMES = 10
REQUIRED = os.environ.get("HYBRIK_EXTERNAL_READERS") == "1"

_VALIDATE_JS = """
const validator = require('gltf-validator');
const fs = require('fs');
const bytes = new Uint8Array(fs.readFileSync(process.argv[1]));
validator.validateBytes(bytes).then((report) => {
  const errors = report.issues.messages.filter((m) => m.severity === 0);
  process.stdout.write(JSON.stringify({numErrors: report.issues.numErrors,
    errors: errors.slice(0, 10), info: report.info}));
}).catch((e) => { process.stderr.write(String(e)); process.exit(2); });
"""


def _missing(what):
    if REQUIRED:
        pytest.fail(f"{what} is required (HYBRIK_EXTERNAL_READERS=1) but not installed")
    pytest.skip(f"{what} not installed")


def validator_dir():
    candidates = [os.environ.get("HYBRIK_GLTF_VALIDATOR", "")]
    if shutil.which("npm"):
        root = subprocess.run(["npm", "root", "-g"], capture_output=True, text=True).stdout
        candidates.append(os.path.dirname(root.strip()))
    for c in candidates:
        if c and os.path.isfile(os.path.join(c, "node_modules", "gltf-validator", "index.js")):
            return c
    if not shutil.which("node"):
        _missing("node")
    _missing("the npm package gltf-validator")


def validate_glb(path):
    folder = validator_dir()
    run = subprocess.run(["node", "-e", _VALIDATE_JS, str(path)], cwd=folder,
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, NODE_PATH=os.path.join(folder, "node_modules")))
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def assimp_read(path):
    """Counts from ``assimp info`` and the animation from ``assimp dump``."""
    exe = shutil.which("assimp")
    if exe is None:
        _missing("assimp (assimp-utils)")
    info = subprocess.run([exe, "info", str(path)], capture_output=True, text=True, timeout=300)
    assert info.returncode == 0, info.stdout[-2000:] + info.stderr[-2000:]
    counts = {k: int(v) for k, v in re.findall(
        r"^(Meshes|Animations|Vertices|Faces|Bones|Animation Channels):\s+(\d+)",
        info.stdout, re.M)}
    xml = str(path) + ".assxml"
    dump = subprocess.run([exe, "dump", str(path), xml], capture_output=True, text=True,
                          timeout=300)
    assert dump.returncode == 0, dump.stdout[-2000:] + dump.stderr[-2000:]
    text = open(xml, encoding="utf-8", errors="replace").read()
    anims = re.findall(r'<Animation name="[^"]*" duration="([^"]+)" tick_cnt="([^"]+)">', text)
    channels = re.findall(r'<NodeAnim node="([^"]+)">', text)
    bones = set(re.findall(r'<Bone name="([^"]+)">', text))
    nodes = {name: np.array(m.split(), float).reshape(4, 4) for name, m in re.findall(
        r'<Node name="([^"]+)">\s*<Matrix4>([^<]*)</Matrix4>', text)}
    return counts, [(float(d), float(t)) for d, t in anims], channels, bones, nodes


@pytest.fixture
def take(empty_scene, body_model):
    res = make_result(random_motion(NUM_FRAMES, seed=4), fps=FPS, seed=2)
    return import_result(res, body_model, pose_correctives=False)


@pytest.mark.parametrize("preset", ["GENERIC", "UNITY", "UNREAL"])
def test_fbx_opens_in_assimp(take, tmp_path, preset):
    path = export_fbx(tmp_path / f"{preset}.fbx", take.rig, preset)
    counts, anims, channels, bones, nodes = assimp_read(path)
    names = {b.name for b in take.rig.data.bones}
    assert counts["Meshes"] == 1 and counts["Faces"] == len(take.mesh.data.polygons)
    assert counts["Vertices"] == len(take.mesh.data.vertices)
    assert bones == names and counts["Bones"] == len(names)
    assert len(anims) == 1 and counts["Animations"] == 1
    duration, ticks = anims[0]
    assert ticks == pytest.approx(FPS) and duration == pytest.approx(NUM_FRAMES - 1)
    # one channel per bone, plus the armature object
    assert names <= set(channels) and len(channels) == len(names) + 1
    assert counts["Animation Channels"] == len(channels)
    # Unity and Unreal get an armature node without scale: no 100x root motion
    node_scale = np.linalg.norm(nodes[take.rig.name][:3, :3], axis=0)
    assert np.allclose(node_scale, 100.0 if preset == 'GENERIC' else 1.0, rtol=1e-4)
    if preset == 'UNREAL':  # centimetres in the bone data instead
        knee = nodes["left_knee"][:3, 3]
        assert np.linalg.norm(knee) == pytest.approx(
            100 * take.rig.data.bones["left_hip"].length, rel=1e-3)


def test_glb_passes_khronos_validator(take, tmp_path):
    report = validate_glb(export_glb(tmp_path / "take.glb", take.rig))
    assert report["numErrors"] == 0, report["errors"]
    assert report["info"]["animationCount"] == 1 and report["info"]["hasSkins"]


def test_retargeted_rig_exports_pass_both_readers(take, tmp_path):
    tgt = build_rig("Armature", humanoid_bones(take.rig, MIXAMO, apose_deg=30.0),
                    roll_deg=90.0, world=MIXAMO_WORLD, prefix="mixamorig:")
    retarget(take.rig, tgt)
    report = validate_glb(export_glb(tmp_path / "mixamo.glb", tgt))
    assert report["numErrors"] == 0, report["errors"]
    counts, anims, channels, bones, _ = assimp_read(export_fbx(tmp_path / "m.fbx", tgt, 'UNREAL'))
    assert counts.get("Animations") == 1 and anims[0][0] == pytest.approx(NUM_FRAMES - 1)
    assert {b.name for b in tgt.data.bones} <= set(channels)
    assert bpy.context.scene.render.fps == int(FPS)


def test_ntsc_glb_passes_khronos_validator(empty_scene, body_model, tmp_path):
    """The GLB with its sampler times rewritten for 29.97 fps is still valid
    (accessor bounds, buffer layout) and its animation runs k / 29.97 s."""
    take = import_result(make_result(random_motion(NUM_FRAMES, seed=4), fps=29.97, seed=2),
                         body_model, pose_correctives=False)
    report = validate_glb(export_glb(tmp_path / "ntsc.glb", take.rig))
    assert report["numErrors"] == 0, report["errors"]
    assert report["info"]["animationCount"] == 1
