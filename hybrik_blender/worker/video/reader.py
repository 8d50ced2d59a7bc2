"""Streamed video decoding: frames are read one at a time, so memory stays
flat however long the clip is.

Sources: any container OpenCV's FFmpeg backend reads (mp4, mov, avi, mkv,
webm, ...) or a folder of images (png, jpg, bmp, tif, webp) in natural sort
order. Phone videos carry a rotation tag; OpenCV applies it while decoding
(CAP_PROP_ORIENTATION_AUTO), and the reported size is the rotated one.
Timestamps come from the container (CAP_PROP_POS_MSEC), so variable frame
rate clips keep their real timing in ``time_s``; ``fps`` is the nominal rate.
"""
import dataclasses
import os
import re

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class VideoError(ValueError):
    """The video cannot be read; the message says why."""


@dataclasses.dataclass
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    frame_count: int      # may be an estimate for some containers
    rotation: int = 0     # degrees applied while decoding

    @property
    def name(self):
        return os.path.basename(os.path.normpath(self.path))


def natural_key(name):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _image_files(folder):
    files = [f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return [os.path.join(folder, f) for f in sorted(files, key=natural_key)]


class VideoSource:
    """Iterate ``(frame_index, time_s, rgb uint8 HxWx3)`` over [start, end)."""

    def __init__(self, path, fps_for_images=30.0):
        self.path = os.fspath(path)
        name = os.path.basename(os.path.normpath(self.path))
        if not os.path.exists(self.path):
            raise VideoError(f"'{name}' does not exist")
        self._images = None
        if os.path.isdir(self.path):
            self._images = _image_files(self.path)
            if not self._images:
                raise VideoError(f"folder '{name}' holds no images")
            first = self._read_image(self._images[0])
            h, w = first.shape[:2]
            self.info = VideoInfo(self.path, w, h, float(fps_for_images), len(self._images))
            return
        cap = self._open()
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise VideoError(f"'{name}' has no decodable frame (corrupt, empty or not a video)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        rotation = int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0)
        cap.release()
        if not np.isfinite(fps) or fps <= 0 or fps > 1000:
            fps = 30.0
        h, w = frame.shape[:2]
        self.info = VideoInfo(self.path, w, h, float(fps), max(count, 1), rotation)

    def _open(self):
        cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            name = os.path.basename(self.path)
            raise VideoError(f"'{name}' cannot be opened as a video (unknown or corrupt file)")
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        return cap

    @staticmethod
    def _read_image(path):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise VideoError(f"image '{os.path.basename(path)}' cannot be read")
        return img

    def frames(self, start=0, end=None):
        start = max(0, int(start))
        if self._images is not None:
            stop = len(self._images) if end is None else min(int(end), len(self._images))
            for i in range(start, stop):
                img = self._read_image(self._images[i])
                if img.shape[:2] != (self.info.height, self.info.width):
                    raise VideoError(f"image '{os.path.basename(self._images[i])}' has a "
                                     "different size from the first image")
                yield i, i / self.info.fps, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            return
        cap = self._open()
        try:
            index = 0
            # Decode and drop frames before `start`: seeking is not frame-exact
            # in every container, and timestamps must stay the decoder's own.
            while end is None or index < end:
                ok = cap.grab()
                if not ok:
                    break
                if index >= start:
                    ok, frame = cap.retrieve()
                    if not ok or frame is None:
                        break
                    t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                    if not np.isfinite(t) or t < 0:
                        t = index / self.info.fps
                    yield index, t, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            cap.release()
