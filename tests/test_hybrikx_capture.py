"""HybrIK-X checkpoints: recognised from their keys, loaded with their
embedded SMPL-X layer or the user's SMPL-X file, and a capture that writes
an SMPL-X take (result v2)."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import DATA
from tests.test_worker_capture import photo_frames, write_video
from hybrik_blender.core.formats.result import Result, load_result
from hybrik_blender.worker import capture as cap
from hybrik_blender.worker import cli
from hybrik_blender.worker.hybrik import checkpoint as ck
from hybrik_blender.worker.hybrik import modelx, smplx_layer
from hybrik_blender.worker.synthetic import synthetic_state

MODEL = os.path.join(DATA, "synthetic_smplx_neutral.npz")
KID = os.path.join(DATA, "synthetic_smplx_kid_template.npy")
MANIFESTS = {"hrnetx48_rle": "checkpoint_keys_hybrikx_hrnet48_rle.json",
             "hrnetx48": "checkpoint_keys_hybrikx_hrnet48.json",
             "hrnet48_cam": "checkpoint_keys_hrnet48_cam.json",
             "res34_cam": "checkpoint_keys_res34_cam.json"}


@pytest.fixture(scope="module")
def model():
    return smplx_layer.load_smplx_model(MODEL, KID)


def checkpoint_state(arch, model, seed=1):
    """An official-layout HybrIK-X state dict: the golden recipe's weights
    and the SMPL-X layer buffers."""
    state = {k: torch.from_numpy(v) for k, v in synthetic_state(
        os.path.join(DATA, MANIFESTS[arch]), arch, seed, model.rest_points()).items()}
    state.update(smplx_layer.layer_state(model))
    return state


@pytest.fixture(scope="module")
def rle_checkpoint(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("ckx") / "hybrikx_rle_hrnet.pth"
    torch.save({"model": checkpoint_state("hrnetx48_rle", model)}, path)
    return str(path)


def test_architectures_are_recognised_from_the_manifests():
    for arch, name in MANIFESTS.items():
        with open(os.path.join(DATA, name)) as fh:
            keys = json.load(fh)
        assert ck.detect_architecture(keys) == arch
        assert ck.is_smplx(arch) == arch.startswith("hrnetx")


def test_state_checks_name_the_keys(model):
    state = checkpoint_state("hrnetx48", model)
    arch, net_state, layer = ck.split_state(dict(state))
    assert arch == "hrnetx48" and smplx_layer.has_smplx_state(layer)
    assert not any(k.startswith("smplx_layer.") for k in net_state)
    broken = {k: v for k, v in state.items() if not k.startswith("decphi.")}
    with pytest.raises(ck.CheckpointError, match=r"missing keys: decphi\.bias, decphi\.weight"):
        ck.split_state(broken)
    wrong = dict(state)
    wrong["decshape.weight"] = torch.zeros(20, 2048)
    with pytest.raises(ck.CheckpointError, match=r"wrong shapes: decshape\.weight"):
        ck.split_state(wrong)


def test_loading_with_the_embedded_or_a_given_model(tmp_path, rle_checkpoint, model):
    pipe = ck.load_hybrik(rle_checkpoint)
    assert isinstance(pipe, modelx.HybrIKXPipeline) and pipe.arch == "hrnetx48_rle"
    np.testing.assert_array_equal(pipe.body.model.shapedirs, np.float32(model.shapedirs))
    # a user model next to its children's template (HybrIK's model_files layout)
    folder = tmp_path / "model_files" / "smplx"
    folder.mkdir(parents=True)
    user = str(folder / "SMPLX_NEUTRAL.npz")
    shutil.copy(MODEL, user)
    shutil.copy(KID, tmp_path / "model_files" / smplx_layer.KID_TEMPLATE_NAME)
    pipe = ck.load_pipeline(rle_checkpoint, user)
    assert pipe.body.model.source == "SMPLX_NEUTRAL.npz"
    np.testing.assert_allclose(pipe.body.model.shapedirs, model.shapedirs, atol=0)
    # without a template, the one the checkpoint's layer was built from
    os.remove(tmp_path / "model_files" / smplx_layer.KID_TEMPLATE_NAME)
    _, _, layer = ck.read_checkpoint(rle_checkpoint)
    kid = smplx_layer.kid_template_from_state(layer)
    recovered = smplx_layer.load_smplx_model(user, kid)
    np.testing.assert_allclose(recovered.shapedirs[:, :, 10], model.shapedirs[:, :, 10],
                               atol=3e-6)
    # an SMPL model for an SMPL-X checkpoint is refused in one line
    with pytest.raises(ValueError, match="6890 vertices; an SMPL-X model has 10475"):
        ck.load_pipeline(rle_checkpoint, os.path.join(DATA, "synthetic_smpl_neutral.npz"))


def test_check_command_reports_hybrikx(rle_checkpoint, capsys):
    assert cli.main(["check", "--checkpoint", rle_checkpoint, "--smpl-model", MODEL,
                     "--kid-template", KID]) in (0, cli.codes.EXIT_ENVIRONMENT)
    out = capsys.readouterr().out
    assert "hrnetx48_rle, with embedded SMPL-X layer" in out
    assert "ok      SMPL-X body model synthetic_smplx_neutral.npz: OK" in out


def test_capture_writes_an_smplx_take(tmp_path, rle_checkpoint, capsys):
    clip = write_video(tmp_path / "walk.mp4", photo_frames(3))
    out = str(tmp_path / "take.npz")
    code = cli.main(["capture", clip, "--out", out, "--backend", "hybrik",
                     "--checkpoint", rle_checkpoint, "--smpl-model", MODEL,
                     "--kid-template", KID, "--batch-size", "3", "--device", "cpu", "--clean"])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0, events[-1]
    assert events[-1]["event"] == "done"
    r = load_result(out)
    n = r.num_frames
    assert n == 3 and r.valid.all() and r.complete and r.body_model == "smplx"
    assert "hrnetx48_rle" in r.model
    np.testing.assert_array_equal(r.rotmats[:, 22:], np.broadcast_to(np.eye(3), (n, 2, 3, 3)))
    assert r.hand_rotmats.shape == (n, 30, 3, 3) and r.eye_rotmats.shape == (n, 2, 3, 3)
    assert r.jaw_rotmat.shape == (n, 3, 3)
    for rot in (r.rotmats, r.hand_rotmats, r.jaw_rotmat, r.eye_rotmats):
        assert np.abs(rot @ np.swapaxes(rot, -1, -2) - np.eye(3)).max() < 2e-3
    assert r.expression.shape == (n, 10) and r.kid.shape == (n,) and r.betas.shape == (n, 10)
    assert r.joint_confidence.shape == (n, 24) and r.hand_confidence.shape == (n, 30)
    assert np.all(r.joint_confidence[:, 22:] == 0)
    assert 0 <= r.joint_confidence.min() and r.joint_confidence.max() <= 1
    assert np.all(r.root_translation[:, 2] > 0) and np.all(np.isfinite(r.joints29))
    assert r.camera_to_world is not None     # the clean-up ran, with the SMPL-X model
    assert abs(float(r.kid[0])) < 5 and np.abs(r.expression).max() < 10


def test_frame_arrays_map_the_official_outputs():
    """Which official output goes to which result field."""
    rng = np.random.default_rng(2)
    b = 3
    from hybrik_blender.core import rotations
    theta = torch.tensor(rotations.axis_angle_to_matrix(rng.normal(0, 0.5, (b, 55, 3))))
    sigma = torch.tensor(rng.uniform(0, 1, (b, 71)))
    out = {"pred_theta_mat": theta, "pred_sigma": sigma,
           "pred_beta": torch.tensor(rng.normal(0, 1, (b, 11))),
           "pred_expression": torch.tensor(rng.normal(0, 1, (b, 10))),
           "cam_root": torch.tensor([[0.1, 0.2, 5.0]] * b),
           "pred_xyz_hybrik": torch.tensor(rng.normal(0, 0.2, (b, 71, 3))),
           "pred_uvd_jts": torch.tensor(rng.normal(0, 0.2, (b, 71, 3))),
           "bbox_center": torch.tensor(rng.normal(0, 0.1, (b, 1, 2))),
           "head_top": torch.tensor(rng.normal(0, 0.2, (b, 3)))}
    s_ = sigma.numpy()
    pipe = modelx.HybrIKXPipeline.__new__(modelx.HybrIKXPipeline)
    f = pipe.frame_arrays(out)
    np.testing.assert_allclose(f["rotmats"][:, :22], theta[:, :22], atol=1e-7)
    np.testing.assert_array_equal(f["rotmats"][:, 22:], np.broadcast_to(np.eye(3), (b, 2, 3, 3)))
    np.testing.assert_allclose(f["hand_rotmats"], theta[:, 25:55], atol=1e-7)
    np.testing.assert_allclose(f["jaw_rotmat"], theta[:, 22], atol=1e-7)
    np.testing.assert_allclose(f["eye_rotmats"], theta[:, 23:25], atol=1e-7)
    np.testing.assert_allclose(f["betas"], out["pred_beta"][:, :10], atol=1e-6)
    np.testing.assert_allclose(f["kid"], out["pred_beta"][:, 10], atol=1e-6)
    np.testing.assert_allclose(f["confidence"], (1 - sigma).mean(1), atol=1e-6)
    pts = out["pred_xyz_hybrik"].numpy() * modelx.DEPTH_FACTOR + out["cam_root"].numpy()[:, None]
    np.testing.assert_allclose(f["joints29"][:, :22], pts[:, :22], atol=1e-6)
    np.testing.assert_allclose(f["joints29"][:, 25], pts[:, 61], atol=1e-6)   # left middle tip
    np.testing.assert_allclose(f["joints29"][:, 27], pts[:, 55], atol=1e-6)   # left big toe
    np.testing.assert_allclose(f["joints29"][:, 24], out["head_top"] + out["cam_root"], atol=1e-6)
    # the 2D evidence: predicted uv of the 29 SMPL-equivalent points, 1 - sigma
    uvd = out["pred_uvd_jts"].numpy()
    np.testing.assert_allclose(f["uv29"][:, 22], uvd[:, 28, :2], atol=1e-6)   # left middle1
    np.testing.assert_allclose(f["uv29_confidence"][:, 27], 1 - s_[:, 55], atol=1e-6)
    assert np.all(f["uv29_confidence"][:, 24] == 0)                           # head top: model
    top = f["joints29"][:, 24]
    np.testing.assert_allclose(f["uv29"][:, 24], top[:, :2] / top[:, 2:] * 1000 / 256
                               - out["bbox_center"].numpy()[:, 0], atol=1e-6)
    # a finger rotation is as sure as the less sure of its joint and its child
    np.testing.assert_allclose(f["hand_confidence"][:, 2],   # left index3 -> its tip (60)
                               1 - np.maximum(s_[:, 27], s_[:, 60]), atol=1e-6)
    conf = modelx.HybrIKXPipeline.joint_confidence(sigma).numpy()
    np.testing.assert_allclose(conf[:, 15], 1 - np.maximum(s_[:, 15], s_[:, [23, 24, 70]].mean(1)),
                               atol=1e-6)
    assert set(f) <= set(pipe.placeholder_row())


def test_resume_keeps_the_smplx_rows(model):
    """Rows kept from a partial SMPL-X take carry their hand, face and
    confidence fields (so a resumed run equals an uninterrupted one)."""
    n = 4
    eye = np.eye(3, dtype=np.float32)
    rng = np.random.default_rng(0)
    fields = dict(frame_index=np.arange(n), time_s=np.arange(n) / 25.0,
                  rotmats=np.tile(eye, (n, 24, 1, 1)), betas=rng.normal(0, 1, (n, 10)),
                  root_translation=np.tile([0.0, 0.0, 3.0], (n, 1)),
                  joints29=np.zeros((n, 29, 3)), bbox=np.tile([0.0, 0, 10, 10], (n, 1)),
                  confidence=np.ones(n), fps=25.0, image_size=(64, 64),
                  focal_length=(50.0, 50.0), principal_point=(32.0, 32.0), source="v.mp4",
                  backend="hybrik", model="m", complete=False, body_model="smplx",
                  kid=rng.normal(0, 0.1, n), expression=rng.normal(0, 1, (n, 10)),
                  hand_rotmats=np.tile(eye, (n, 30, 1, 1)), jaw_rotmat=np.tile(eye, (n, 1, 1)),
                  eye_rotmats=np.tile(eye, (n, 2, 1, 1)), joint_confidence=np.ones((n, 24)),
                  hand_confidence=np.ones((n, 30)),
                  extras={"square_box": np.tile([0.0, 0, 10, 10], (n, 1)).astype(np.float32),
                          "raw_root": np.tile([0.0, 0.0, 3.0], (n, 1)).astype(np.float32),
                          "raw_rotmats": np.tile(eye, (n, 24, 1, 1)),
                          "raw_betas": np.zeros((n, 10), np.float32),
                          "uv29": np.zeros((n, 29, 2), np.float32),
                          "uv29_confidence": np.ones((n, 29), np.float32)})
    prev = Result.from_frames(valid=np.ones(n, bool), **fields)

    class Backend:
        name = "hybrik"
    rows = cap._keep_rows(prev, 3, Backend())
    assert len(rows) == 3
    np.testing.assert_allclose(rows[2]["kid"], prev.kid[2])
    np.testing.assert_allclose(rows[1]["expression"], prev.expression[1])
    assert rows[0]["hand_rotmats"].shape == (30, 3, 3)


def test_job_line_forwards_the_kid_template():
    from hybrik_blender.blender import jobs
    line = jobs.capture_args("py", "v.mp4", "o.npz", smpl_model="SMPLX_NEUTRAL.npz",
                             kid_template="kid.npy")
    assert line[line.index("--kid-template") + 1] == "kid.npy"
    assert "--kid-template" not in jobs.capture_args("py", "v.mp4", "o.npz")
