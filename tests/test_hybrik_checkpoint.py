"""Loading HybrIK checkpoints: formats, prefixes, old files, wrong files."""
import os

import numpy as np
import pytest
import torch

from tests.conftest import DATA
from tests.helpers import hybrik_smpl_buffers
from hybrik_blender.core.body.model import load_body_model
from hybrik_blender.worker.hybrik import checkpoint as ck
from hybrik_blender.worker.synthetic import synthetic_state


@pytest.fixture(scope="module")
def res34_state():
    state = synthetic_state(os.path.join(DATA, "checkpoint_keys_res34_cam.json"), "res34_cam", 2)
    return {k: torch.from_numpy(v) for k, v in state.items()}


def smpl_buffers(arrays):
    """The synthetic model laid out as HybrIK's SMPL layer stores it."""
    h36m = np.load(os.path.join(DATA, "synthetic_J_regressor_h36m.npy"))
    return hybrik_smpl_buffers(dict(arrays, J_regressor_h36m=h36m))


def test_plain_model_and_module_prefix(res34_state):
    for obj in (res34_state, {"model": res34_state, "epoch": 3},
                {"module." + k: v for k, v in res34_state.items()}):
        arch, net_state, smpl = ck.split_state(ck.unwrap_state_dict(obj))
        assert arch == "res34_cam"
        assert set(net_state) == set(res34_state)
        assert smpl is None


def test_hrnet_detected():
    import json
    with open(os.path.join(DATA, "checkpoint_keys_hrnet48_cam.json")) as fh:
        keys = json.load(fh)
    assert ck.detect_architecture(keys) == "hrnet48_cam"


def test_missing_decsigma_is_tolerated(res34_state):
    old = {k: v for k, v in res34_state.items() if not k.startswith("decsigma.")}
    arch, net_state, _ = ck.split_state(old)
    from hybrik_blender.worker.hybrik.model import build_pipeline
    from tests.test_hybrik_golden import golden_body_model
    pipe = build_pipeline(arch, net_state, golden_body_model())
    assert pipe.net.decsigma is None
    out = pipe(torch.zeros(1, 3, 256, 256), [[0, 0, 100, 100]], [[50, 50]])
    assert out["sigma"] is None and torch.isfinite(out["rot_mats"]).all()
    assert 0 <= float(pipe.confidence(out)[0]) <= 1


def test_wrong_files_name_the_keys(res34_state, tmp_path):
    broken = dict(res34_state)
    del broken["fc2.weight"]
    broken["extra_head.weight"] = torch.zeros(3)
    with pytest.raises(ck.CheckpointError, match=r"missing keys: fc2\.weight.*unexpected keys: "
                                                 r"extra_head\.weight"):
        ck.split_state(broken)
    reshaped = dict(res34_state)
    reshaped["decshape.weight"] = torch.zeros(11, 1024)
    with pytest.raises(ck.CheckpointError, match=r"wrong shapes: decshape\.weight"):
        ck.split_state(reshaped)
    with pytest.raises(ck.CheckpointError, match="not a HybrIK checkpoint.*conv.weight"):
        ck.split_state({"conv.weight": torch.zeros(1), "fc.bias": torch.zeros(1)})
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ck.CheckpointError, match="junk.pth: not a readable PyTorch checkpoint"):
        ck.read_checkpoint(junk)
    with pytest.raises(ck.CheckpointError, match="file not found"):
        ck.read_checkpoint(tmp_path / "nothing.pth")
    pickled = tmp_path / "evil.pth"
    torch.save({"model": {"x": object()}}, pickled)
    with pytest.raises(ck.CheckpointError, match="evil.pth"):
        ck.read_checkpoint(pickled)


def test_saved_checkpoint_with_smpl_buffers(res34_state, model_arrays, tmp_path):
    path = tmp_path / "hybrik_res34_w3dpw.pth"
    state = {"module." + k: v for k, v in {**res34_state, **smpl_buffers(model_arrays)}.items()}
    torch.save({"model": state}, path)
    arch, net_state, smpl = ck.read_checkpoint(path)
    assert arch == "res34_cam" and smpl is not None
    body = ck.body_model_from_checkpoint(smpl, "hybrik_res34_w3dpw.pth")
    np.testing.assert_allclose(body.v_template, model_arrays["v_template"], atol=1e-6)
    np.testing.assert_allclose(body.posedirs, model_arrays["posedirs"], atol=1e-6)
    assert body.J_regressor_h36m.shape == (17, 6890)
    # the numpy-only core reads the same file without torch
    core_body = load_body_model(path)
    np.testing.assert_allclose(core_body.shapedirs, body.shapedirs)
    pipe = ck.load_hybrik(path)
    assert pipe.arch == "res34_cam"
    out = pipe(torch.zeros(2, 3, 256, 256), [[0, 0, 100, 100]] * 2, [[50, 50]] * 2)
    assert out["rot_mats"].shape == (2, 24, 3, 3)
    # a checkpoint without the buffers needs a body model
    torch.save(res34_state, tmp_path / "bare.pth")
    with pytest.raises(ck.CheckpointError, match="no embedded SMPL"):
        ck.load_hybrik(tmp_path / "bare.pth")
    assert ck.load_hybrik(tmp_path / "bare.pth", body_model=body).arch == "res34_cam"


def test_smpl_checkpoint_refuses_an_smplx_model(res34_state, tmp_path):
    torch.save(res34_state, tmp_path / "res34.pth")
    with pytest.raises(ck.CheckpointError, match="SMPL-X model.*SMPL HybrIK checkpoint"):
        ck.load_pipeline(str(tmp_path / "res34.pth"),
                         model_path=os.path.join(DATA, "synthetic_smplx_neutral.npz"))
