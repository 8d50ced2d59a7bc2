import subprocess
import sys

import bpy

import hybrik_blender
from hybrik_blender.core.formats.result import save_result
from tests.conftest import ROOT, SYNTHETIC_MODEL
from tests.helpers import make_result, random_motion


def test_register_unregister_twice(empty_scene):
    for _ in range(2):
        hybrik_blender.register()
        assert hasattr(bpy.types.Scene, "hybrik")
        assert bpy.ops.hybrik.import_result.poll() in (True, False)
        hybrik_blender.unregister()
        assert not hasattr(bpy.types.Scene, "hybrik")


def test_import_operator_and_its_errors(empty_scene, tmp_path):
    hybrik_blender.register()
    try:
        path = tmp_path / "take.npz"
        save_result(path, make_result(random_motion(4)))
        assert bpy.ops.hybrik.import_result(filepath=str(path),
                                            body_model_path=SYNTHETIC_MODEL) == {'FINISHED'}
        assert any(o.type == 'ARMATURE' for o in bpy.data.objects)
        bad = tmp_path / "bad.npz"
        bad.write_bytes(path.read_bytes()[:200])
        try:
            bpy.ops.hybrik.import_result(filepath=str(bad), body_model_path=SYNTHETIC_MODEL)
        except RuntimeError as exc:  # the operator's ERROR report surfaces here
            assert "truncated or damaged" in str(exc)
        else:
            raise AssertionError("a truncated result must be reported")
    finally:
        hybrik_blender.unregister()


def test_headless_import_writes_a_blend(tmp_path):
    out = tmp_path / "take.blend"
    res = tmp_path / "take.npz"
    save_result(res, make_result(random_motion(8), fps=25.0))
    cmd = [sys.executable, "-m", "hybrik_blender", "import", str(res), "--smpl-model",
           SYNTHETIC_MODEL, "-o", str(out)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "frames 1-8 at 25 fps" in run.stdout
    bpy.ops.wm.open_mainfile(filepath=str(out))
    rigs = [o for o in bpy.data.objects if o.type == 'ARMATURE']
    assert len(rigs) == 1 and bpy.context.scene.render.fps == 25
    assert bpy.context.scene.frame_end == 8

    bad = subprocess.run(cmd[:5] + ["--smpl-model", str(res), "-o", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 5  # the body model cannot be read
    assert bad.stderr.strip().count("\n") == 0 and "error:" in bad.stderr
