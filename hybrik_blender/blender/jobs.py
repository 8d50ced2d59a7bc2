"""Background worker processes, in plain Python (no bpy).

The add-on starts the capture worker (and the environment set-up) as child
processes and polls them from a ``bpy.app.timers`` callback; this module
holds everything that does not touch Blender data, so tests drive it
directly (bpy's module build runs no timers).

A job reads the child's stdout on a thread: JSON lines become events, any
other line is kept as log text. ``poll()`` is called on Blender's main thread
and returns the current :class:`JobState`; only there is Blender data
touched. ``cancel()`` asks the worker to stop (cancel file, then SIGTERM, then
SIGKILL after a grace period); every live job is stopped when the add-on is
disabled or Blender exits, and the worker also watches Blender's process id,
so no worker outlives Blender.
"""
import atexit
import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

_LIVE = set()
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE_NAME = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass
class JobState:
    running: bool = True
    stage: str = "starting"
    done: int = 0
    total: int = 0
    fps: float = 0.0
    eta_s: float = 0.0
    returncode: int = None
    error: str = ""
    final: dict = None

    @property
    def factor(self):
        return min(1.0, self.done / self.total) if self.total else 0.0

    def summary(self):
        if self.error:
            return self.error
        if not self.running:
            return "finished" if self.returncode == 0 else f"stopped ({self.returncode})"
        if self.total and self.stage == "capture":
            eta = f", {self.eta_s:.0f} s left" if self.eta_s else ""
            return f"{self.stage}: {self.done}/{self.total} frames, {self.fps:.1f} fps{eta}"
        return self.stage


class Job:
    """A child process that reports progress as JSON lines on stdout."""

    def __init__(self, args, env=None, cwd=None, cancel_file=None, kill_after_s=10.0):
        self.args = list(args)
        self.cancel_file = cancel_file
        self.kill_after_s = kill_after_s
        self.state = JobState()
        self.log = collections.deque(maxlen=200)
        self._events = collections.deque()
        self._cancel_at = None
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, bufsize=1, env=env, cwd=cwd)
        _LIVE.add(self)
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, True),
                                          daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False),
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self, stream, is_stdout):
        for line in stream:
            line = line.rstrip("\n")
            if is_stdout and line.startswith("{"):
                try:
                    self._events.append(json.loads(line))
                    continue
                except ValueError:
                    pass
            if line.strip():
                self.log.append(line)

    def _drain(self):
        while self._events:
            ev = self._events.popleft()
            kind = ev.get("event")
            if kind == "progress":
                self.state.stage = ev.get("stage", self.state.stage)
                for key in ("done", "total", "fps", "eta_s"):
                    if key in ev:
                        setattr(self.state, key, ev[key])
            elif kind == "done":
                self.state.final = ev
            elif kind == "error":
                self.state.error = ev.get("message", "the worker failed")

    def poll(self):
        """Apply new events; return the state (main thread only)."""
        self._drain()
        if self._cancel_at and self.proc.poll() is None:
            if time.monotonic() - self._cancel_at > self.kill_after_s:
                self.proc.kill()
        code = self.proc.poll()
        if code is not None and self.state.running:
            for t in self._threads:
                t.join(timeout=2)
            self._drain()
            self.state.running = False
            self.state.returncode = code
            if code != 0 and not self.state.error:
                errors = [line for line in self.log if line.startswith("error:")]
                self.state.error = (errors[-1][len("error:"):].strip() if errors else
                                    f"the worker stopped unexpectedly (exit code {code})"
                                    + (f": {self.log[-1]}" if self.log else ""))
            _LIVE.discard(self)
        return self.state

    def cancel(self):
        """Ask the worker to stop within a batch; kill it if it does not."""
        if self.proc.poll() is not None:
            return
        if self.cancel_file:
            try:
                open(self.cancel_file, "w").close()
            except OSError:
                pass
        try:
            self.proc.send_signal(signal.SIGTERM)
        except OSError:
            pass
        self._cancel_at = time.monotonic()

    def stop(self, timeout=5.0):
        """Cancel and wait (used when Blender exits or the add-on goes away)."""
        self.cancel()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(2)
        _LIVE.discard(self)

    def wait(self, timeout=None):
        """Block until the process ends (tests, headless use); returns the state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.proc.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("worker did not finish in time")
            time.sleep(0.05)
            self.poll()
        return self.poll()


def stop_all():
    for job in list(_LIVE):
        job.stop()


atexit.register(stop_all)


def worker_env():
    """Environment for a worker process: the add-on's package importable as
    ``hybrik_blender``, unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_PARENT + (os.pathsep + env["PYTHONPATH"]
                                          if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def capture_args(python, video, out, backend="mediapipe", checkpoint="", smpl_model="",
                 device="auto", start=0, end=None, batch_size=16, resume=False, hands=False,
                 people=1, max_people=None, camera="auto", kid_template="",
                 precision="auto"):
    """The worker command line for a capture (`people`: 1, N, or 0 for all;
    `precision`: fp32, bf16 or auto, the hybrik network's)."""
    args = [python, "-m", f"{PACKAGE_NAME}.worker", "capture", video, "--out", out,
            "--backend", backend, "--device", device, "--batch-size", str(batch_size),
            "--parent-pid", str(os.getpid())]
    if precision and precision != "auto":
        args += ["--precision", precision]
    if checkpoint:
        args += ["--checkpoint", checkpoint]
    if smpl_model:
        args += ["--smpl-model", smpl_model]
    if kid_template:
        args += ["--kid-template", kid_template]
    if start:
        args += ["--start", str(int(start))]
    if end:
        args += ["--end", str(int(end))]
    if resume:
        args.append("--resume")
    if camera and camera != "auto":
        args += ["--camera", camera]
    if hands:
        args.append("--hands")
    if people != 1:
        args += ["--people", "all" if not people else str(int(people))]
    if max_people:
        args += ["--max-people", str(int(max_people))]
    return args


def start_capture(python, video, out, **kw):
    args = capture_args(python, video, out, **kw)
    return Job(args, env=worker_env(), cancel_file=out + ".cancel")


def sample_video(worker_python):
    """The sample clip, looked up in the worker's environment (which is where
    the set-up installs it); a plain file lookup, nothing heavy is imported."""
    from ..core.samples import carphone_path
    path = carphone_path()
    if path or os.path.abspath(worker_python) == os.path.abspath(sys.executable):
        return path
    code = (f"from {PACKAGE_NAME}.core.samples import carphone_path; "
            "print(carphone_path() or '')")
    try:
        out = subprocess.run([worker_python, "-c", code], env=worker_env(),
                             capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out or None


def check_args(python, checkpoint="", smpl_model=""):
    args = [python, "-m", f"{PACKAGE_NAME}.worker", "check"]
    if checkpoint:
        args += ["--checkpoint", checkpoint]
    if smpl_model:
        args += ["--smpl-model", smpl_model]
    return args


def run_check(python, checkpoint="", smpl_model="", timeout=120):
    """Run ``worker check``: (ok, text). Plain words on what is missing."""
    if not python or not os.path.exists(python):
        return False, f"the worker Python '{python}' does not exist; set it or click Set up"
    try:
        p = subprocess.run(check_args(python, checkpoint, smpl_model), env=worker_env(),
                           capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"the worker Python cannot run: {exc}"
    text = p.stdout.strip()
    if p.returncode not in (0, 5, 7):  # 5: a bad model file, 7: software missing
        err = [line for line in p.stderr.splitlines() if line.strip()]
        return False, f"the worker cannot start: {err[-1] if err else p.returncode}"
    return p.returncode == 0, text


def setup_args(python, venv_dir, requirements):
    """A job that creates the worker venv and installs its requirements."""
    script = (
        "import subprocess, sys, venv, os\n"
        "d, req = sys.argv[1], sys.argv[2]\n"
        "print('{\"event\": \"progress\", \"stage\": \"creating the environment\", "
        "\"done\": 0, \"total\": 2}', flush=True)\n"
        "venv.EnvBuilder(with_pip=True, clear=False).create(d)\n"
        "py = os.path.join(d, 'Scripts' if os.name == 'nt' else 'bin', "
        "'python.exe' if os.name == 'nt' else 'python')\n"
        "print('{\"event\": \"progress\", \"stage\": \"installing packages (several minutes)\", "
        "\"done\": 1, \"total\": 2}', flush=True)\n"
        "r = subprocess.run([py, '-m', 'pip', 'install', '--disable-pip-version-check', "
        "'-r', req], stdout=sys.stderr, stderr=sys.stderr)\n"
        "nodeps = os.path.join(os.path.dirname(req), 'requirements-nodeps.txt')\n"
        "if not r.returncode and os.path.exists(nodeps):\n"
        "    r = subprocess.run([py, '-m', 'pip', 'install', '--disable-pip-version-check', "
        "'--no-deps', '-r', nodeps], stdout=sys.stderr, stderr=sys.stderr)\n"
        "if r.returncode:\n"
        "    print('error: installing the worker packages failed (see the log above)', "
        "file=sys.stderr); sys.exit(r.returncode)\n"
        "print('{\"event\": \"done\", \"python\": \"' + py.replace(chr(92), '/') + '\"}', "
        "flush=True)\n")
    return [python, "-c", script, venv_dir, requirements]


def venv_python(venv_dir):
    if os.name == "nt":
        return os.path.join(venv_dir, "Scripts", "python.exe")
    return os.path.join(venv_dir, "bin", "python")


def blender_python():
    """The Python interpreter that runs Blender (to create the worker venv)."""
    return sys.executable
