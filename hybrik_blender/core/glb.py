"""Read and rewrite binary glTF (.glb) files: animation sampler times (no bpy).

A GLB is a 12-byte header (magic ``glTF``, version 2, total length) and
chunks of (length, type, data): first the JSON document, then an optional
binary buffer (``BIN``). Chunks are 4-byte aligned, JSON padded with spaces,
BIN with zeros. Sampler inputs are float32 SCALAR accessors holding seconds.
"""
import json
import struct

import numpy as np

MAGIC, JSON_CHUNK, BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
MAX_GLB_BYTES = 4 << 30


class GlbError(ValueError):
    """Not a GLB file this module can read."""


def read_glb(data):
    """(json document, bytearray of the BIN chunk or None) from GLB bytes."""
    if len(data) < 20:
        raise GlbError("too short for a GLB file")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != MAGIC or version != 2:
        raise GlbError("not a glTF 2.0 binary file")
    if length != len(data):
        raise GlbError(f"the GLB header says {length} bytes, the file has {len(data)}")
    doc, binary, offset = None, None, 12
    while offset + 8 <= length:
        size, kind = struct.unpack_from("<II", data, offset)
        start, end = offset + 8, offset + 8 + size
        if end > length:
            raise GlbError("a GLB chunk runs past the end of the file")
        if kind == JSON_CHUNK and doc is None:
            doc = json.loads(bytes(data[start:end]).decode("utf-8"))
        elif kind == BIN_CHUNK and binary is None:
            binary = bytearray(data[start:end])
        offset = end + (-end % 4)
    if doc is None:
        raise GlbError("the GLB file has no JSON chunk")
    return doc, binary


def write_glb(doc, binary):
    """GLB bytes of a document and its BIN chunk."""
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), JSON_CHUNK) + text
    if binary is not None:
        payload = bytes(binary) + b"\0" * (-len(binary) % 4)
        chunks += struct.pack("<II", len(payload), BIN_CHUNK) + payload
    return struct.pack("<III", MAGIC, 2, 12 + len(chunks)) + chunks


def _accessor_view(doc, binary, index):
    """(offset, stride, count) of a float32 SCALAR accessor in the BIN chunk."""
    acc = doc["accessors"][index]
    if acc.get("componentType") != 5126 or acc.get("type") != "SCALAR":
        raise GlbError(f"accessor {index} is not float32 scalars")
    view = doc["bufferViews"][acc["bufferView"]]
    if view.get("buffer", 0) != 0:
        raise GlbError("sampler times outside the GLB's own buffer")
    offset = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    stride = view.get("byteStride", 4)
    count = int(acc["count"])
    if offset + stride * (count - 1) + 4 > len(binary):
        raise GlbError(f"accessor {index} runs past the binary chunk")
    return offset, stride, count


def sampler_times(doc, binary, index):
    offset, stride, count = _accessor_view(doc, binary, index)
    return np.ndarray((count,), dtype="<f4", buffer=binary, offset=offset,
                      strides=(stride,)).astype(np.float64)


def animation_inputs(doc):
    return sorted({s["input"] for a in doc.get("animations", []) for s in a["samplers"]})


def retime(doc, binary, exported_fps, true_fps):
    """Sampler times written at `exported_fps` (seconds = frame / that) set to
    frame / true_fps, in place; min and max follow."""
    for index in animation_inputs(doc):
        offset, stride, count = _accessor_view(doc, binary, index)
        frames = sampler_times(doc, binary, index) * exported_fps
        whole = np.round(frames)
        frames = np.where(np.abs(frames - whole) < 1e-3, whole, frames)
        times = (frames / true_fps).astype("<f4")
        view = np.ndarray((count,), dtype="<f4", buffer=binary, offset=offset,
                          strides=(stride,))
        view[:] = times
        acc = doc["accessors"][index]
        acc["min"], acc["max"] = [float(times.min())], [float(times.max())]


def fix_animation_times(path, exported_fps, true_fps, name=None):
    """Rewrite a GLB file: sampler times at true_fps, and (given `name`) the
    animations named after it. Nothing is written when nothing changes."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_GLB_BYTES + 1)
    if len(data) > MAX_GLB_BYTES:
        raise GlbError(f"{path} is too large")
    doc, binary = read_glb(data)
    changed = False
    if abs(exported_fps - true_fps) > 1e-9 * true_fps and binary is not None:
        retime(doc, binary, exported_fps, true_fps)
        changed = True
    if name is not None:
        for anim in doc.get("animations", []):
            if anim.get("name") != name:
                anim["name"] = name
                changed = True
    if changed:
        with open(path, "wb") as fh:
            fh.write(write_glb(doc, binary))
    return doc
