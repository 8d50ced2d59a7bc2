"""Person box -> normalised 256x256 network input, as HybrIK's test transform.

The tight box is made square on its longer side about its centre, enlarged
1.25x, and warped to 256x256 with bilinear interpolation (black border). The
network then sees RGB in [0, 1] minus (0.406, 0.457, 0.480), divided by
(0.225, 0.224, 0.229): those are HybrIK's training statistics, keep them.
"""
import cv2
import numpy as np

INPUT_SIZE = 256
SCALE_MULT = 1.25
MEAN = (0.406, 0.457, 0.480)
STD = (0.225, 0.224, 0.229)


def expand_box(tight_xyxy, scale_mult=SCALE_MULT):
    """Tight (x0, y0, x1, y1) -> (centre (2,), size (2,), square box xyxy (4,)),
    float32 like the reference."""
    x0, y0, x1, y1 = (float(v) for v in tight_xyxy)
    w, h = x1 - x0, y1 - y0
    centre = np.array([x0 + w * 0.5, y0 + h * 0.5], np.float32)
    side = max(w, h)
    size = np.array([side, side], np.float32) * scale_mult
    box = np.array([centre[0] - size[0] * 0.5, centre[1] - size[1] * 0.5,
                    centre[0] - size[0] * 0.5 + size[0], centre[1] - size[1] * 0.5 + size[1]],
                   np.float32)
    return centre, size, box


def crop_affine(centre, size, out=INPUT_SIZE):
    """2x3 image -> crop affine mapping the box width onto ``out`` pixels.

    Built from three float32 point pairs with cv2.getAffineTransform, as the
    reference does, so the warp is bit-identical."""
    c = np.asarray(centre, np.float32)
    half = np.float32(size[0]) * np.float32(-0.5)
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = c
    src[1] = c + np.array([0, half], np.float32)
    dst[0] = [out * 0.5, out * 0.5]
    dst[1] = dst[0] + np.array([0, out * -0.5], np.float32)
    for pts in (src, dst):   # third point: the second one turned 90 deg about the first
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]], np.float32)
    return cv2.getAffineTransform(src, dst)


def crop_person(image_rgb, tight_xyxy):
    """One uint8 RGB image (H, W, 3) and a tight person box ->
    (crop (256, 256, 3) uint8, square box xyxy (4,) float32, affine (2, 3))."""
    centre, size, box = expand_box(tight_xyxy)
    m = crop_affine(centre, size)
    crop = cv2.warpAffine(image_rgb, m, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR)
    return crop, box, m


def normalize_crops(crops, device="cpu", dtype=None):
    """uint8 crops (B, 256, 256, 3) RGB -> network input (B, 3, 256, 256),
    ``dtype`` (default float32), on ``device`` (CUDA: the uint8 crops are
    copied from pinned memory without blocking, then normalised on the GPU).

    torch is imported here, not with the module: the capture's decoding
    thread crops (cv2 only) while the model, and torch, load beside it."""
    import torch
    from .speed import to_device
    dtype = torch.float32 if dtype is None else dtype
    x = crops if torch.is_tensor(crops) else torch.as_tensor(np.ascontiguousarray(crops))
    x = to_device(x, device)
    if x.dim() == 3:
        x = x[None]
    x = x.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    mean = torch.tensor(MEAN, device=x.device).reshape(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).reshape(1, 3, 1, 1)
    x = ((x - mean) / std).to(dtype)
    # the permuted layout is channels_last already, which the GPU network
    # takes; the CPU's float32 network takes NCHW
    return x.contiguous(memory_format=torch.channels_last if x.is_cuda else
                        torch.contiguous_format)
