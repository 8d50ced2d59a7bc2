import os
import pickle
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from hybrik_blender.core.body import model as bm
from tests.conftest import SYNTHETIC_MODEL
from tests.helpers import hybrik_smpl_buffers


def test_npz_loads_and_validates():
    model = bm.load_body_model(SYNTHETIC_MODEL)
    assert model.num_vertices == 6890 and model.num_betas == 10
    assert model.posedirs.shape == (6890, 3, 207)
    assert np.array_equal(model.parents[:4], [-1, 0, 0, 0])


def test_rest_joints_and_leaves_match_smplx(body_model, model_arrays):
    import smplx
    sm = smplx.SMPL("unused", data_struct=smplx.utils.Struct(**model_arrays), dtype=torch.float64)
    betas = np.random.default_rng(1).normal(0, 1.5, (7, 10))
    with torch.no_grad():
        out = sm(betas=torch.tensor(betas), body_pose=torch.zeros(7, 69, dtype=torch.float64),
                 global_orient=torch.zeros(7, 3, dtype=torch.float64))
    verts = out.vertices.numpy()
    joints = bm.rest_joints(body_model, betas)
    ref = out.joints.numpy()[:, :24]
    assert np.abs(joints - ref).max() < 1e-7
    leaves = bm.leaf_joints(body_model, betas)
    assert np.abs(leaves - verts[:, [411, 2445, 5905, 3216, 6617]]).max() < 1e-7
    # vectorised over any leading shape
    j29 = bm.rest_joints_29(body_model, betas.reshape(7, 1, 10))
    assert j29.shape == (7, 1, 29, 3)
    assert np.allclose(j29[:, 0, :24], joints)


# --- official .pkl with chumpy-style objects --------------------------------

class _FakeCh:
    """Pickles like chumpy.ch.Ch: a reconstructor plus a state dict holding x."""

    def __init__(self, x):
        self.x = x
        self._dirty_vars = set()

    def __reduce_ex__(self, protocol):
        import copyreg
        return (copyreg._reconstructor, (type(self), object, None), dict(self.__dict__))


def _install_fake(modname, cls_name, cls):
    mod = types.ModuleType(modname)
    cls.__module__, cls.__qualname__, cls.__name__ = modname, cls_name, cls_name
    setattr(mod, cls_name, cls)
    saved = sys.modules.get(modname)
    sys.modules[modname] = mod
    return saved


def write_official_style_pkl(path, arrays, num_betas=10):
    """An SMPL pkl as the official files are: chumpy Ch objects for the dense
    arrays, a scipy csc_matrix (old module path) for J_regressor."""
    import scipy.sparse
    fake_ch = type("Ch", (_FakeCh,), {})
    saved = {m: _install_fake(m, "Ch", fake_ch) for m in ("chumpy.ch",)}
    saved["chumpy"] = sys.modules.get("chumpy")
    sys.modules["chumpy"] = types.ModuleType("chumpy")
    csc = scipy.sparse.csc_matrix(arrays["J_regressor"])
    csc_cls = type(csc)
    old_module = csc_cls.__module__
    csc_cls.__module__ = "scipy.sparse.csc"
    sys.modules.setdefault("scipy.sparse.csc", scipy.sparse)  # noqa: the old path official files use
    shapedirs = arrays["shapedirs"]
    if num_betas > shapedirs.shape[2]:
        extra = np.zeros(shapedirs.shape[:2] + (num_betas - shapedirs.shape[2],))
        shapedirs = np.concatenate([shapedirs, extra], axis=2)
    obj = {
        "v_template": fake_ch(arrays["v_template"]), "shapedirs": fake_ch(shapedirs),
        "posedirs": fake_ch(arrays["posedirs"]), "weights": fake_ch(arrays["weights"]),
        "J_regressor": csc, "kintree_table": arrays["kintree_table"], "f": arrays["f"],
        "J": fake_ch(arrays["J_regressor"] @ arrays["v_template"]),
        "bs_type": "lrotmin", "bs_style": "lbs",
    }
    try:
        with open(path, "wb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pickle.dump(obj, fh, protocol=2)
    finally:
        csc_cls.__module__ = old_module
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def test_chumpy_pkl_loads_without_chumpy(tmp_path, model_arrays):
    path = tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"
    write_official_style_pkl(path, model_arrays)
    raw = path.read_bytes()
    assert b"chumpy.ch" in raw and b"scipy.sparse.csc" in raw
    with pytest.raises(ImportError):
        __import__("chumpy")
    model = bm.load_body_model(path)
    for key, got in (("v_template", model.v_template), ("shapedirs", model.shapedirs),
                     ("posedirs", model.posedirs), ("weights", model.weights),
                     ("J_regressor", model.J_regressor)):
        assert np.array_equal(got, model_arrays[key]), key
    assert np.array_equal(model.faces, model_arrays["f"])


def test_300_beta_model_uses_first_10_with_warning(tmp_path, model_arrays):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    write_official_style_pkl(path, model_arrays, num_betas=300)
    with pytest.warns(UserWarning, match="300 shape components"):
        model = bm.load_body_model(path)
    assert model.shapedirs.shape == (6890, 3, 10)
    assert np.array_equal(model.shapedirs, model_arrays["shapedirs"])


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("func_name", ["os.system", "subprocess.check_call", "builtins.eval"])
def test_malicious_pickle_is_refused(tmp_path, func_name):
    import builtins
    import subprocess
    marker = tmp_path / "pwned"
    func = {"os.system": os.system, "subprocess.check_call": subprocess.check_call,
            "builtins.eval": builtins.eval}[func_name]
    arg = {"os.system": f"touch {marker}", "subprocess.check_call": ["touch", str(marker)],
           "builtins.eval": f"open({str(marker)!r}, 'w')"}[func_name]
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Evil(func, arg)}, protocol=2))
    with pytest.raises(bm.BodyModelError, match="refused"):
        bm.load_body_model(path)
    assert not marker.exists()


# --- checkpoint-embedded SMPL buffers -------------------------------------------

def write_checkpoint(path, arrays, wrap=True, prefix=""):
    """A state dict laid out like an official HybrIK checkpoint."""
    sd = {"preact.conv1.weight": torch.randn(4, 3, 3, 3), "decshape.weight": torch.randn(10, 8),
          **hybrik_smpl_buffers(arrays)}
    sd = {prefix + k: v for k, v in sd.items()}
    torch.save({"model": sd, "epoch": 3} if wrap else sd, path)


@pytest.mark.parametrize("wrap,prefix", [(True, ""), (False, "module.")])
def test_checkpoint_embedded_model_loads(tmp_path, model_arrays, wrap, prefix):
    path = tmp_path / "hybrik_res34_w3dpw.pth"
    write_checkpoint(path, model_arrays, wrap, prefix)
    model = bm.load_body_model(path)
    assert model.source == "hybrik_res34_w3dpw.pth"
    for key in ("v_template", "shapedirs", "posedirs", "weights", "J_regressor"):
        got = getattr(model, key)
        assert got.shape == model_arrays[key].shape
        assert np.abs(got - model_arrays[key]).max() < 1e-6, key
    assert model.J_regressor_h36m.shape == (17, 6890)


def test_checkpoint_without_smpl_buffers(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(bm.BodyModelError, match="without embedded SMPL"):
        bm.load_body_model(path)


def test_checkpoint_with_foreign_global_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": torch.zeros(1), "y": _Evil(os.system, "true")}, path)
    with pytest.raises(bm.BodyModelError, match="refused"):
        bm.load_body_model(path)


# --- wrong files ------------------------------------------------------------------

def test_wrong_files_give_clear_errors(tmp_path, model_arrays):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(bm.BodyModelError, match="not an SMPL/SMPL-X model"):
        bm.load_body_model(text)

    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(bm.BodyModelError, match="missing 'v_template'"):
        bm.load_body_model(other)

    smplx_like = dict(model_arrays, v_template=np.zeros((10475, 3)))
    with pytest.raises(bm.BodyModelError, match="10475 vertices.*SMPL-X"):
        bm.body_model_from_arrays(smplx_like, model_type="smpl")
    # detected as SMPL-X by its vertex count, then refused for SMPL-sized arrays
    with pytest.raises(bm.BodyModelError, match=r"shapedirs has shape \(6890, 3, 10\)"):
        bm.body_model_from_arrays(smplx_like)
    with pytest.raises(bm.BodyModelError, match="6890 vertices; an SMPL-X model has 10475"):
        bm.body_model_from_arrays(model_arrays, model_type="smplx")

    bad_tree = dict(model_arrays, kintree_table=np.stack([np.r_[-1, np.zeros(23)], np.arange(24)]))
    with pytest.raises(bm.BodyModelError, match="kinematic tree"):
        bm.body_model_from_arrays(bad_tree)

    nan = dict(model_arrays, shapedirs=model_arrays["shapedirs"].copy())
    nan["shapedirs"][5, 1, 2] = np.nan
    with pytest.raises(bm.BodyModelError, match="NaN"):
        bm.body_model_from_arrays(nan)

    few = dict(model_arrays, shapedirs=model_arrays["shapedirs"][:, :, :8])
    with pytest.raises(bm.BodyModelError, match="only 8 shape components"):
        bm.body_model_from_arrays(few)

    truncated = tmp_path / "trunc.npz"
    truncated.write_bytes(open(SYNTHETIC_MODEL, "rb").read()[:100000])
    with pytest.raises(bm.BodyModelError, match="damaged|truncated|readable"):
        bm.load_body_model(truncated)

    with pytest.raises(bm.BodyModelError, match="cannot read"):
        bm.load_body_model(tmp_path / "missing.pkl")

    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x80\x02\x0a\x0a\x0a")
    with pytest.raises(bm.BodyModelError, match="not a readable SMPL pickle"):
        bm.load_body_model(garbage)
