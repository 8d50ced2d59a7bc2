"""The capture's work off the critical path (README "Speed"): the soft-argmax
spread over threads, the model loading beside the tracker, the network built
without its random initialisation, the camera solve computed once."""
import threading

import numpy as np
import pytest
import torch

from hybrik_blender.worker import capture as cap
from hybrik_blender.worker.hybrik import decode
from hybrik_blender.worker.hybrik.speed import HeatmapLogits
from tests.test_worker_capture import photo_frames, write_video


@pytest.fixture
def two_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def _one_thread(fn, *args):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(n)


def test_soft_argmax_threads_are_bit_identical(two_threads):
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        lazy = HeatmapLogits(torch.randn(3, 32, 64, 64, generator=g),
                             torch.randn(29 * 64, 32, generator=g) * 0.3,
                             torch.randn(29 * 64, generator=g))
        for got, ref in zip(decode._lazy_marginal_sums(lazy),
                            _one_thread(decode._lazy_marginal_sums, lazy)):
            assert torch.equal(got, ref)
        logits = lazy.materialize().double()
        for got, ref in zip(decode._marginal_sums(logits),
                            _one_thread(decode._marginal_sums, logits)):
            assert torch.equal(got, ref)
    # outside inference mode too (the worker threads take the caller's mode)
    with torch.no_grad():
        plain = torch.randn(1, 29 * 64, 64, 64, generator=g)
        assert torch.equal(decode.soft_argmax(plain)[0],
                           _one_thread(decode.soft_argmax, plain)[0])
    assert torch.get_num_threads() == 2


def test_network_built_without_init_equals_a_loaded_one(tmp_path):
    from hybrik_blender.worker.hybrik import checkpoint as ck
    from hybrik_blender.worker.hybrik.nets import build_network
    from tests.helpers import write_random_checkpoint
    arch, state, _ = ck.read_checkpoint(write_random_checkpoint(tmp_path / "r.pth"))
    # float64 values are stored float32, as load_state_dict's copy does
    state = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    build = lambda: build_network(arch, with_sigma=True)  # noqa: E731
    net = ck.loaded_network(build, state)
    ref = build()
    ref.load_state_dict(state)
    a, b = net.state_dict(), ref.state_dict()
    assert a.keys() == b.keys()
    for k in b:
        assert a[k].dtype == b[k].dtype and a[k].is_contiguous() and torch.equal(a[k], b[k]), k
    assert not any(t.is_meta for t in (*net.parameters(), *net.buffers()))
    assert [p.requires_grad for p in net.parameters()] == [p.requires_grad
                                                          for p in ref.parameters()]
    with pytest.raises(RuntimeError):   # strict, as before
        ck.loaded_network(build, {k: v for k, v in state.items() if k != "fc1.weight"})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weight_is_found(bad):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    assert cap.non_finite_weight(net) is None
    with torch.no_grad():
        net[1].weight[1, 2] = bad
    assert cap.non_finite_weight(net) == "1.weight"


def test_model_error_comes_first_while_the_tracker_starts(tmp_path, monkeypatch):
    """A broken checkpoint is reported as before (exit code of the model),
    even when the tracker fails too, and the loading thread is gone."""
    clip = write_video(tmp_path / "c.mp4", photo_frames(6))
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    monkeypatch.setenv("HYBRIK_PERSON_DETECTOR", str(tmp_path / "missing.pb"))
    for people in (1, 3):
        with pytest.raises(cap.CaptureError) as err:
            cap.run_capture(cap.CaptureOptions(video=clip, out=str(tmp_path / "o.npz"),
                                               backend="hybrik", checkpoint=str(bad),
                                               people=people))
        assert err.value.code == cap.EXIT_MODEL, err.value
        assert not [t for t in threading.enumerate() if t.name == "hybrik-load"]
    # without the model problem the tracker's own error is the one raised
    with pytest.raises(cap.CaptureError) as err:
        cap.run_capture(cap.CaptureOptions(video=clip, out=str(tmp_path / "o.npz"), people=3))
    assert err.value.code == cap.EXIT_ENVIRONMENT


def test_camera_solve_runs_once():
    from hybrik_blender.worker.camera.solver import CameraSolver
    frames = photo_frames(8)
    solver = CameraSolver(320, 240, focal=300.0)
    for i, f in enumerate(frames[:6]):
        solver.feed(i, f[..., ::-1].copy(), [np.array([10.0 + i, 0, 250 + i, 240])])
    first = solver.finish()
    assert solver.finish() is first
    for i, f in enumerate(frames[6:], 6):
        solver.feed(i, f[..., ::-1].copy(), [np.array([10.0 + i, 0, 250 + i, 240])])
    again = solver.finish()
    assert again is not first and len(again.frame_index) == 8
