"""Deterministic synthetic weights for the HybrIK networks (numpy recipe).

Follows the recipe of the golden reference data exactly: every tensor is a
function of its state_dict name, its shape and a seed, so tests and
benchmarks can run the real architectures without trained checkpoints.
``smpl.*`` and ``smplx_layer.*`` buffers are not generated.

HybrIK-X's regression model (``hrnetx48_rle``) follows the golden_x recipe:
its coordinate head's biases hold a rest-skeleton prior (:func:`rle_prior_biases`)
so that the regressed points form a T-posed body in the box.
"""
import json
import re
import zlib

import numpy as np

DEFAULT_GAIN = {"res34_cam": 1.2, "hrnet48_cam": 1.1, "hrnetx48_rle": 1.1, "hrnetx48": 1.1}
_HRNET_BACKBONE_RULES = [
    (r"re:(\.branches\.\d+\.\d+\.conv2|^preact\.layer1\.\d+\.conv3"
     r"|^preact\.incre_modules\.\d+\.\d+\.conv3)\.weight$", 0.3),
    (r"re:\.fuse_layers\.", 0.6)]
GAIN_RULES = {
    "res34_cam": [
        ("final_layer.weight", 20.0), ("decshape.weight", 0.25), ("decphi.weight", 0.25),
        ("decsigma.weight", 0.25), ("deccam.weight", 0.05),
        (r"re:^preact\.layer\d\.\d+\.conv2\.weight$", 0.3)],
    "hrnet48_cam": [
        ("preact.final_layer.weight", 3.0), ("decshape.weight", 0.05), ("decphi.weight", 0.05),
        ("decsigma.weight", 0.5), ("deccam.weight", 0.01),
        (r"re:(\.branches\.\d+\.\d+\.conv2|^preact\.layer1\.\d+\.conv3"
         r"|^preact\.incre_modules\.\d+\.\d+\.conv3)\.weight$", 0.3),
        (r"re:\.fuse_layers\.", 0.6)],
    "hrnetx48_rle": [
        ("fc_coord.weight", 0.004), ("fc_coord_mouthtop.weight", 0.004),
        ("decsigma.weight", 0.2), ("decsigma_mouthtop.weight", 0.2),
        ("decshape.weight", 0.05), ("decphi.weight", 0.05), ("deccam.weight", 0.01),
        *_HRNET_BACKBONE_RULES],
    "hrnetx48": [
        ("preact.final_layer.weight", 3.0), ("preact.depth_layer.weight", 3.0),
        ("decsigma.weight", 0.5), ("decshape.weight", 0.05), ("decphi.weight", 0.05),
        ("deccam.weight", 0.01), *_HRNET_BACKBONE_RULES],
}
INIT_CAM = {"res34_cam": [0.9, 0.0, 0.0], "hrnet48_cam": [0.9], "hrnetx48_rle": [0.9],
            "hrnetx48": [0.9]}
_NOT_GENERATED = ("smpl.", "smplx_layer.")


def gain_for(arch, name):
    for key, gain in GAIN_RULES[arch]:
        hit = re.search(key[3:], name) if key.startswith("re:") else name == key
        if hit:
            return gain
    return DEFAULT_GAIN[arch]


def _value(arch, name, shape, seed):
    u = np.random.default_rng(zlib.crc32(name.encode()) + seed).random(shape)
    if name.endswith("running_var"):
        return 0.5 + u
    if name.endswith("running_mean"):
        return 0.1 * (2 * u - 1)
    if len(shape) == 1:
        return 0.5 + u if name.endswith(".weight") else 0.1 * (2 * u - 1)
    fan_in = int(np.prod(shape[1:]))
    return gain_for(arch, name) * np.sqrt(3.0 / fan_in) * (2 * u - 1)


def rle_prior_biases(rest_points71):
    """The golden_x prior of ``hrnetx48_rle``'s coordinate head: the 71 rest
    points of the body model (55 regressed joints, 16 leaf vertices; metres,
    SMPL-X frame) made root-relative, turned into the camera frame (x, -y, -z)
    and divided by 2.2, the finger joints relative to their wrist.

    Returns (fc_coord.bias (210,), fc_coord_mouthtop.bias (3,)), float32."""
    p = np.asarray(rest_points71, np.float64)
    p = (p - p[0]) * np.array([1.0, -1.0, -1.0]) / 2.2
    p[25:40] -= p[20]
    p[40:55] -= p[21]
    return p[:70].reshape(-1).astype(np.float32), p[70].astype(np.float32)


def synthetic_state(manifest, arch, seed=1, rest_points71=None):
    """{name: numpy array} for every entry of a key manifest (a dict name ->
    {'shape': [...], ...}, or a path to its JSON file) but the body-model
    buffers. ``rest_points71``: for ``hrnetx48_rle``, the rest points that
    give the coordinate head's prior (see :func:`rle_prior_biases`); without
    them those biases are random like every other one."""
    if not isinstance(manifest, dict):
        with open(manifest, encoding="utf-8") as fh:
            manifest = json.load(fh)
    out = {}
    prior = {}
    if arch == "hrnetx48_rle" and rest_points71 is not None:
        prior = dict(zip(("fc_coord.bias", "fc_coord_mouthtop.bias"),
                         rle_prior_biases(rest_points71)))
    for name, info in manifest.items():
        shape = tuple(info["shape"])
        if name.startswith(_NOT_GENERATED):
            continue
        if name in prior:
            out[name] = prior[name]
            continue
        if name == "init_cam":
            out[name] = np.asarray(INIT_CAM[arch], np.float32)
        elif name == "init_shape":
            out[name] = np.zeros(shape, np.float32)
        elif name.endswith("num_batches_tracked"):
            out[name] = np.zeros(shape, np.int64)
        else:
            out[name] = _value(arch, name, shape, seed).astype(np.float32)
    return out


def manifest_from_network(net):
    """Key manifest (name -> shape/dtype) of a network's state_dict, in the
    golden files' format; lets benchmarks run without the JSON files."""
    return {k: {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
            for k, v in net.state_dict().items()}
