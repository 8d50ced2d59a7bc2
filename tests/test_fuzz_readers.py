"""Fuzzing the bounded readers (issue 12).

1. A generated corpus of adversarial files (tests/adversarial.py) goes
   through the readers and the worker's entry points, each case in a forked
   child (tests/fuzz_runner.py) with 1 GiB of address space beyond what the
   interpreter had mapped and a 10 s timeout. Every case must end with its
   documented exit status (0 for the controls that must load), one clear
   ``error:`` line, no traceback, never a signal, and no input file changed.
2. Property-based tests (hypothesis) of the restricted unpickler, the
   torch-zip tensor reader, the .npz result reader and the result validator.

CI cost is bounded: the corpus is fixed, hypothesis is derandomized (seeded by
the test) with HYBRIK_FUZZ_EXAMPLES examples per property (default 40); set
it higher for a long run, e.g. ``HYBRIK_FUZZ_EXAMPLES=5000``, and
``HYBRIK_FUZZ_RANDOM=1`` to explore new examples instead of the seeded ones.
"""
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hybrik_blender.core.formats import bounded, safe_pickle
from hybrik_blender.core.formats.result import (ResultFormatError, load_tracks,
                                                validate_tracks)
from tests import adversarial as adv
from tests.conftest import ROOT

EXAMPLES = int(os.environ.get("HYBRIK_FUZZ_EXAMPLES", "40"))
RANDOM = bool(os.environ.get("HYBRIK_FUZZ_RANDOM"))  # explore new examples (not seeded)
TIMEOUT_S = 10
LIMIT_MB = 1024
fuzz = settings(max_examples=EXAMPLES, derandomize=not RANDOM, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    cases = adv.build_corpus(str(folder))
    return cases, adv.snapshot(cases), folder


def run_cases(mode, cases, python=sys.executable, limit_mb=LIMIT_MB, timeout=600):
    request = {"cases": [{"id": cid, "call": call} for cid, call in cases],
               "limit_mb": limit_mb, "timeout_s": TIMEOUT_S}
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    p = subprocess.run([python, os.path.join(ROOT, "tests", "fuzz_runner.py"), mode],
                       input=json.dumps(request), capture_output=True, text=True, env=env,
                       timeout=timeout, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    return {r["id"]: r for r in json.loads(p.stdout)}


def check_report(report, expected, error_stream="stderr"):
    """Every case: its exit status, no signal, within the time, one clear
    error line (none for the controls), no traceback."""
    problems = []
    for cid, want in expected.items():
        r = report[cid]
        text = r["stdout"] + r["stderr"]
        lines = [ln for ln in r[error_stream].splitlines() if ln.startswith(("error:", "MISSING"))]
        why = []
        if r.get("signal"):
            why.append(f"killed by signal {r['signal']}")
        elif r["rc"] != want:
            why.append(f"exit {r['rc']}, expected {want}")
        if "Traceback" in text:
            why.append("traceback")
        if want and len(lines) != 1:
            why.append(f"{len(lines)} error lines")
        if r["wall_s"] > TIMEOUT_S:
            why.append(f"{r['wall_s']} s")
        if why:
            problems.append(f"{cid}: {', '.join(why)}: {text.strip()[-400:]}")
    assert not problems, "\n".join(problems)


def test_corpus_through_the_core_readers(corpus):
    cases, before, _ = corpus
    chosen = [c for c in cases if c.kind != "video"]
    report = run_cases("core", [(c.name, [c.kind, c.path]) for c in chosen])
    check_report(report, {c.name: c.expect for c in chosen})
    assert adv.snapshot(cases) == before, "a reader changed an input file"
    print(f"\n{len(chosen)} corpus files through the core readers: "
          f"{sum(r['wall_s'] for r in report.values()):.1f} s, slowest "
          f"{max(r['wall_s'] for r in report.values()):.2f} s, largest RSS growth "
          f"{max(r['rss_growth_mb'] for r in report.values()):.0f} MB")


def test_corpus_through_the_worker(corpus, tmp_path):
    """`worker check` with each model and checkpoint, `worker capture` with
    each video, and with bad models, checkpoints and results to resume."""
    cases, before, _ = corpus
    jobs, expected, streams = [], {}, {}
    out = str(tmp_path / "take.npz")
    for c in cases:
        if c.kind == "body":
            jobs.append((f"check:{c.name}", ["check", "--smpl-model", c.path]))
        elif c.kind == "checkpoint":
            jobs.append((f"check:{c.name}", ["check", "--checkpoint", c.path]))
        elif c.kind == "video":
            jobs.append((f"capture:{c.name}", ["capture", c.path, "--out", out]))
        elif c.kind == "result" and c.expect:
            jobs.append((f"resume:{c.name}", ["capture", adv.VIDEO, "--out", c.path,
                                              "--resume"]))
            if not os.path.isfile(c.path):  # refused as an output first: bad input
                expected[jobs[-1][0]] = adv.USAGE
                continue
        else:
            continue
        expected[jobs[-1][0]] = c.expect
    # the capture path with a bad body model or checkpoint, a sample of each
    for c in [c for c in cases if c.kind == "body" and c.expect][::6]:
        jobs.append((f"capture:{c.name}", ["capture", adv.VIDEO, "--out", out,
                                           "--smpl-model", c.path]))
        expected[jobs[-1][0]] = c.expect
    for c in [c for c in cases if c.kind == "checkpoint"][::4]:
        jobs.append((f"capture-hybrik:{c.name}", ["capture", adv.VIDEO, "--out", out,
                                                  "--backend", "hybrik", "--checkpoint",
                                                  c.path, "--device", "cpu"]))
        expected[jobs[-1][0]] = c.expect
    report = run_cases("worker", jobs)
    check = {k: v for k, v in expected.items() if k.startswith("check:")}
    check_report(report, check, error_stream="stdout")  # check reports on stdout
    check_report(report, {k: v for k, v in expected.items() if k not in check})
    assert adv.snapshot(cases) == before, "an entry point changed an input file"
    assert not os.path.exists(out), "a failed capture wrote a result"


# --- hypothesis: the restricted unpickler ------------------------------------------------

leaves = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                   st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=20))
arrays = st.builds(
    lambda shape, dtype, seed: np.random.default_rng(seed).integers(
        0, 100, shape).astype(dtype),
    st.lists(st.integers(0, 4), max_size=3).map(tuple),
    st.sampled_from(["<f8", ">f4", "<i8", "u1", "?", "<f2", ">i4"]), st.integers(0, 99))
values = st.recursive(st.one_of(leaves, arrays), lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.tuples(kids, kids),
    st.dictionaries(st.text(max_size=8), kids, max_size=4)), max_leaves=20)


def _same(a, b):
    if isinstance(a, np.ndarray):
        b = safe_pickle.plain_value(b)
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b and type(a) is type(b)


@fuzz
@given(values, st.integers(0, 5))
def test_unpickler_round_trips_plain_data(value, protocol):
    """Whatever pickle writes of plain data and numeric arrays, at any
    protocol, the restricted unpickler reads back unchanged."""
    got = safe_pickle.load_smpl_pickle(pickle.dumps(value, protocol=protocol))
    assert _same(value, got)


SEED_PICKLE = pickle.dumps({"v_template": np.arange(12.0).reshape(4, 3), "f": [1, 2, (3, 4)],
                            "s": "x" * 10, "n": {"k": None}}, protocol=2)


def _load_model_bytes(tmp_path_factory, raw):
    """The body-model loader on `raw`: a model, or one BodyModelError line."""
    from hybrik_blender.core.body.model import BodyModelError, load_body_model
    path = tmp_path_factory.mktemp("pkl") / "model.pkl"
    path.write_bytes(raw)
    try:
        load_body_model(path)
    except BodyModelError as exc:
        assert "\n" not in str(exc)


@fuzz
@given(st.lists(st.tuples(st.integers(0, len(SEED_PICKLE) - 1), st.integers(0, 255)),
                min_size=1, max_size=8), st.integers(0, len(SEED_PICKLE)))
def test_unpickler_on_mutated_bytes_fails_cleanly(tmp_path_factory, flips, cut):
    """Random byte changes and truncations of a pickle: the loader gives a
    model or one BodyModelError, nothing else; the unpickler itself raises
    nothing but UnpicklingError for its own refusals."""
    data = bytearray(SEED_PICKLE[:cut] if cut > 3 else SEED_PICKLE)
    for pos, byte in flips:
        if pos < len(data):
            data[pos] = byte
    _load_model_bytes(tmp_path_factory, bytes(data))


OPCODES = [
    b"N", b"]", b"}", b")", b"(", b"l", b"t", b"d", b"a", b"e", b"s", b"u", b"0", b"2", b"1",
    b"\x85", b"\x86", b"\x87", b"\x88", b"\x89", b"K\x05", b"J\xff\xff\xff\xff", b"q\x00",
    b"h\x00", b"q\x01", b"h\x01", b"\x94", b"R", b"b", b"\x81", b"cnumpy\ndtype\n",
    b"ccopy_reg\n_reconstructor\n", b"c__builtin__\nset\n",
    b"cnumpy.core.multiarray\n_reconstruct\n", b"cnumpy.core.numeric\n_frombuffer\n",
    b"cnumpy.core.multiarray\nscalar\n", b"X\x02\x00\x00\x00f8", b"C\x01b", b"C\x08abcdefgh",
    b"\x8f", b"\x90", b"\x91", b"cchumpy.ch\nCh\n", b"cscipy.sparse.csc\ncsc_matrix\n",
    b"X\x0a\x00\x00\x00v_template", b"X\x01\x00\x00\x00x"]


@fuzz
@given(st.lists(st.sampled_from(OPCODES), max_size=40))
def test_unpickler_opcode_soup_fails_cleanly(tmp_path_factory, ops):
    """Random sequences of real opcodes and allowed globals."""
    _load_model_bytes(tmp_path_factory, b"\x80\x02" + b"".join(ops) + b".")


# --- hypothesis: the torch-zip tensor reader --------------------------------------------

class _Store:
    def __init__(self, data):
        self.data = data
        self.names = ["data/0"]

    def read(self, member, max_bytes, nbytes=None):
        assert member == "data/0"
        return self.data[:nbytes]


@fuzz
@given(st.integers(0, 64), st.integers(-8, 80),
       st.lists(st.integers(0, 5), max_size=4), st.data())
def test_tensor_reader_matches_explicit_indexing(numel, offset, size, data):
    """Any offset, size and stride (negative ones included): the reader
    either refuses with a ValueError, or returns exactly the elements that
    explicit index arithmetic on the storage gives."""
    stride = data.draw(st.lists(st.integers(-3, 20), min_size=len(size), max_size=len(size)))
    storage = np.arange(numel, dtype=np.float32)
    try:
        ref = safe_pickle.TensorRef(safe_pickle.StorageRef("<f4", "0", numel), offset,
                                    tuple(size), tuple(stride))
        got = ref.read(_Store(storage.tobytes()), "")
    except (ValueError, safe_pickle.UnsafePickleError):
        assert offset < 0 or min(stride, default=0) < 0 or (
            int(np.prod(size)) > 0 and offset + sum((s - 1) * t for s, t in zip(size, stride))
            >= numel) or (not size and offset >= numel)
        return
    want = np.empty(size, np.float32)
    for idx in np.ndindex(*size):
        want[idx] = storage[offset + sum(i * t for i, t in zip(idx, stride))]
    assert got.shape == tuple(size) and np.array_equal(got, want)


@fuzz
@given(st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
       st.integers(200, 4000))
def test_torch_zip_mutations_fail_cleanly(tmp_path_factory, flips, cut):
    """Byte flips and truncations of a small checkpoint through the body-model
    loader: a model or one BodyModelError, nothing else."""
    from hybrik_blender.core.body.model import BodyModelError, load_body_model
    ts, stg = adv._one_tensor((2, 3), (3, 1))
    raw = bytearray(adv.torch_zip(ts, stg)[:cut])
    for pos, byte in flips:
        if pos < len(raw):
            raw[pos] = byte
    path = tmp_path_factory.mktemp("pth") / "m.pth"
    path.write_bytes(bytes(raw))
    with pytest.raises(BodyModelError):
        load_body_model(path)


# --- hypothesis: the .npz result reader and the validator -------------------------------

@pytest.fixture(scope="module")
def result_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("res") / "take.npz"
    path.write_bytes(adv.npz_bytes(adv.result_arrays(6)))
    return path.read_bytes()


@fuzz
@given(st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6),
       st.integers(0, 1 << 16))
def test_result_file_mutations_fail_cleanly(tmp_path_factory, result_file, flips, cut):
    raw = bytearray(result_file[:cut] if cut < len(result_file) else result_file)
    for pos, byte in flips:
        if pos < len(raw):
            raw[pos] = byte
    path = tmp_path_factory.mktemp("r") / "take.npz"
    path.write_bytes(bytes(raw))
    try:
        takes = load_tracks(path)
    except ResultFormatError as exc:
        assert "\n" not in str(exc)
        return
    _assert_sane(takes)


def _assert_sane(takes):
    """What the validator promises about everything it accepts."""
    from hybrik_blender.core.formats import result as fmt
    for t in takes:
        assert 0 < t.fps <= fmt.MAX_FPS
        assert all(0 < v <= fmt.MAX_IMAGE_SIDE for v in t.image_size)
        fi = t.frame_index
        assert fi.dtype == np.int64 and np.all(np.diff(fi) > 0) and (not len(fi) or fi[0] >= 0)
        for key in ("rotmats", "betas", "root_translation", "joints29", "bbox", "confidence"):
            arr = getattr(t, key)
            assert arr.dtype == np.float32 and np.all(np.isfinite(arr)), key
        assert np.abs(t.root_translation).max(initial=0) <= fmt.MAX_METRES
        assert np.abs(t.betas).max(initial=0) <= fmt.MAX_BETA
        for v in t.extras.values():
            if v.dtype.kind == "f":
                assert np.all(np.isfinite(v.astype(np.float32)))


FIELD_NAMES = sorted(adv.result_arrays(2))
def _nasty(shape, dtype, fill):
    if dtype == "U5":
        return np.full(shape, "ab\ncd")
    with np.errstate(all="ignore"):
        return np.full(shape, fill).astype(dtype)


nasty_arrays = st.builds(
    _nasty,
    st.lists(st.integers(0, 4), max_size=4).map(tuple),
    st.sampled_from(["<f8", "<f4", "<i8", "<u8", "?", "U5", "<c8"]),
    st.sampled_from([0, 1, -1, 0.5, 1e300, -1e300, 2 ** 62, np.nan, np.inf, 3e38]))


@fuzz
@given(st.dictionaries(st.sampled_from(FIELD_NAMES + ["x_extra", "track", "camera_frame_index",
                                                       "camera_rotation", "camera_focal"]),
                       nasty_arrays, max_size=3))
def test_validator_refuses_or_returns_sane_takes(changes):
    """Replace fields of a valid result by arrays of any shape, dtype and
    value (NaN, inf, 1e300, 2^62, strings with newlines): the validator
    raises one ResultFormatError line or returns takes that keep every
    promise of the format."""
    arrays = dict(adv.result_arrays(4), **changes)
    try:
        takes = validate_tracks(arrays, "fuzz.npz")
    except ResultFormatError as exc:
        assert "\n" not in str(exc)
        return
    _assert_sane(takes)


# --- a few direct checks of the limits -------------------------------------------------------

def test_protocol5_model_pickle_loads(tmp_path):
    from hybrik_blender.core.body.model import load_body_model
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(pickle.dumps(adv.model_arrays(), protocol=5))
    assert load_body_model(path).v_template.shape == (6890, 3)


def test_bounded_zip_refuses_before_reading(tmp_path):
    path = tmp_path / "bomb.npz"
    path.write_bytes(adv.zip_bytes([("a.npy", adv.npy(np.zeros(4)), True)],
                                   lie={"a.npy": 3 << 30}))
    with bounded.BoundedZip(path) as zf:
        with pytest.raises(bounded.LimitError, match="declares 3.0 GiB"):
            zf.read_npy("a.npy", 1 << 20)
    path.write_bytes(adv.zip64_many_entries(1 << 40))
    with pytest.raises(bounded.LimitError, match="members"):
        bounded.BoundedZip(path)
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    with pytest.raises(bounded.LimitError, match="not a regular file"):
        bounded.BoundedZip(fifo)
    # what zipfile itself reads: the same archive stays consistent
    with zipfile.ZipFile(io.BytesIO(adv.npz_bytes({"a": np.arange(3)}))) as zf:
        assert zf.namelist() == ["a.npy"]
