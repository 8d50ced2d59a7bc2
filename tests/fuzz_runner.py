"""Run readers and entry points on untrusted files, each in a forked child
under an address-space limit and a timeout (issue 12).

    python tests/fuzz_runner.py MODE < request.json > report.json

MODE picks what the parent imports once before forking (so that each case
costs a fork, not an interpreter start):

* ``core``: numpy and hybrik_blender.core only; a case is ``[kind, path]``
  with kind result, body, checkpoint (core's torch-zip reader) or kid
  (a children's template for the synthetic SMPL-X model);
* ``worker``: torch, OpenCV, mediapipe and the worker; a case is the argv of
  ``python -m hybrik_blender.worker``;
* ``blender``: bpy and the headless import; a case is the argv of
  ``python -m hybrik_blender``;
* ``operator``: no fork: one Blender runs the add-on's Import Result
  operator on every case ``[result, body model]`` in turn (see
  :func:`_operator_loop`), to show that it stays up.

The request is ``{"cases": [{"id": ..., "call": [...]}], "limit_mb": 1024,
"timeout_s": 10}``. Each child gets ``RLIMIT_AS`` = the address space the
parent had mapped when it forked + ``limit_mb``, an alarm after
``timeout_s`` (and SIGKILL from the parent 5 s later), stdin from
/dev/null. The report has, per case: the exit status or the signal, the
wall time, the child's peak RSS growth over the parent's, and its stdout and
stderr.
"""
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _vm_kib(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _prepare(mode):
    """Import what the mode needs; returns run(call) -> exit status."""
    if mode == "core":
        import numpy as np  # noqa: F401
        from hybrik_blender.core.body.model import BodyModelError, load_body_model, \
            with_kid_template
        from hybrik_blender.core.formats.result import ResultFormatError, load_tracks
        smplx = load_body_model(os.path.join(ROOT, "tests", "data",
                                             "synthetic_smplx_neutral.npz"))

        def run(call):
            kind, path = call
            try:
                if kind == "result":
                    load_tracks(path)
                elif kind in ("body", "checkpoint"):
                    load_body_model(path)
                elif kind == "kid":
                    with_kid_template(smplx, path)
                else:
                    raise SystemExit(f"unknown kind {kind}")
            except ResultFormatError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 10
            except BodyModelError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 5
            return 0
        return run
    if mode == "worker":
        import cv2  # noqa: F401
        import torch  # noqa: F401
        import mediapipe  # noqa: F401
        from hybrik_blender.worker import capture, cli  # noqa: F401
        from hybrik_blender.worker.hybrik import checkpoint  # noqa: F401
        return lambda call: cli.main(list(call))
    if mode == "blender":
        import bpy  # noqa: F401
        from hybrik_blender import __main__ as entry
        from hybrik_blender.blender import headless  # noqa: F401
        return lambda call: entry.main(list(call))
    raise SystemExit(f"unknown mode {mode}")


def _child(run, call, limit_bytes, timeout_s, out_path, err_path):
    try:
        fd_in = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd_in, 0)
        for fd, path in ((1, out_path), (2, err_path)):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(f, fd)
            os.close(f)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(timeout_s)
        status = run(call)
        status = 0 if status is None else int(status)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported as a traceback, status 1
        traceback.print_exc()
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)


MARK = "@@hybrik-case "


def _operator_loop(request, limit, timeout_s):
    """One Blender for all cases, no fork: the add-on's Import Result
    operator on each (result, body model) pair, in turn. Each outcome is one
    marked JSON line on stdout as soon as it is known, so a crash shows
    which case it was; at the end a valid import must still work."""
    import bpy
    import hybrik_blender
    base_vm = _vm_kib("VmSize") << 10
    resource.setrlimit(resource.RLIMIT_AS, (base_vm + limit, base_vm + limit))
    hybrik_blender.register()
    out = sys.__stdout__

    def emit(entry):
        out.write(MARK + json.dumps(entry) + "\n")
        out.flush()

    for case in request["cases"]:
        result, model = case["call"]
        t0 = time.monotonic()
        signal.alarm(timeout_s)
        entry = {"id": case["id"]}
        try:
            got = bpy.ops.hybrik.import_result(filepath=result, body_model_path=model or "")
            entry.update(rc=0 if got == {"FINISHED"} else 2, message=str(sorted(got)))
        except RuntimeError as exc:  # an ERROR report surfaces here in the background
            entry.update(rc=2, message=str(exc))
        except BaseException:  # noqa: BLE001
            entry.update(rc=1, message=traceback.format_exc())
        signal.alarm(0)
        entry["wall_s"] = round(time.monotonic() - t0, 3)
        emit(entry)
    final = request.get("final")
    if final:
        got = bpy.ops.hybrik.import_result(filepath=final[0], body_model_path=final[1] or "")
        emit({"id": "final", "rc": 0 if got == {"FINISHED"} else 2,
              "objects": len(bpy.data.objects)})
    hybrik_blender.unregister()
    return 0


def main(argv=None):
    mode = (argv or sys.argv[1:])[0]
    request = json.load(sys.stdin)
    limit = int(request.get("limit_mb", 1024)) << 20
    timeout_s = int(request.get("timeout_s", 10))
    if mode == "operator":
        return _operator_loop(request, limit, timeout_s)
    run = _prepare(mode)
    report = []
    scratch = tempfile.mkdtemp(prefix="hybrik-fuzz-")
    for case in request["cases"]:
        out_path = os.path.join(scratch, "out")
        err_path = os.path.join(scratch, "err")
        base_vm = _vm_kib("VmSize") << 10
        base_rss = _vm_kib("VmRSS")
        sys.stdout.flush()
        sys.stderr.flush()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(run, case["call"], base_vm + limit, timeout_s, out_path, err_path)
        killed = False
        while True:
            got, status, usage = os.wait4(pid, os.WNOHANG)
            if got:
                break
            if time.monotonic() - t0 > timeout_s + 5 and not killed:
                os.kill(pid, signal.SIGKILL)
                killed = True
            time.sleep(0.005)
        wall = time.monotonic() - t0
        entry = {"id": case["id"], "wall_s": round(wall, 3),
                 "rss_growth_mb": round(max(0, usage.ru_maxrss - base_rss) / 1024, 1),
                 "limit_mb": limit >> 20}
        if os.WIFSIGNALED(status):
            entry["signal"] = os.WTERMSIG(status)
            entry["rc"] = None
        else:
            entry["rc"] = os.WEXITSTATUS(status)
        for key, path in (("stdout", out_path), ("stderr", err_path)):
            with open(path, "rb") as fh:
                entry[key] = fh.read()[-20000:].decode("utf-8", "replace")
        report.append(entry)
    json.dump(report, sys.__stdout__)
    sys.__stdout__.flush()
    return 0


if __name__ == "__main__":
    status = main()
    os._exit(status)  # bpy's own shutdown is unreliable (see tests/blender/conftest.py)
