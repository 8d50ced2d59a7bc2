#!/usr/bin/env python
"""What bf16 costs in accuracy: the golden-recipe networks (deterministic
seed-1 weights, the synthetic body models) on every person of the real
photos (tests/data: astronaut, basketball1; .tools/media: basketball2 after
scripts/fetch_test_media.sh), bf16 against fp32, per architecture:

* uvd (256-px crop pixels), the camera-space joints (mm; the 29 SMPL ones,
  HybrIK-X's 71 points), the rotations (degrees; 24, HybrIK-X 55) and the
  vertices (mm, the root-relative mesh), median and max over crops and
  joints;
* for scale, the same deviation of fp32 itself when the image changes by
  image noise of 0.29 grey levels (std; the rounding of any 8-bit image) and
  of 1 grey level;
* whether bf16 is within the budget that ``--precision auto`` holds it to
  (joints <= 2 mm median and <= 5 mm max, rotations <= 1 degree max).

    python scripts/bench_precision.py [--arch res34_cam hrnet48_cam hrnetx48_rle hrnetx48]
"""
import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hybrik_blender.worker.hybrik import speed  # noqa: E402
from tests import precision as P  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", nargs="+",
                    default=["res34_cam", "hrnet48_cam", "hrnetx48_rle", "hrnetx48"])
    args = ap.parse_args()
    if not speed.cpu_bf16_native():
        print("note: this CPU has no native bfloat16; bf16 is emulated (slow, same numbers)")
    x, boxes, centres, names = P.photo_crops(P.PHOTOS + P.MORE_PHOTOS)
    print(f"{len(names)} people: {', '.join(names)}")
    cols = ("uvd_median_px", "uvd_max_px", "joints_median_mm", "joints_max_mm",
            "rotation_median_deg", "rotation_max_deg", "vertices_median_mm", "vertices_max_mm")
    head = ("uvd px med", "max", "joints mm med", "max", "rot deg med", "max",
            "verts mm med", "max")
    print(f"{'architecture':14s} {'compared with fp32':24s} " +
          " ".join(f"{h:>12s}" for h in head) + "  within budget")
    for arch in args.arch:
        state = P.golden_state(arch)
        fp32 = P.golden_pipeline(arch, "fp32", state=state)
        ref = P.compared(fp32, x, boxes, centres)
        rows = [("bf16", P.compared(P.golden_pipeline(arch, "bf16", state=state), x, boxes,
                                    centres))]
        for lsb in (0.29, 1.0):
            rows.append((f"fp32, image noise {lsb:g} LSB",
                         P.compared(fp32, P.input_noise(x, lsb), boxes, centres)))
        for what, got in rows:
            dev = speed.deviation(ref, got)
            print(f"{arch:14s} {what:24s} " + " ".join(f"{dev[c]:12.2f}" for c in cols)
                  + f"  {'yes' if speed.within_budget(dev) else 'no'}")
        del fp32, rows
        torch.cuda.empty_cache() if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
