"""HybrIK-X's SMPL-X layer: loading (official file layout, the children's
template, checkpoint buffers), strict checks, and skinning against the
independent ``smplx`` package."""
import os
import shutil

import numpy as np
import pytest
import torch

from tests.conftest import DATA
from hybrik_blender.core import rotations
from hybrik_blender.worker.hybrik import smplx_layer as sl

MODEL = os.path.join(DATA, "synthetic_smplx_neutral.npz")
KID = os.path.join(DATA, "synthetic_smplx_kid_template.npy")


@pytest.fixture(scope="module")
def arrays():
    with np.load(MODEL, allow_pickle=False) as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def model():
    return sl.load_smplx_model(MODEL, KID)


def test_layout_as_the_official_layer(model, arrays):
    kid = np.load(KID)
    assert model.shapedirs.shape == (10475, 3, 11) and model.expr_dirs.shape == (10475, 3, 10)
    np.testing.assert_array_equal(model.shapedirs[:, :, :10], arrays["shapedirs"][:, :, :10])
    np.testing.assert_array_equal(model.expr_dirs, arrays["shapedirs"][:, :, 10:20])
    # the 11th direction: the centred children's template minus the template
    np.testing.assert_allclose(model.v_template + model.shapedirs[:, :, 10], kid - kid.mean(0),
                               atol=1e-12)
    assert model.posedirs.shape == (486, 31425)
    layer = sl.TorchSMPLX(model)
    v = layer.shaped(torch.tensor([[0.0] * 10 + [1.0]]), torch.zeros(1, 10))[0].numpy()
    np.testing.assert_allclose(v, kid - kid.mean(0), atol=2e-6)
    # the leaves are the documented landmark vertices
    rest = model.rest_points()
    np.testing.assert_allclose(rest[55 + 15], arrays["v_template"][8990])   # mouth top
    assert rest[55, 2] > rest[10, 2] and rest[55, 0] > 0                     # left big toe


def test_skinning_matches_the_smplx_package(model):
    smplx = pytest.importorskip("smplx")
    oracle = smplx.SMPLX(MODEL, ext="npz", use_pca=False, flat_hand_mean=True, num_betas=10,
                         num_expression_coeffs=10, use_face_contour=False)
    rng = np.random.default_rng(3)
    n = 4
    aa = rng.normal(0, 0.4, (n, 55, 3))
    betas = rng.normal(0, 1, (n, 10))
    expr = rng.normal(0, 1, (n, 10))
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    with torch.no_grad():
        ref = oracle(global_orient=t(aa[:, 0]), body_pose=t(aa[:, 1:22].reshape(n, -1)),
                     jaw_pose=t(aa[:, 22]), leye_pose=t(aa[:, 23]), reye_pose=t(aa[:, 24]),
                     left_hand_pose=t(aa[:, 25:40].reshape(n, -1)),
                     right_hand_pose=t(aa[:, 40:55].reshape(n, -1)), betas=t(betas),
                     expression=t(expr), return_verts=True)
    layer = sl.TorchSMPLX(model, torch.float64)
    rot = torch.tensor(rotations.axis_angle_to_matrix(aa))
    b11 = torch.tensor(np.concatenate([betas, np.zeros((n, 1))], 1))
    v_shaped = layer.shaped(b11, torch.tensor(expr))
    rest = layer.rest_points(v_shaped)
    joints55, verts = layer.skin(rot, v_shaped, rest[:, :55])
    joints = layer.output_joints(joints55, verts)
    assert np.abs(verts.numpy() - ref.vertices.numpy()).max() < 5e-6
    assert joints.shape[1] == sl.NUM_OUTPUT_JOINTS == ref.joints.shape[1]
    assert np.abs(joints.numpy() - ref.joints.numpy()).max() < 5e-6


def _write(path, arrays, **changes):
    data = dict(arrays)
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    np.savez(path, **data)
    return str(path)


def test_bad_models_are_refused_with_one_clear_line(tmp_path, arrays):
    """The core loader's checks (with HybrIK-X's own on top), each one line."""
    from hybrik_blender.core.body.model import BodyModelError
    shutil.copy(KID, tmp_path / sl.KID_TEMPLATE_NAME)
    cases = {
        "missing 'posedirs'": dict(posedirs=None),
        "J_regressor has shape": dict(J_regressor=arrays["J_regressor"][:24]),
        "not the SMPL-X topology": dict(f=arrays["f"][::-1].copy()),
        "kinematic tree": dict(kintree_table=np.where(np.arange(55) == 5, [[3], [5]],
                                                      arrays["kintree_table"])),
        "NaN": dict(v_template=np.where(np.arange(10475)[:, None] == 5, np.nan,
                                        arrays["v_template"])),
        "15 components": dict(shapedirs=arrays["shapedirs"][:, :, :15]),
        "6890 vertices; an SMPL-X model has 10475": dict(v_template=arrays["v_template"][:6890]),
        "v_template has shape": dict(v_template=arrays["v_template"][:, :2]),
        "'lmk_faces_idx'": dict(lmk_faces_idx=arrays["lmk_faces_idx"][:10]),
    }
    for i, (msg, change) in enumerate(cases.items()):
        path = _write(tmp_path / f"bad{i}.npz", arrays, **change)
        with pytest.raises(BodyModelError, match=msg):
            sl.load_smplx_model(path)
    obj = tmp_path / "obj.npz"
    np.savez(obj, **{**arrays, "v_template": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(BodyModelError, match="v_template"):
        sl.load_smplx_model(str(obj))
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(BodyModelError, match="damaged"):
        sl.load_smplx_model(str(tmp_path / "junk.npz"))


def test_official_extra_keys_with_objects_are_not_read(tmp_path, arrays):
    """Real SMPLX_NEUTRAL.npz files carry pickled dicts (joint2num, part2num):
    they are skipped, never unpickled."""
    path = _write(tmp_path / "SMPLX_NEUTRAL.npz", arrays,
                  joint2num=np.array([{"pelvis": 0}], dtype=object))
    m = sl.load_smplx_model(path, KID)
    assert m.v_template.shape == (10475, 3)


def test_pickled_models_load_through_the_restricted_unpickler(tmp_path, arrays, model):
    import pickle
    path = tmp_path / "SMPLX_NEUTRAL.pkl"
    with open(path, "wb") as fh:
        pickle.dump(dict(arrays), fh, protocol=2)
    m = sl.load_smplx_model(str(path), KID)
    np.testing.assert_array_equal(m.shapedirs, model.shapedirs)
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"\x80\x02cos\nsystem\n(S'echo hacked'\ntR.")
    with pytest.raises(ValueError, match="refused"):
        sl.load_smplx_model(str(evil), KID)


def test_400_component_files_take_expression_from_300(tmp_path, arrays):
    rng = np.random.default_rng(0)
    sd = rng.normal(0, 1e-3, (10475, 3, 400))
    sd[:, :, :10] = arrays["shapedirs"][:, :, :10]
    sd[:, :, 300:310] = arrays["shapedirs"][:, :, 10:20]
    with pytest.warns(UserWarning, match="the first 10 are used"):
        m = sl.load_smplx_model(_write(tmp_path / "m.npz", arrays, shapedirs=sd), KID)
    np.testing.assert_array_equal(m.expr_dirs, arrays["shapedirs"][:, :, 10:20])


def test_children_template_is_found_or_asked_for(tmp_path, arrays):
    folder = tmp_path / "model_files" / "smplx"
    folder.mkdir(parents=True)
    path = _write(folder / "SMPLX_NEUTRAL.npz", arrays)
    with pytest.raises(sl.SMPLXModelError, match="--kid-template"):
        sl.load_smplx_model(path)
    shutil.copy(KID, tmp_path / "model_files" / sl.KID_TEMPLATE_NAME)   # HybrIK's layout
    assert sl.find_kid_template(path) == str(tmp_path / "model_files" / sl.KID_TEMPLATE_NAME)
    assert sl.load_smplx_model(path).shapedirs.shape[2] == 11
    np.save(tmp_path / "bad_kid.npy", np.zeros((6890, 3)))
    with pytest.raises(ValueError, match="bad_kid.npy: shape"):
        sl.load_smplx_model(path, str(tmp_path / "bad_kid.npy"))


def test_checkpoint_buffers_round_trip(model):
    state = sl.layer_state(model)
    assert sl.has_smplx_state(state)
    back = sl.smplx_model_from_state(state, "ck.pth")
    for key in ("v_template", "shapedirs", "expr_dirs", "posedirs", "J_regressor", "weights"):
        np.testing.assert_array_equal(getattr(back, key),
                                      np.asarray(getattr(model, key), np.float32), key)
    kid = np.load(KID)
    np.testing.assert_allclose(sl.kid_template_from_state(state), kid - kid.mean(0), atol=2e-6)
    bad = dict(state)
    bad["smplx_layer.shapedirs"] = bad["smplx_layer.shapedirs"][:, :, :10]
    with pytest.raises(sl.SMPLXModelError, match="shapedirs"):
        sl.smplx_model_from_state(bad, "ck.pth")
    bad = {k: v for k, v in state.items() if k != "smplx_layer.posedirs"}
    with pytest.raises(sl.SMPLXModelError, match="no embedded SMPL-X layer"):
        sl.smplx_model_from_state(bad, "ck.pth")


def test_theta_quaternions_are_unit_and_match_the_rotations():
    rot = torch.tensor(rotations.axis_angle_to_matrix(
        np.random.default_rng(1).normal(0, 1.2, (200, 3))))
    q = sl.rotation_to_quaternion(rot).numpy()
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1, atol=1e-9)
    np.testing.assert_allclose(rotations.quaternion_to_matrix(q), rot.numpy(), atol=1e-9)
