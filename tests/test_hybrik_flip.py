"""Flip test: the intended one-bin shift, pair swaps and head merging."""
import torch

from hybrik_blender.worker.hybrik import decode


def test_flip_heatmap_shift_is_an_explicit_copy():
    logits = torch.randn(2, 29 * 64, 64, 64)
    out = decode.flip_heatmap_logits(logits)
    v = logits.reshape(2, 29, 64, 64, 64).flip(-1)[:, decode.SWAP_29]
    assert torch.equal(out[..., 1:], v[..., :-1])
    assert torch.equal(out[..., 0], v[..., 0])
    # the left hip (1) comes from the mirrored right hip (2)
    assert torch.equal(out[:, 1, ..., 1:], logits.reshape(2, 29, 64, 64, 64)[:, 2].flip(-1)[..., :-1])


def test_flip_of_a_symmetric_volume_moves_u_by_one_bin():
    # a peak at bin w in the mirrored crop maps back to bin 63 - w + 1
    logits = torch.full((1, 29, 64, 64, 64), -50.0)
    logits[..., 10, 20, 40] = 50.0
    uvd, _, _ = decode.soft_argmax(decode.flip_heatmap_logits(logits.reshape(1, -1, 64, 64)))
    torch.testing.assert_close(uvd[0, 0], torch.tensor([(63 - 40 + 1) / 64 - 0.5,
                                                        20 / 64 - 0.5, 10 / 64 - 0.5]))


def test_merge_flip_heads():
    out = {"shape": torch.ones(1, 10), "phi": torch.zeros(1, 23, 2), "sigma": torch.zeros(1, 29),
           "cam": torch.tensor([[1.0]])}
    flip = {"shape": 3 * torch.ones(1, 10), "phi": torch.zeros(1, 23, 2),
            "sigma": torch.zeros(1, 29), "cam": torch.tensor([[3.0]])}
    flip["phi"][0, 0] = torch.tensor([1.0, 1.0])     # joint 1 (left hip) in the mirrored crop
    flip["sigma"][0, 1] = 1.0
    m = decode.merge_flip("hrnet48_cam", out, flip)
    torch.testing.assert_close(m["shape"], 2 * torch.ones(1, 10))
    torch.testing.assert_close(m["phi"][0, 1], torch.tensor([0.5, -0.5]))   # -> right hip, sin negated
    assert float(m["sigma"][0, 2]) == 0.5
    torch.testing.assert_close(m["cam"], torch.tensor([[1.5]]))            # harmonic mean
    res = decode.merge_flip("res34_cam", {**out, "cam": torch.tensor([[1.0, 0.2, 0.1]])},
                            {**flip, "cam": torch.tensor([[1.0, 0.2, 0.3]])})
    torch.testing.assert_close(res["cam"], torch.tensor([[1.0, 0.0, 0.2]]))


def test_pipeline_flip_test_runs_for_both_heads():
    import os
    import numpy as np
    from tests.conftest import DATA
    from tests.test_hybrik_golden import golden, golden_body_model
    from hybrik_blender.worker.hybrik.model import build_pipeline
    from hybrik_blender.worker.synthetic import synthetic_state
    g = golden("res34_cam")
    state = synthetic_state(os.path.join(DATA, "checkpoint_keys_res34_cam.json"), "res34_cam", 1)
    pipe = build_pipeline("res34_cam", state, golden_body_model())
    x = torch.from_numpy(g["input_tensor"])
    plain = pipe(x, g["bbox_xyxy_input"][None], g["img_center"][None])
    both = pipe(x, g["bbox_xyxy_input"][None], g["img_center"][None], flip_test=True)
    for k in ("uvd", "rot_mats", "cam_root", "betas", "phi"):
        assert torch.isfinite(both[k]).all()
    # a mirrored crop predicts different values, so the average differs
    assert not torch.allclose(plain["betas"], both["betas"])
    r = both["rot_mats"][0].double().numpy()
    assert np.abs(r @ np.swapaxes(r, -1, -2) - np.eye(3)).max() < 1e-5
