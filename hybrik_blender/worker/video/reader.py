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
import struct

import numpy as np

from ...core.formats import bounded

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Limits, checked before anything is decoded: the pixels of one image or
# video frame (8192 x 8192), its sides, and the bytes of one image file.
MAX_IMAGE_PIXELS = 1 << 26
MAX_IMAGE_SIDE = 65536
MAX_IMAGE_FILE_BYTES = 512 << 20
MAX_FOLDER_IMAGES = 1 << 20
# OpenCV's own decoder limit, as a second guard (read when it first decodes)
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_IMAGE_PIXELS))

import cv2  # noqa: E402


class VideoError(ValueError):
    """The video cannot be read; the message (one line) says why."""

    def __init__(self, message=""):
        super().__init__(bounded.one_line(message, 600))


def _be(data, pos, n):
    return int.from_bytes(data[pos:pos + n], "big")


def _le(data, pos, n):
    return int.from_bytes(data[pos:pos + n], "little")


def image_header_size(data):
    """(width, height) of a PNG, JPEG, BMP, TIFF or WebP image from its
    header bytes alone; None when the format is not recognised or the header
    is damaged."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            return _be(data, 16, 4), _be(data, 20, 4)
        if data[:2] == b"\xff\xd8":
            pos = 2
            while pos + 4 <= len(data):
                if data[pos] != 0xFF:
                    return None
                marker = data[pos + 1]
                if marker == 0xFF:
                    pos += 1
                    continue
                if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
                    pos += 2
                    continue
                length = _be(data, pos + 2, 2)
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    if pos + 9 > len(data):
                        return None
                    return _be(data, pos + 7, 2), _be(data, pos + 5, 2)
                if length < 2:
                    return None
                pos += 2 + length
            return None
        if data[:2] == b"BM" and len(data) >= 26:
            if _le(data, 14, 4) == 12:
                return _le(data, 18, 2), _le(data, 20, 2)
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            order = "<" if data[:2] == b"II" else ">"
            ifd = struct.unpack(order + "I", data[4:8])[0]
            count = struct.unpack(order + "H", data[ifd:ifd + 2])[0]
            found = {}
            for i in range(min(count, 4096)):
                tag, kind, _, value = struct.unpack(order + "HHI4s", data[ifd + 2 + 12 * i:
                                                                       ifd + 14 + 12 * i])
                if tag in (256, 257):
                    found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"),
                                               value[:2] if kind == 3 else value)[0]
            if 256 in found and 257 in found:
                return found[256], found[257]
            return None
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            chunk = data[12:16]
            if chunk == b"VP8 ":
                return _le(data, 26, 2) & 0x3FFF, _le(data, 28, 2) & 0x3FFF
            if chunk == b"VP8L":
                bits = _le(data, 21, 4)
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8X":
                return _le(data, 24, 3) + 1, _le(data, 27, 3) + 1
        return None
    except (struct.error, IndexError):
        return None


def check_frame_size(width, height, what):
    """Refuse a frame larger than MAX_IMAGE_PIXELS (or a side above
    MAX_IMAGE_SIDE) before it is decoded."""
    if width <= 0 or height <= 0:
        raise VideoError(f"{what} declares a size of {width} x {height}")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise VideoError(f"{what} is {width} x {height} pixels; at most {MAX_IMAGE_PIXELS:,} "
                         f"pixels (8192 x 8192) and {MAX_IMAGE_SIDE} a side are decoded")


def read_image(path):
    """One image file as BGR uint8, its size checked from the header before
    it is decoded; FIFOs and other non-regular files are refused."""
    name = bounded.shown(os.path.basename(path))
    try:
        data = bounded.read_file(path, MAX_IMAGE_FILE_BYTES, "image")
    except bounded.LimitError as exc:
        raise VideoError(str(exc)) from None
    except OSError as exc:
        raise VideoError(f"image '{name}' cannot be read ({exc.strerror or exc})") from None
    size = image_header_size(data)
    if size is None:
        raise VideoError(f"image '{name}' cannot be read (not a PNG, JPEG, BMP, TIFF or WebP "
                         "image, or its header is damaged)")
    check_frame_size(*size, f"image '{name}'")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise VideoError(f"image '{name}' cannot be read")
    return img


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
    files = []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(entry.name)
                if len(files) > MAX_FOLDER_IMAGES:
                    raise VideoError(f"folder '{bounded.shown(os.path.basename(folder))}' "
                                     f"holds more than {MAX_FOLDER_IMAGES} images")
    return [os.path.join(folder, f) for f in sorted(files, key=natural_key)]


class VideoSource:
    """Iterate ``(frame_index, time_s, rgb uint8 HxWx3)`` over [start, end)."""

    def __init__(self, path, fps_for_images=30.0):
        self.path = os.fspath(path)
        name = bounded.shown(os.path.basename(os.path.normpath(self.path)))
        if not os.path.exists(self.path):
            raise VideoError(f"'{name}' does not exist")
        self._images = None
        if not os.path.isdir(self.path):
            try:  # a FIFO, socket or device would block or never end
                bounded.check_regular(self.path, "video")
            except bounded.LimitError as exc:
                raise VideoError(str(exc)) from None
            except OSError as exc:
                raise VideoError(f"'{name}' cannot be read ({exc.strerror or exc})") from None
        if os.path.isdir(self.path):
            self._images = _image_files(self.path)
            if not self._images:
                raise VideoError(f"folder '{name}' holds no images")
            first = self._read_image(self._images[0])
            h, w = first.shape[:2]
            self.info = VideoInfo(self.path, w, h, float(fps_for_images), len(self._images))
            return
        cap = self._open()
        width, height = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
        if width > 0 and height > 0:  # the container's size, before any frame is decoded
            try:
                check_frame_size(int(width), int(height), f"video '{name}'")
            except VideoError:
                cap.release()
                raise
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
            name = bounded.shown(os.path.basename(self.path))
            raise VideoError(f"'{name}' cannot be opened as a video (unknown or corrupt file)")
        cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        return cap

    @staticmethod
    def _read_image(path):
        return read_image(path)

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
