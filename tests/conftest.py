import os
import sys
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SYNTHETIC_MODEL = os.path.join(DATA, "synthetic_smpl_neutral.npz")

# Blender's user folder (preferences, installed extensions) goes to a private
# temporary folder, set before anything imports bpy: tests never touch the
# user's own Blender configuration.
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="hybrik-test-blender-"))


def synthetic_arrays(posedirs_scale=2e-3, seed=7):
    """The synthetic SMPL-format model. Its own posedirs are all zero, so tests
    that must exercise the pose correctives replace them with random ones."""
    with np.load(SYNTHETIC_MODEL, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    if posedirs_scale:
        rng = np.random.default_rng(seed)
        arrays["posedirs"] = rng.normal(0, posedirs_scale, arrays["posedirs"].shape)
    return arrays


@pytest.fixture(scope="session")
def model_arrays():
    return synthetic_arrays()


@pytest.fixture(scope="session")
def body_model(model_arrays):
    from hybrik_blender.core.body.model import body_model_from_arrays
    return body_model_from_arrays(model_arrays, source="synthetic")


SYNTHETIC_SMPLX_MODEL = os.path.join(DATA, "synthetic_smplx_neutral.npz")
SYNTHETIC_SMPLX_KID = os.path.join(DATA, "synthetic_smplx_kid_template.npy")


@pytest.fixture(scope="session")
def smplx_model():
    """The synthetic SMPL-X model (golden_x §1) with its children's template."""
    from hybrik_blender.core.body.model import load_body_model
    return load_body_model(SYNTHETIC_SMPLX_MODEL, kid_template=SYNTHETIC_SMPLX_KID)


def smplx_oracle(batch_size, kid=True, model_file=None):
    """The independent reference: ``smplx.SMPLX`` on the synthetic file, in
    float64, full-rotation hands (no PCA, no mean added)."""
    import torch
    import smplx
    kw = dict(age="kid", kid_template_path=SYNTHETIC_SMPLX_KID) if kid else {}
    return smplx.SMPLX(model_file or SYNTHETIC_SMPLX_MODEL, ext="npz", use_pca=False,
                       flat_hand_mean=True, dtype=torch.float64, batch_size=batch_size, **kw)
