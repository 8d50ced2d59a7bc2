"""From raw network outputs to HybrIK's normalised joints and camera.

Units: ``uvd`` (B, 29, 3) in [-0.5, 0.5): u, v as fractions of the square box
width from its centre, d root-relative depth in units of ``DEPTH_FACTOR``
(2.2 m). The camera has a focal length of 1000 px at the 256 px crop.
"""
import torch

from ...core.body.skeleton import FLIP_PAIRS

NUM_JOINTS = 29
DEPTH_DIM = 64
FOCAL_LENGTH = 1000.0
INPUT_SIZE = 256.0
DEPTH_FACTOR = 2.2          # metres; the bounding 3-D box of the training data

# left/right pairs over the 29 joints (the 24 SMPL ones and the leaves)
FLIP_PAIRS_29 = tuple(FLIP_PAIRS) + ((25, 26), (27, 28))


def _swap_index(n, pairs, offset=0):
    idx = list(range(n))
    for a, b in pairs:
        idx[a - offset], idx[b - offset] = b - offset, a - offset
    return idx


SWAP_29 = _swap_index(29, FLIP_PAIRS_29)
SWAP_PHI = _swap_index(23, FLIP_PAIRS, offset=1)   # phi row k belongs to joint k+1


def _volume(logits):
    return logits.reshape(logits.shape[0], NUM_JOINTS, DEPTH_DIM, DEPTH_DIM, DEPTH_DIM)


def _expectation(mx, my, mz):
    r = torch.arange(DEPTH_DIM, dtype=mx.dtype, device=mx.device)
    return torch.stack([mx @ r, my @ r, mz @ r], -1) / DEPTH_DIM - 0.5


_POOL = {"pid": None, "size": 0, "pool": None}
MAX_DECODE_THREADS = 8


def _decode_pool(size):
    """Worker threads for the per-joint loop, each with one intra-op torch
    thread; made again after a fork (threads do not survive it)."""
    import os
    from concurrent.futures import ThreadPoolExecutor
    if _POOL["pid"] != os.getpid() or _POOL["size"] != size:
        if _POOL["pool"] is not None and _POOL["pid"] == os.getpid():
            _POOL["pool"].shutdown(wait=False)
        _POOL.update(pid=os.getpid(), size=size, pool=ThreadPoolExecutor(
            size, thread_name_prefix="hybrik-decode", initializer=torch.set_num_threads,
            initargs=(1,)))
    return _POOL["pool"]


def _per_joint(n, run):
    """run(ks, buf) over the joints 0..n-1, each joint in one thread.

    The caller's intra-op thread count is split into that many Python
    threads, each running single-threaded torch ops on every k-th joint with
    its own 1 MB buffer (torch releases the GIL inside an op): the same
    arithmetic per joint as one thread, so the result is bit-identical, on
    all cores. One thread per joint is what keeps the buffer in cache; one
    thread for all joints left the second core of a 2-core CPU idle for
    half of a bf16 ResNet-34 batch."""
    parts = max(1, min(torch.get_num_threads(), MAX_DECODE_THREADS, n))
    if parts == 1:
        run(range(n))
        return
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def part(ks):   # grad and inference mode are per thread: the caller's
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            run(ks)
    pool = _decode_pool(parts)
    for f in [pool.submit(part, range(s, n, parts)) for s in range(parts)]:
        f.result()


def _marginal_sums(logits):
    """exp(logit - max) of each joint's volume summed over D -> (n, H*W) and
    over H, W -> (n, D), with n = B*29.

    On the CPU one joint at a time (1 MB, in L2 cache), single-threaded
    per joint and the joints spread over the cores (:func:`_per_joint`): 4x
    less CPU time than whole-batch temporaries of 30 MB a crop, whose fresh
    pages cost more than the arithmetic. Elsewhere: batched."""
    from .speed import HeatmapLogits
    if isinstance(logits, HeatmapLogits):
        return _lazy_marginal_sums(logits)
    v = logits.reshape(-1, DEPTH_DIM, DEPTH_DIM * DEPTH_DIM)
    n = v.shape[0]
    if v.device.type != "cpu":
        e = torch.exp(v - v.amax((1, 2), keepdim=True))
        return e.sum(1), e.sum(2)
    hw = torch.empty(n, DEPTH_DIM * DEPTH_DIM, dtype=v.dtype)
    mz = torch.empty(n, DEPTH_DIM, dtype=v.dtype)

    def run(ks):
        buf = torch.empty(DEPTH_DIM, DEPTH_DIM * DEPTH_DIM, dtype=v.dtype)
        for i in ks:
            torch.sub(v[i], v[i].max(), out=buf)
            buf.exp_()
            torch.sum(buf, 0, out=hw[i])
            torch.sum(buf, 1, out=mz[i])
    _per_joint(n, run)
    return hw, mz


def _lazy_marginal_sums(lazy):
    """:func:`_marginal_sums` of :class:`.speed.HeatmapLogits`: each joint's
    64 logit channels computed (one matrix product) into a cached buffer and
    summed there."""
    feat, w, bias = lazy.features, lazy.weight, lazy.bias
    b, c = feat.shape[:2]
    x = feat.reshape(b, c, -1)
    hw = torch.empty(b * NUM_JOINTS, DEPTH_DIM * DEPTH_DIM, dtype=feat.dtype)
    mz = torch.empty(b * NUM_JOINTS, DEPTH_DIM, dtype=feat.dtype)

    def run(ks):
        buf = torch.empty(DEPTH_DIM, DEPTH_DIM * DEPTH_DIM, dtype=feat.dtype)
        for k in ks:
            i, j = divmod(k, NUM_JOINTS)
            rows = slice(j * DEPTH_DIM, (j + 1) * DEPTH_DIM)
            torch.addmm(bias[rows, None], w[rows], x[i], out=buf)
            buf.sub_(buf.max())
            buf.exp_()
            torch.sum(buf, 0, out=hw[k])
            torch.sum(buf, 1, out=mz[k])
    _per_joint(b * NUM_JOINTS, run)
    return hw, mz


def soft_argmax(logits):
    """Heatmap logits (B, 29*64, 64, 64) -> uvd (B, 29, 3), peak probability
    (B, 29), and the marginals over W, H, D (B, 29, 64) each.

    Per joint, a softmax over the whole 64^3 (D, H, W) volume; the full
    probability volume is never stored: the peak probability is 1 / sum."""
    b = logits.shape[0]
    hw, mz = _marginal_sums(logits)
    hw = hw.reshape(b, NUM_JOINTS, DEPTH_DIM, DEPTH_DIM)
    mz = mz.reshape(b, NUM_JOINTS, DEPTH_DIM)
    z = mz.sum(-1)
    mx = hw.sum(-2) / z[..., None]
    my = hw.sum(-1) / z[..., None]
    mz = mz / z[..., None]
    return _expectation(mx, my, mz), 1.0 / z, (mx, my, mz)


def flip_heatmap_logits(logits):
    """Logits of a horizontally mirrored crop, brought back to the original
    orientation: reverse W, swap left/right joints, then shift one bin
    toward +W keeping column 0.

    The reference does the shift in place with overlapping slices
    (``h[..., 1:] = h[..., :-1]``), whose result depends on memory layout and
    is undefined; this implements the intended shift with an explicit copy."""
    v = _volume(logits).flip(-1)[:, SWAP_29]
    out = torch.empty_like(v)
    out[..., 1:] = v[..., :-1]
    out[..., 0] = v[..., 0]
    return out


def soft_argmax_flip(logits, flip_logits):
    """Flip-test soft-argmax: mean of the two softmax volumes."""
    from .speed import HeatmapLogits
    logits, flip_logits = (t.materialize() if isinstance(t, HeatmapLogits) else t
                           for t in (logits, flip_logits))

    def probs(x):
        flat = x.reshape(x.shape[0], NUM_JOINTS, -1)
        return torch.softmax(flat, -1)
    p = (probs(_volume(logits)) + probs(flip_heatmap_logits(flip_logits))) / 2
    peak = p.amax(-1)
    p = p.reshape(p.shape[0], NUM_JOINTS, DEPTH_DIM, DEPTH_DIM, DEPTH_DIM)
    mx, my, mz = p.sum((2, 3)), p.sum((2, 4)), p.sum((3, 4))
    return _expectation(mx, my, mz), peak, (mx, my, mz)


def merge_flip(arch, out, flip_out):
    """Average the regression heads of the original and mirrored crops."""
    merged = dict(out)
    merged["shape"] = (out["shape"] + flip_out["shape"]) / 2
    fphi = flip_out["phi"][:, SWAP_PHI].clone()
    fphi[..., 1] = -fphi[..., 1]
    merged["phi"] = (out["phi"] + fphi) / 2
    if out.get("sigma") is not None:
        merged["sigma"] = (out["sigma"] + flip_out["sigma"][:, SWAP_29]) / 2
    if arch == "hrnet48_cam":   # harmonic mean of the scale
        merged["cam"] = 2 / (1 / flip_out["cam"] + 1 / out["cam"])
    else:                       # mean, with the mirrored x translation negated
        fc = flip_out["cam"].clone()
        fc[:, 1] = -fc[:, 1]
        merged["cam"] = (out["cam"] + fc) / 2
    return merged


def box_offset(boxes, img_center):
    """(B, 4) square boxes xyxy, (B, 2) principal points -> (B, 1, 2) box
    centre offset from the principal point in box widths/heights."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = ((boxes[:, 0] + boxes[:, 2]) * 0.5 - img_center[:, 0]) / w
    cy = ((boxes[:, 1] + boxes[:, 3]) * 0.5 - img_center[:, 1]) / h
    return torch.stack([cx, cy], 1)[:, None]


def camera_depth(scale):
    return FOCAL_LENGTH / (INPUT_SIZE * scale + 1e-9)


def back_project(uvd, scale, offset):
    """uvd (B, 29, 3), camera scale (B,), box offset (B, 1, 2) ->
    joints (B, 29, 3) in units of 2.2 m relative to the root, and the root in
    the camera frame (B, 3), metres (x right, y down, z forward)."""
    depth = camera_depth(scale)[:, None, None]
    z = uvd[..., 2:]
    xy_m = (uvd[..., :2] + offset) * (INPUT_SIZE / FOCAL_LENGTH) * (z * DEPTH_FACTOR + depth)
    xyz = torch.cat([xy_m / DEPTH_FACTOR, z], -1)
    root = xyz[:, 0] * DEPTH_FACTOR
    root = torch.cat([root[:, :2], root[:, 2:] + depth[:, 0]], -1)
    return xyz - xyz[:, :1], root


def refine_scale(uvd, sigma, scale, offset, fk_joints):
    """HRNet's depth refinement: the weighted least-squares depth for which
    the 24 SMPL joints of a first IK solution reproject onto the predicted
    u, v; weights max(0, 1 - 10 sigma). Returns the new scale (B,); where the
    system is singular the given scale is kept.

    ``fk_joints`` (B, 24, 3): FK joints (metres, root-centred) of the naive
    IK of the skeleton back-projected with ``scale``."""
    z0 = uvd[:, :1, 2:] * DEPTH_FACTOR
    depth = camera_depth(scale)[:, None, None]
    uv = uvd[:, :24, :2] + offset
    # root offset in x, y, z without the camera distance, as the reference
    root = torch.cat([uv[:, :1] * (INPUT_SIZE / FOCAL_LENGTH) * (z0 + depth), z0], -1)
    pts = fk_joints + root
    w = (1 - 10 * sigma[:, :24]).clamp_min(0)
    k = INPUT_SIZE / FOCAL_LENGTH
    a = (w[..., None] * uv).reshape(uv.shape[0], -1)                        # (B, 48)
    rhs = (w[..., None] * (pts[..., :2] - k * uv * pts[..., 2:])).reshape(uv.shape[0], -1)
    ata = (a * a).sum(-1)
    res = (a * rhs).sum(-1) / torch.where(ata > 0, ata, torch.ones_like(ata))
    new = 1.0 / res
    ok = (ata > 0) & torch.isfinite(new)
    return torch.where(ok, new, scale)
