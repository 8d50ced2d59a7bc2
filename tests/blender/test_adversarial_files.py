"""Blender stays up when the add-on and the headless import are given the
adversarial corpus (issue 12; tests/adversarial.py).

Two ways, each in a subprocess so that a crash is seen, not suffered:
* ``python -m hybrik_blender import`` on every bad result, body model,
  checkpoint and children's template, each in a forked child of one Blender
  (1 GiB of address space beyond Blender's own, 10 s): exit 2 with one
  ``error:`` line, never a signal or a traceback; the controls import;
* the add-on's Import Result operator on the same files, one after the
  other in ONE Blender: each reports an error, and a valid import works at
  the end.
"""
import json
import os
import subprocess
import sys

import pytest

from tests import adversarial as adv
from tests.conftest import ROOT

RUNNER = os.path.join(ROOT, "tests", "fuzz_runner.py")
CONTROLS = ("result_valid.npz", "result_unused_member_bomb.npz", "model_protocol5.pkl",
            "model_checkpoint_legacy.pth")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    cases = [c for c in adv.build_corpus(str(folder)) if c.kind != "video"]
    cases = [c for c in cases if c.expect or c.name in CONTROLS]
    valid = next(c.path for c in cases if c.name == "result_valid.npz")
    return cases, valid, adv.snapshot(cases)


def _run(mode, request, timeout=900):
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    p = subprocess.run([sys.executable, RUNNER, mode], input=json.dumps(request),
                       capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)
    return p


def test_headless_import_refuses_each_file_in_one_line(corpus, tmp_path):
    cases, valid, before = corpus
    out = str(tmp_path / "take.blend")
    jobs, expected = [], {}
    for c in cases:
        if c.kind == "result":
            call = ["import", c.path, "-o", out]
        elif c.kind in ("body", "checkpoint"):
            call = ["import", valid, "-o", out, "--smpl-model", c.path]
        else:  # a children's template, for the SMPL-X model
            call = ["import", valid, "-o", out, "--smpl-model", adv.SMPLX_MODEL,
                    "--kid-template", c.path]
        jobs.append({"id": c.name, "call": call})
        # the documented codes: 10 a bad result, 5 a bad body model or template
        expected[c.name] = 0 if c.name in CONTROLS else c.expect
    p = _run("blender", {"cases": jobs, "limit_mb": 1024, "timeout_s": 10})
    assert p.returncode == 0, p.stderr[-3000:]
    problems = []
    for r in json.loads(p.stdout):
        errors = [ln for ln in r["stderr"].splitlines() if ln.startswith("error:")]
        want = expected[r["id"]]
        if r.get("signal") or r["rc"] != want or "Traceback" in r["stderr"] \
                or (want and len(errors) != 1) or r["wall_s"] > 10:
            problems.append(f"{r['id']}: rc {r['rc']} signal {r.get('signal')} "
                            f"{r['wall_s']} s: {r['stderr'][-300:]}")
    assert not problems, "\n".join(problems)
    assert adv.snapshot(cases) == before, "the import changed an input file"


def test_import_operator_reports_each_file_and_blender_stays_up(corpus):
    cases, valid, before = corpus
    jobs = []
    for c in cases:
        if c.name in CONTROLS or c.kind == "kid":
            continue
        jobs.append({"id": c.name, "call": [c.path, ""] if c.kind == "result"
                     else [valid, c.path]})
    request = {"cases": jobs, "limit_mb": 1024, "timeout_s": 10,
               "final": [valid, adv.SMPL_MODEL]}
    p = _run("operator", request)
    lines = [json.loads(ln[len("@@hybrik-case "):]) for ln in p.stdout.splitlines()
             if ln.startswith("@@hybrik-case ")]
    done = {r["id"]: r for r in lines}
    missing = [j["id"] for j in jobs if j["id"] not in done]
    assert p.returncode == 0 and not missing, (
        f"Blender ended with {p.returncode} after {len(done)} cases; first not finished: "
        f"{missing[:1]}\n{p.stderr[-3000:]}")
    problems = [f"{r['id']}: rc {r['rc']} {r['wall_s']} s: {r['message'][-300:]}"
                for r in lines if r["id"] != "final"
                and (r["rc"] != 2 or not r["message"].startswith("Error: ")
                     or len(r["message"].strip().splitlines()) != 1 or r["wall_s"] > 10)]
    assert not problems, "\n".join(problems)
    assert done["final"]["rc"] == 0 and done["final"]["objects"] > 0
    assert adv.snapshot(cases) == before, "the import changed an input file"
