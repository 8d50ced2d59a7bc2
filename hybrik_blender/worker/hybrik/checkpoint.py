"""Loading official HybrIK checkpoints.

Accepted: a plain state_dict or ``{'model': state_dict}`` (optionally with a
``module.`` prefix from DataParallel), read by the bounded reader of
``core.formats.safe_pickle`` (the globals ``torch.load(weights_only=True)``
admits, no torch.load: see :func:`read_checkpoint`).
The architecture is recognised from the keys; checkpoints made before the
``decsigma`` head existed load without it. The SMPL buffers the checkpoints
embed (``smpl.*``) can serve as the body model.

HybrIK-X checkpoints (``hybrikx_rle_hrnet.pth``: ``hrnetx48_rle``,
``hybrikx_hrnet.pth``: ``hrnetx48``) are recognised the same way; they embed
the whole SMPL-X layer (``smplx_layer.*``, the children's shape direction
included), which serves as their body model unless an SMPL-X file is given.
"""
import os

import numpy as np
import torch

from ...core.body.model import _CHECKPOINT_KEYS, body_model_from_arrays
from ...core.formats import bounded, safe_pickle
from .nets import build_network
from .netsx import ARCHITECTURES_X, build_network_x


class CheckpointError(ValueError):
    """The file is not a usable HybrIK checkpoint; the message (one line)
    says why."""

    def __init__(self, message=""):
        super().__init__(bounded.one_line(message, 600))


_MARKERS = {   # a key only that architecture has
    "hrnet48_cam": "preact.final_layer.weight",
    "res34_cam": "deconv_layers.0.weight",
}
# HybrIK-X: checked first (its heatmap model also has preact.final_layer)
_MARKERS_X = {"hrnetx48": "preact.depth_layer.weight", "hrnetx48_rle": "fc_coord.weight"}
_BODY_PREFIXES = ("smpl.", "smplx_layer.")


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
        if not isinstance(k, str):
            raise CheckpointError(f"{name}: a state dict key is a {type(k).__name__}, not a "
                                  "name")
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out


def detect_architecture(keys, name="checkpoint"):
    keys = set(keys)
    found = [arch for arch, marker in _MARKERS_X.items() if marker in keys]
    if not found:
        found = [arch for arch, marker in _MARKERS.items() if marker in keys]
    if len(found) != 1:
        raise CheckpointError(
            f"{name}: not a HybrIK checkpoint (SMPL: ResNet-34 or HRNet-W48 with camera; "
            f"SMPL-X: HybrIK-X HRNet-W48); keys found: {_list(keys)}")
    return found[0]


def is_smplx(arch):
    return arch in ARCHITECTURES_X


def split_state(state, name="checkpoint"):
    """(arch, network state_dict, smpl arrays or None), checking the keys
    against the architecture; raises CheckpointError naming missing and
    unexpected keys."""
    arch = detect_architecture(state, name)
    net_state = {k: v for k, v in state.items() if not k.startswith(_BODY_PREFIXES)}
    with_sigma = any(k.startswith("decsigma.") for k in net_state)
    with torch.device("meta"):   # keys and shapes only: no weights initialised
        ref = (build_network_x(arch) if is_smplx(arch)
               else build_network(arch, with_sigma=with_sigma)).state_dict()
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
    if is_smplx(arch):
        layer = {k: v for k, v in state.items() if k.startswith("smplx_layer.")}
        return arch, net_state, (layer or None)
    smpl = {}
    for key, target in _CHECKPOINT_KEYS.items():
        if key in state:
            v = state[key]
            smpl[target] = v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)
    return arch, net_state, (smpl or None)


def _first_line(exc, limit=200):
    text = str(exc).strip()
    return bounded.one_line(text.splitlines()[0] if text else type(exc).__name__, limit)


def read_checkpoint(path):
    """(arch, network state_dict, smpl arrays or None) from a file; for a
    HybrIK-X checkpoint the third item holds its ``smplx_layer.*`` buffers.

    The file is read by the bounded reader of ``core.formats.safe_pickle``
    (zip or legacy format; the same restricted globals as
    ``torch.load(weights_only=True)``, tensor geometry checked against its
    storage, member sizes checked before reading), never by ``torch.load``.
    Tensors holding NaN or infinite values are refused here, by name."""
    path = os.fspath(path)
    name = bounded.shown(os.path.basename(path))
    try:
        ckpt = safe_pickle.TorchCheckpoint(path, name)
    except FileNotFoundError:
        raise CheckpointError(f"{name}: file not found") from None
    except OSError as exc:
        raise CheckpointError(f"{name}: cannot read the file "
                              f"({bounded.one_line(exc.strerror or exc, 80)})") from None
    except safe_pickle.UnsafePickleError as exc:
        raise CheckpointError(f"{name}: refused: {exc}") from None
    except bounded.LimitError as exc:
        raise CheckpointError(f"{name}: refused: {exc}") from None
    except MemoryError:
        raise CheckpointError(f"{name}: needs more memory than is available") from None
    except ValueError as exc:
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint "
                              f"({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{name}: not a readable PyTorch checkpoint "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None
    with ckpt:
        state = _read_tensors(ckpt, unwrap_state_dict(ckpt.obj, name), name)
    return split_state(state, name)


def _read_tensors(ckpt, state, name):
    """The state dict with every TensorRef read into a torch tensor: all
    geometries checked first, then the data, each float tensor checked for
    NaN and infinity."""
    refs = {k: v for k, v in state.items() if isinstance(v, safe_pickle.TensorRef)}
    total = 0
    for key, ref in refs.items():
        try:
            ref.check()
        except ValueError as exc:
            raise CheckpointError(f"{name}: tensor '{bounded.shown(key)}': {exc}") from None
        total += ref.nbytes
    if total > safe_pickle.MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{name}: its tensors take {total / 2**30:.1f} GiB; at most "
                              f"{safe_pickle.MAX_CHECKPOINT_BYTES >> 30} GiB")
    out = dict(state)
    for key, ref in refs.items():
        try:
            arr = ckpt.read(ref)
        except (ValueError, MemoryError) as exc:
            raise CheckpointError(f"{name}: tensor '{bounded.shown(key)}' is damaged "
                                  f"({_first_line(exc, 160)})") from None
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise CheckpointError(f"{name}: tensor '{bounded.shown(key)}' holds NaN or "
                                  "infinite values; the checkpoint is damaged")
        out[key] = torch.from_numpy(arr)
    return out


def body_model_from_checkpoint(smpl_arrays, source="checkpoint"):
    """The embedded ``smpl.*`` buffers as a core BodyModel."""
    if not smpl_arrays or "v_template" not in smpl_arrays:
        raise CheckpointError(f"{source}: has no embedded SMPL buffers; give an SMPL model file")
    return body_model_from_arrays(smpl_arrays, source=source)


def load_hybrik(path, body_model=None, device="cpu", **kw):
    """Checkpoint file -> ready :class:`.model.HybrIKPipeline` (or, for a
    HybrIK-X checkpoint, :class:`.modelx.HybrIKXPipeline`).

    ``body_model``: a core BodyModel (e.g. from the user's SMPL file via
    :func:`hybrik_blender.core.body.model.load_body_model`), or an
    :class:`.smplx_layer.SMPLXModel` for HybrIK-X; by default the body model
    the checkpoint embeds."""
    arch, net_state, extra = read_checkpoint(path)
    return _pipeline(path, arch, net_state, extra, body_model, device, **kw)


def _pipeline(path, arch, net_state, extra, body_model, device, **kw):
    name = os.path.basename(os.fspath(path))
    if is_smplx(arch):
        from . import smplx_layer
        from .modelx import HybrIKXPipeline
        if body_model is None:
            if not extra:
                raise CheckpointError(f"{name}: has no embedded SMPL-X layer; give an SMPL-X "
                                      "model file (SMPLX_NEUTRAL.npz)")
            body_model = smplx_layer.smplx_model_from_state(extra, name)
        elif not isinstance(body_model, smplx_layer.SMPLXModel):
            raise CheckpointError(f"{name}: a HybrIK-X (SMPL-X) checkpoint needs an SMPL-X "
                                  "body model, not an SMPL one")
        net = loaded_network(lambda: build_network_x(arch), net_state)
        return HybrIKXPipeline(net, body_model, device=device, **kw)
    from .model import HybrIKPipeline
    if body_model is None:
        body_model = body_model_from_checkpoint(extra, name)
    sigma = any(k.startswith("decsigma.") for k in net_state)
    net = loaded_network(lambda: build_network(arch, with_sigma=sigma), net_state)
    return HybrIKPipeline(net, body_model, device=device, **kw)


def loaded_network(build, state):
    """``build()`` with ``state`` loaded (strict), as ``load_state_dict``
    copies it: every tensor in the dtype the module declares. The module is
    built on the meta device and the checkpoint's tensors are assigned, so
    the random initialisation that loading overwrites never runs (a quarter
    of a second for ResNet-34, more for HRNet-W48); a module that keeps a
    tensor outside its state dict is built normally instead."""
    with torch.device("meta"):
        net = build()
    declared = net.state_dict()
    held = len(dict(net.named_parameters())) + len(dict(net.named_buffers()))
    if held == len(declared):
        net.load_state_dict({k: (torch.as_tensor(v).to(declared[k].dtype).contiguous()
                                 if k in declared else v) for k, v in state.items()},
                            assign=True)
        if not any(t.is_meta for t in (*net.parameters(), *net.buffers())):
            return net
    net = build()
    net.load_state_dict(state)
    return net


def load_pipeline(checkpoint, model_path=None, kid_template=None, device="cpu", **kw):
    """The capture's entry point: checkpoint file and optional body model file
    -> a ready pipeline for whichever architecture the checkpoint holds.

    SMPL checkpoints take an SMPL ``.pkl``/``.npz`` (default: the embedded
    ``smpl.*``). HybrIK-X checkpoints take an SMPL-X ``.npz``/``.pkl``
    (default: the embedded layer), with its children's template from
    ``kid_template``, else ``smplx_kid_template.npy`` next to the model (or
    one folder up: HybrIK's ``model_files`` layout), else the one the
    checkpoint's embedded layer holds. Raises CheckpointError or ValueError
    (body model problems) with a one-line message."""
    arch, net_state, extra = read_checkpoint(checkpoint)
    body = None
    if model_path and is_smplx(arch):
        body = smplx_model_for(model_path, kid_template, extra)
    elif model_path:
        from ...core.body.model import load_body_model
        body = load_body_model(model_path)
        if body.is_smplx:
            raise CheckpointError(f"{os.path.basename(model_path)} is an SMPL-X model, and "
                                  f"{os.path.basename(checkpoint)} is an SMPL HybrIK "
                                  "checkpoint: give an SMPL model, or a HybrIK-X checkpoint")
    return _pipeline(checkpoint, arch, net_state, extra, body, device, **kw)


def smplx_model_for(model_path, kid_template=None, layer_state=None):
    """An SMPL-X model file for a HybrIK-X checkpoint, with its children's
    template: ``kid_template``, else ``smplx_kid_template.npy`` next to the
    model (or one folder up), else the one of the checkpoint's embedded
    layer (``layer_state``, its ``smplx_layer.*`` buffers)."""
    from . import smplx_layer
    kid = kid_template or smplx_layer.find_kid_template(model_path)
    if kid is None and layer_state and smplx_layer.has_smplx_state(layer_state):
        kid = smplx_layer.kid_template_from_state(layer_state)
    return smplx_layer.load_smplx_model(model_path, kid)
