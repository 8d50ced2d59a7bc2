"""Loading official HybrIK checkpoints.

Accepted: a plain state_dict or ``{'model': state_dict}`` (optionally with a
``module.`` prefix from DataParallel), read with ``weights_only=True``.
The architecture is recognised from the keys; checkpoints made before the
``decsigma`` head existed load without it. The SMPL buffers the checkpoints
embed (``smpl.*``) can serve as the body model.
"""
import os

import numpy as np
import torch

from ...core.body.model import _CHECKPOINT_KEYS, body_model_from_arrays
from .nets import build_network


class CheckpointError(ValueError):
    """The file is not a usable HybrIK checkpoint; the message says why."""


_MARKERS = {   # a key only that architecture has
    "hrnet48_cam": "preact.final_layer.weight",
    "res34_cam": "deconv_layers.0.weight",
}


def _list(keys, n=8):
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def unwrap_state_dict(obj, name="checkpoint"):
    """The state dict inside a loaded checkpoint, ``module.`` stripped."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{name}: holds a {type(obj).__name__}, not a state dict")
    out = {}
    for k, v in obj.items():
        k = str(k)
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def detect_architecture(keys, name="checkpoint"):
    keys = set(keys)
    found = [arch for arch, marker in _MARKERS.items() if marker in keys]
    if len(found) != 1:
        raise CheckpointError(
            f"{name}: not a HybrIK SMPL checkpoint (ResNet-34 or HRNet-W48 with camera); "
            f"keys found: {_list(keys)}")
    return found[0]


def split_state(state, name="checkpoint"):
    """(arch, network state_dict, smpl arrays or None), checking the keys
    against the architecture; raises CheckpointError naming missing and
    unexpected keys."""
    arch = detect_architecture(state, name)
    net_state = {k: v for k, v in state.items() if not k.startswith("smpl.")}
    with_sigma = any(k.startswith("decsigma.") for k in net_state)
    ref = build_network(arch, with_sigma=with_sigma).state_dict()
    missing = set(ref) - set(net_state)
    unexpected = set(net_state) - set(ref)
    wrong = [k for k in set(ref) & set(net_state)
             if tuple(np.shape(net_state[k])) != tuple(ref[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys: {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_list(unexpected)}")
        if wrong:
            parts.append("wrong shapes: " + _list(
                f"{k} {tuple(np.shape(net_state[k]))} != {tuple(ref[k].shape)}" for k in wrong))
        raise CheckpointError(f"{name}: does not match HybrIK {arch}; " + "; ".join(parts))
    smpl = {}
    for key, target in _CHECKPOINT_KEYS.items():
        if key in state:
            v = state[key]
            smpl[target] = v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)
    return arch, net_state, (smpl or None)


def read_checkpoint(path):
    """(arch, network state_dict, smpl arrays or None) from a file."""
    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{name}: file not found") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    return split_state(unwrap_state_dict(obj, name), name)


def body_model_from_checkpoint(smpl_arrays, source="checkpoint"):
    """The embedded ``smpl.*`` buffers as a core BodyModel."""
    if not smpl_arrays or "v_template" not in smpl_arrays:
        raise CheckpointError(f"{source}: has no embedded SMPL buffers; give an SMPL model file")
    return body_model_from_arrays(smpl_arrays, source=source)


def load_hybrik(path, body_model=None, device="cpu", **kw):
    """Checkpoint file -> ready :class:`.model.HybrIKPipeline`.

    ``body_model``: a core BodyModel (e.g. from the user's SMPL file via
    :func:`hybrik_blender.core.body.model.load_body_model`); by default the
    checkpoint's embedded SMPL buffers."""
    from .model import HybrIKPipeline
    arch, net_state, smpl = read_checkpoint(path)
    if body_model is None:
        body_model = body_model_from_checkpoint(smpl, os.path.basename(os.fspath(path)))
    net = build_network(arch, with_sigma=any(k.startswith("decsigma.") for k in net_state))
    net.load_state_dict(net_state)
    return HybrIKPipeline(net, body_model, device=device, **kw)
