"""The SMPL-X character in real Blender: structure, exactness against the
independent smplx.SMPLX (body, fingers, jaw, eyes, expression, children's
shape), keys, armature-only rigs, clean-up, the CLI and the add-on."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import bpy
import hybrik_blender
from hybrik_blender.__main__ import main as cli_main
from hybrik_blender.blender.animation import import_result
from hybrik_blender.blender.character import (EXPRESSION_KEY_NAMES, KID_KEY_NAME,
                                              SHAPE_KEY_NAMES, SMPLX_POSE_KEY_NAMES,
                                              build_character)
from hybrik_blender.blender.keyframes import fcurves_of
from hybrik_blender.core.blender_space import CAMERA_TO_BLENDER
from hybrik_blender.core.body import model as bm
from hybrik_blender.core.body.average import average_rest_points_x, fitted_average_skeleton
from hybrik_blender.core.body.kinematics import forward_kinematics
from hybrik_blender.core.body.skeleton import SMPLX_JOINT_NAMES, SMPLX_PARENTS
from hybrik_blender.core.formats.result import save_result
from hybrik_blender.core.rotations import matrix_to_axis_angle
from tests.blender.test_character import evaluated_world_vertices
from tests.conftest import (ROOT, SYNTHETIC_MODEL, SYNTHETIC_SMPLX_KID, SYNTHETIC_SMPLX_MODEL,
                            smplx_oracle)
from tests.helpers import make_result, make_smplx_result, random_motion, random_motion_x

TOLERANCE_M = 1e-4  # 0.1 mm


def oracle_vertices(result, model, rot55, kid=None):
    """smplx.SMPLX's vertices for a take, in Blender's world (default camera)."""
    n = result.num_frames
    betas = result.betas.astype(np.float64)
    expr = result.expression.astype(np.float64)
    transl = result.root_translation - bm.model_joints(model, betas, expr, kid)[:, 0]
    aa = matrix_to_axis_angle(np.asarray(rot55, np.float64))
    b = betas if kid is None else np.c_[betas, kid]

    def t(a):
        return torch.tensor(np.asarray(a, np.float64))
    with torch.no_grad():
        out = smplx_oracle(n, kid=kid is not None)(
            betas=t(b), expression=t(expr), transl=t(transl), global_orient=t(aa[:, 0]),
            body_pose=t(aa[:, 1:22].reshape(n, -1)), jaw_pose=t(aa[:, 22]),
            leye_pose=t(aa[:, 23]), reye_pose=t(aa[:, 24]),
            left_hand_pose=t(aa[:, 25:40].reshape(n, -1)),
            right_hand_pose=t(aa[:, 40:55].reshape(n, -1)))
    return out.vertices.numpy() @ CAMERA_TO_BLENDER.T


def test_smplx_character_structure(empty_scene, smplx_model):
    rig, mesh = build_character(smplx_model, np.linspace(-1, 1, 10), kid=0.25)
    bones = rig.data.bones
    assert len(bones) == 55 and {b.name for b in bones} == set(SMPLX_JOINT_NAMES)
    for i, name in enumerate(SMPLX_JOINT_NAMES):
        parent = bones[name].parent
        assert (parent.name if parent else None) == \
            (SMPLX_JOINT_NAMES[SMPLX_PARENTS[i]] if i else None)
    assert rig["hybrik_model_type"] == "smplx"
    # fingers: each bone runs to the next joint (last: the tip vertex), flexion about local X
    rest = bm.rest_points_x(smplx_model, np.linspace(-1, 1, 10), kid=0.25)
    conv = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0.0]])
    for k, name in enumerate(SMPLX_JOINT_NAMES[25:]):
        b = bones[name]
        assert np.abs(np.array(b.head_local) - conv @ rest[25 + k]).max() < 1e-5
        x_axis = np.array(b.matrix_local)[:3, 0]
        if "thumb" not in name:
            assert abs(x_axis[1]) > 0.95, (name, x_axis)   # world Y: the flexion axis
    tip = conv @ rest[61 + 1]                               # left middle tip
    assert np.abs(np.array(bones["left_middle3"].tail_local) - tip).max() < 1e-5
    assert len(mesh.data.vertices) == 10475 and len(mesh.data.polygons) == 20908
    assert [g.name for g in mesh.vertex_groups] == list(SMPLX_JOINT_NAMES)
    blocks = mesh.data.shape_keys.key_blocks
    assert [k.name for k in blocks] == ["Basis", *SHAPE_KEY_NAMES, KID_KEY_NAME,
                                        *EXPRESSION_KEY_NAMES, *SMPLX_POSE_KEY_NAMES]
    assert len(SMPLX_POSE_KEY_NAMES) == 486
    assert blocks[KID_KEY_NAME].value == pytest.approx(0.25)
    assert np.allclose([blocks[n].value for n in SHAPE_KEY_NAMES], np.linspace(-1, 1, 10),
                       atol=1e-6)
    _, lean = build_character(bm.load_body_model(SYNTHETIC_SMPLX_MODEL), np.zeros(10),
                              pose_correctives=False, expressions=False)
    assert [k.name for k in lean.data.shape_keys.key_blocks] == ["Basis", *SHAPE_KEY_NAMES]


@pytest.mark.parametrize("per_frame_betas", [False, True])
def test_blender_vertices_match_smplx_x(empty_scene, smplx_model, per_frame_betas, capsys):
    """Random body, finger, jaw and eye rotations, expressions and a
    children's shape: Blender's evaluated mesh equals smplx.SMPLX's."""
    n = 4
    rng = np.random.default_rng(21)
    rot = random_motion_x(n, seed=8, spread=0.6, finger_spread=0.7)
    if per_frame_betas:
        betas, kid = rng.normal(0, 1, (n, 10)), rng.uniform(0, 0.5, n)
    else:
        betas, kid = np.tile(rng.normal(0, 1.2, 10), (n, 1)), np.full(n, 0.3)
    res = make_smplx_result(rot, betas=betas, kid=kid, seed=5)
    take = import_result(res, smplx_model, per_frame_betas=per_frame_betas)
    assert take.model_type == "smplx" and take.rig["hybrik_hands"]
    ref = oracle_vertices(res, smplx_model, rot, kid)
    # what is tested really moves the mesh: fingers, expressions, correctives
    assert np.abs(ref - oracle_vertices(res, smplx_model, np.where(
        np.arange(55)[:, None, None] < 25, rot, np.eye(3)), kid)).max() > 0.02
    worst = 0.0
    for k in range(n):
        got = evaluated_world_vertices(take.mesh, take.frame_start + k)
        err = np.abs(got - ref[k]).max()
        worst = max(worst, err)
        assert err < TOLERANCE_M, f"frame {k}: {err * 1000:.4f} mm"
    with capsys.disabled():
        print(f"\n[parity] Blender {bpy.app.version_string} SMPL-X per_frame_betas="
              f"{per_frame_betas}: max |Blender - smplx.SMPLX| = {worst * 1000:.4f} mm")


def test_smpl_take_on_smplx_and_smplx_take_on_smpl(empty_scene, smplx_model, body_model):
    """An SMPL take drives the SMPL-X body with flat hands (exact against
    smplx with zero hands); an SMPL-X take on an SMPL character keeps its
    body and says what was left out."""
    n = 3
    smpl_take = make_result(random_motion(n, seed=4), seed=2)
    res = make_result(smpl_take.rotmats, betas=smpl_take.betas,
                      root=smpl_take.root_translation,
                      expression=np.zeros((n, 10)))  # expression 0 only for the oracle
    take = import_result(smpl_take, smplx_model)
    assert take.model_type == "smplx" and not take.rig["hybrik_hands"]
    assert not take.notes
    rot55 = np.tile(np.eye(3), (n, 55, 1, 1))
    rot55[:, :22] = smpl_take.rotmats[:, :22]
    ref = oracle_vertices(res, smplx_model, rot55, kid=np.zeros(n))
    for k in range(n):
        got = evaluated_world_vertices(take.mesh, take.frame_start + k)
        assert np.abs(got - ref[k]).max() < TOLERANCE_M
    finger_curves = [c for c in fcurves_of(take.rig) if "index" in c.data_path]
    assert not finger_curves  # nothing to key: fingers stay at rest, free to pose

    x_take = make_smplx_result(random_motion_x(n, seed=3))
    on_smpl = import_result(x_take, body_model)
    assert on_smpl.model_type == "smpl" and len(on_smpl.rig.data.bones) == 24
    assert "only the body" in on_smpl.notes[0]


def test_keys_hands_and_expression_switches(empty_scene, smplx_model):
    n = 30
    valid = np.ones(n, bool)
    valid[[4, 5, 17]] = False
    res = make_smplx_result(random_motion_x(n, seed=2), valid=valid, fps=24.0, seed=1)
    full = import_result(res, smplx_model)
    curves = fcurves_of(full.rig)
    quat = [c for c in curves if c.data_path.endswith("rotation_quaternion")]
    assert len(quat) == 55 * 4
    loc_bones = {c.data_path.split('"')[1] for c in curves if c.data_path.endswith("location")}
    # the root, and the face bones whose joints the expressions shift
    assert "pelvis" in loc_bones and loc_bones <= {"pelvis", "neck", "head", "jaw",
                                                   "left_eye", "right_eye"}
    expected = 1 + np.nonzero(valid)[0] + 0.0
    for fc in curves:
        co = np.empty(2 * len(fc.keyframe_points), np.float32)
        fc.keyframe_points.foreach_get("co", co)
        assert np.array_equal(co[0::2], expected)
    ipo = {kp.interpolation for fc in (curves[0], curves[-1]) for kp in fc.keyframe_points}
    assert ipo == {'LINEAR'}
    shape_paths = {c.data_path for c in fcurves_of(full.mesh.data.shape_keys)}
    assert len(shape_paths) == 486 + 10
    assert 'key_blocks["Exp003"].value' in shape_paths

    no_hands = import_result(res, smplx_model, hands=False, expressions=False)
    curves = fcurves_of(no_hands.rig)
    assert not any("thumb" in c.data_path or "index" in c.data_path for c in curves)
    assert {c.data_path for c in curves if c.data_path.endswith("location")} == \
        {'pose.bones["pelvis"].location'}
    shapes = fcurves_of(no_hands.mesh.data.shape_keys)
    assert len(shapes) == 486 - 30 * 9   # no finger correctives, no expression keys
    assert "Exp000" not in no_hands.mesh.data.shape_keys.key_blocks
    assert not no_hands.rig["hybrik_hands"]


def test_armature_only_smplx_rig(empty_scene):
    """Without a model file an SMPL-X take gets a 55-bone rig on the average
    skeleton (with hands) scaled to the take; its evaluated joints are the
    forward kinematics of those rest points with the take's rotations."""
    n = 5
    rot = random_motion_x(n, seed=6)
    res = make_smplx_result(rot, seed=2)
    take = import_result(res, None)
    rig = take.rig
    assert take.mesh is None and len(rig.data.bones) == 55 and take.model_type == "smplx"
    points = average_rest_points_x(fitted_average_skeleton(res.joints29, res.valid))
    _, posed = forward_kinematics(rot, points[:55], SMPLX_PARENTS, res.root_translation)
    want = posed @ CAMERA_TO_BLENDER.T
    for k in range(n):
        bpy.context.scene.frame_set(take.frame_start + k)
        mw = np.array(rig.matrix_world)
        got = np.array([np.array(rig.pose.bones[b].head) for b in SMPLX_JOINT_NAMES])
        got = got @ mw[:3, :3].T + mw[:3, 3]
        assert np.abs(got - want[k]).max() < TOLERANCE_M
    smpl_rig = import_result(res, None, body_model="smpl")
    assert len(smpl_rig.rig.data.bones) == 24
    smplx_rig = import_result(make_result(random_motion(3)), None, body_model="smplx")
    assert len(smplx_rig.rig.data.bones) == 55
    with pytest.raises(bm.BodyModelError, match="SMPL model, but SMPL-X was chosen"):
        import_result(res, bm.load_body_model(SYNTHETIC_MODEL), body_model="smplx")


def test_cleanup_stands_the_smplx_character_on_the_floor(empty_scene, smplx_model):
    import dataclasses
    from hybrik_blender.core.motion.cleanup import CleanupOptions
    from hybrik_blender.core.motion.synthetic import add_noise, walk_cycle
    walk = walk_cycle(smplx_model, num_frames=40)
    noisy = add_noise(walk.result, walk.skeleton, seed=1)
    n = noisy.num_frames
    hands = random_motion_x(n, seed=3, spread=0.3)[:, 25:]
    noisy = dataclasses.replace(noisy, body_model="smplx", hand_rotmats=hands.astype(np.float32),
                                expression=np.zeros((n, 10), np.float32))
    take = import_result(noisy, smplx_model, cleanup=CleanupOptions())
    lowest = [evaluated_world_vertices(take.mesh, 1 + k)[:, 2].min() for k in range(0, 40, 5)]
    assert min(lowest) > -0.012 and max(lowest) < 0.05, lowest


def test_cli_builds_an_smplx_character(tmp_path, capsys):
    res = tmp_path / "take.npz"
    n = 6
    kid = np.full(n, 0.2)
    save_result(res, make_smplx_result(random_motion_x(n, seed=1), kid=kid, fps=30.0))
    out = tmp_path / "take.blend"
    cmd = [sys.executable, "-m", "hybrik_blender", "import", str(res), "--smpl-model",
           SYNTHETIC_SMPLX_MODEL, "--kid-template", SYNTHETIC_SMPLX_KID, "-o", str(out),
           "--no-cleanup"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "frames 1-6" in run.stdout
    bpy.ops.wm.open_mainfile(filepath=str(out))
    rig = next(o for o in bpy.data.objects if o.type == 'ARMATURE')
    mesh = next(o for o in bpy.data.objects if o.type == 'MESH')
    assert len(rig.data.bones) == 55 and rig["hybrik_model_type"] == "smplx"
    assert mesh.data.shape_keys.key_blocks[KID_KEY_NAME].value == pytest.approx(0.2)

    # in-process: the switches and the clear one-line errors (exit status 2)
    assert cli_main(["import", str(res), "--smpl-model", SYNTHETIC_SMPLX_MODEL, "-o",
                     str(out), "--rest-fingers", "--no-expressions", "--no-correctives",
                     "--no-cleanup"]) == 0
    rig = next(o for o in bpy.data.objects if o.type == 'ARMATURE')
    assert not rig["hybrik_hands"]
    capsys.readouterr()
    assert cli_main(["import", str(res), "--smpl-model", SYNTHETIC_SMPLX_MODEL,
                     "--body-model", "smpl", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is an SMPL-X model, but SMPL was chosen" in err and err.count("\n") == 1
    # no kid template: the kid shape is dropped with a note
    assert cli_main(["import", str(res), "--smpl-model", SYNTHETIC_SMPLX_MODEL, "-o",
                     str(out), "--no-cleanup"]) == 0
    assert "children's template" in capsys.readouterr().err
    # armature only
    assert cli_main(["import", str(res), "-o", str(out), "--no-cleanup"]) == 0
    rig = next(o for o in bpy.data.objects if o.type == 'ARMATURE')
    assert len(rig.data.bones) == 55


def test_addon_imports_smplx_with_panel_settings(empty_scene, tmp_path):
    hybrik_blender.register()
    try:
        path = tmp_path / "take.npz"
        save_result(path, make_smplx_result(random_motion_x(4, seed=1)))
        s = bpy.context.scene.hybrik
        assert s.body_model_type == 'AUTO' and s.import_hands and s.import_expressions
        s.import_hands = False
        s.cleanup = False
        assert bpy.ops.hybrik.import_result(filepath=str(path),
                                            body_model_path=SYNTHETIC_SMPLX_MODEL) == {'FINISHED'}
        rig = next(o for o in bpy.data.objects if o.type == 'ARMATURE')
        assert len(rig.data.bones) == 55 and not rig["hybrik_hands"]
        s.body_model_type = 'SMPL'
        try:
            bpy.ops.hybrik.import_result(filepath=str(path),
                                         body_model_path=SYNTHETIC_SMPLX_MODEL)
        except RuntimeError as exc:
            assert "SMPL-X model, but SMPL was chosen" in str(exc)
        else:
            raise AssertionError("a model/type mismatch must be reported")
        s.body_model_type = 'SMPLX'
        assert bpy.ops.hybrik.import_result(filepath=str(path)) == {'FINISHED'}
        assert sum(o.type == 'ARMATURE' and len(o.data.bones) == 55
                   for o in bpy.data.objects) == 2
    finally:
        hybrik_blender.unregister()
