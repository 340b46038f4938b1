"""The Triton server that the nvidia-pytriton wheel bundles, started on a model repository.

    python -m runtimes.triton_server --setup                          # make ./.triton-env once
    python -m runtimes.triton_server --repo model_repository/         # serve on 127.0.0.1:8000 (HTTP), 8001 (gRPC)

nvidia-pytriton 0.7.0 carries a real tritonserver (2.51) that starts on a CPU-only machine, with
the Python backend only: it serves repositories written with `exporters.triton --backend python`
(our ONNX Runtime or OpenVINO adapter inside Triton), not the native onnxruntime, openvino or
tensorrt backends, which come with NVIDIA's tritonserver containers.

The server gets its own virtual environment (--env, default $FRCNN_TRITON_ENV or ./.triton-env),
because the Python-backend stub needs numpy < 2 there (with numpy 2 it returned empty outputs),
while the toolkit itself runs numpy 2. What the stub needs to start, as found here:
- its packages are found through `python` on PATH, so the environment's bin/ goes first on PATH
  (PYTHONPATH alone does not make them visible);
- it links libpython: LD_LIBRARY_PATH gets the environment interpreter's LIBDIR (a pyenv or
  other non-system Python keeps it outside the linker's search path), and the wheel's own
  libraries (nvidia_pytriton.libs), which the copied stub no longer finds by its RPATH;
- the stub must match the environment's Python version: pytriton ships one per version, and the
  backend folder made here holds the right one.
The environment sees this checkout's runtimes package through a .pth file (--setup writes it).

The server listens on 127.0.0.1 only and has metrics off (Triton's metrics port would listen on
every address). TritonServer is the same thing for tests: free ports, a bounded wait until
ready, stopped by its PID.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ENV_VARIABLE = "FRCNN_TRITON_ENV"
DEFAULT_ENV = Path(".triton-env")
# what the server environment holds; numpy < 2 for the Python-backend stub (see above)
SERVER_PACKAGES = ("nvidia-pytriton==0.7.0", "numpy<2", "onnxruntime>=1.20", "onnx>=1.17", "openvino>=2025.1",
                   "opencv-python-headless>=4.8")
MARKER = "frcnn-triton-env.json"  # written last by setup_env: what was installed, for whom
SOURCE_PTH = "frcnn_deploy_source.pth"
SOURCE = Path(__file__).resolve().parents[1]  # the checkout whose runtimes package the server imports
HOST = "127.0.0.1"


class TritonServerError(RuntimeError):
    """The server environment is missing or broken, or the server did not start; one line."""


# ------------------------------------------------------------------ the server's environment
def default_env() -> Path:
    return Path(os.environ.get(ENV_VARIABLE) or DEFAULT_ENV)


def env_python(env: Path) -> Path:
    return Path(env) / "bin" / "python"


def env_problem(env: Path) -> str | None:
    """Why `env` is not a ready server environment for this checkout (one line), or None."""
    marker = Path(env) / MARKER
    if not env_python(env).exists() or not marker.is_file():
        return f"{env}: no Triton server environment (make it with python -m runtimes.triton_server --setup)"
    try:
        recorded = json.loads(marker.read_text())
    except ValueError:
        recorded = {}
    if recorded.get("packages") != list(SERVER_PACKAGES):
        return f"{env}: made for other package pins (re-run python -m runtimes.triton_server --setup)"
    return None


def setup_env(env: Path, log=print) -> Path:
    """Make (or refresh) the server environment: a venv with SERVER_PACKAGES and a .pth file that
    puts this checkout's packages on its path. Idempotent: pip skips what is installed."""
    env = Path(env)
    if not env_python(env).exists():
        log(f"creating {env} ...")
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    log(f"installing {' '.join(SERVER_PACKAGES)} into {env} ...")
    subprocess.run([str(env_python(env)), "-m", "pip", "install", "-q", *SERVER_PACKAGES], check=True)
    site = Path(_ask(env, "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
    (site / SOURCE_PTH).write_text(f"{SOURCE}\n")
    (env / MARKER).write_text(json.dumps({"packages": list(SERVER_PACKAGES), "source": str(SOURCE)}, indent=2))
    return env


def _ask(env: Path, code: str) -> str:
    """What the environment's interpreter prints for `code`."""
    done = subprocess.run([str(env_python(env)), "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise TritonServerError(f"{env}: its Python failed ({(done.stderr.strip().splitlines() or ['?'])[-1]})")
    return done.stdout.strip()


_LAYOUT = """
import json, sys, sysconfig
from pathlib import Path
import pytriton
root = Path(pytriton.__file__).parent / "tritonserver"
print(json.dumps({"server": str(root / "bin" / "tritonserver"), "backend": str(root / "backends" / "python"),
                  "libs": str(root.parent.parent / "nvidia_pytriton.libs"),
                  "stub": str(root / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}"
                              / "triton_python_backend_stub"),
                  "libdir": sysconfig.get_config_var("LIBDIR") or ""}))
"""


def server_layout(env: Path, backends: Path) -> dict:
    """Where the bundled tritonserver lies, with a backend folder made under `backends` that holds
    the Python backend and the stub for the environment's Python version."""
    problem = env_problem(env)
    if problem:
        raise TritonServerError(problem)
    layout = json.loads(_ask(env, _LAYOUT))
    python = Path(backends) / "python"
    python.mkdir(parents=True, exist_ok=True)
    for source in Path(layout["backend"]).iterdir():
        if source.is_file():
            shutil.copy2(source, python / source.name)
    if not Path(layout["stub"]).is_file():
        raise TritonServerError(f"nvidia-pytriton has no Python-backend stub for this Python ({layout['stub']})")
    shutil.copy2(layout["stub"], python / "triton_python_backend_stub")
    layout["backends"] = str(backends)
    return layout


# ------------------------------------------------------------------ the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    """Whether any process of process group `pgid` is still there."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of the group exists
        return True
    return True


class TritonServer:
    """The bundled tritonserver on `repo`, on 127.0.0.1; use as a context manager.

        with TritonServer("model_repository") as server:
            det = runtimes.load(server.url("frcnn_tiny"))
    """

    def __init__(self, repo, env=None, http_port: int | None = None, grpc_port: int | None = None,
                 models: list[str] | None = None, log_file=None, start_timeout: float = 180.0,
                 exit_timeout: int = 5):
        """models: load only these (explicit model control), else every model in the repository.
        log_file: where the server's output goes (default: a temporary file, quoted on a failed start).
        exit_timeout: how long the server waits, once told to stop, for in-flight requests and open
        client connections (Triton's default of 30 s is spent entirely on a client's idle keep-alive)."""
        self.repo, self.env = Path(repo).resolve(), Path(env or default_env())
        self.http_port, self.grpc_port = http_port or free_port(), grpc_port or free_port()
        self.models, self.start_timeout, self.exit_timeout = models, start_timeout, exit_timeout
        self.log_file = Path(log_file) if log_file else None
        self.process: subprocess.Popen | None = None
        self._workdir: tempfile.TemporaryDirectory | None = None

    def url(self, model: str, protocol: str = "http") -> str:
        """The runtimes.load URL of `model` on this server."""
        if protocol == "grpc":
            return f"triton+grpc://{HOST}:{self.grpc_port}/{model}"
        return f"triton://{HOST}:{self.http_port}/{model}"

    def command(self, layout: dict) -> list[str]:
        cmd = [layout["server"], f"--model-repository={self.repo}", f"--backend-directory={layout['backends']}",
               f"--http-address={HOST}", f"--http-port={self.http_port}",
               f"--grpc-address={HOST}", f"--grpc-port={self.grpc_port}", "--allow-metrics=false",
               f"--exit-timeout-secs={self.exit_timeout}"]
        if self.models is not None:
            cmd += ["--model-control-mode=explicit", *(f"--load-model={m}" for m in self.models)]
        return cmd

    def environment(self, layout: dict) -> dict:
        env = dict(os.environ)
        env["PATH"] = f"{self.env.resolve() / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        # the copied stub no longer finds the wheel's own libraries through its relative RPATH
        libs = [layout["libs"], layout["libdir"], env.get("LD_LIBRARY_PATH", "")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
        env.pop("PYTHONPATH", None)  # the project's path would bring numpy 2 into the stub
        return env

    def start(self) -> "TritonServer":
        if not self.repo.is_dir():
            raise TritonServerError(f"{self.repo}: no such model repository")
        self._workdir = tempfile.TemporaryDirectory(prefix="frcnn-triton-")
        layout = server_layout(self.env, Path(self._workdir.name) / "backends")
        log_path = self.log_file or Path(self._workdir.name) / "tritonserver.log"
        with open(log_path, "wb") as log:
            # a session of its own: the server and its stub processes can be stopped together
            self.process = subprocess.Popen(self.command(layout), env=self.environment(layout), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        self._log_path = log_path
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Poll /v2/health/ready until it answers 200, the server exits or start_timeout passes."""
        deadline = time.monotonic() + self.start_timeout
        ready = f"http://{HOST}:{self.http_port}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonServerError(f"tritonserver exited with code {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(ready, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:  # not listening yet, or not ready (503)
                pass
            time.sleep(0.5)
        raise TritonServerError(f"tritonserver was not ready within {self.start_timeout:g}s: {self.log_tail()}")

    def log_tail(self, lines: int = 1) -> str:
        """The last error-looking line of the server's log (or its last line)."""
        try:
            text = Path(self._log_path).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        errors = [l for l in text if l.startswith("E") or "error" in l.lower()]
        return " | ".join((errors or text or ["empty log"])[-lines:]).strip()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server's PID (it unloads the models, its Python-backend stubs exit, and
        so does it, within exit_timeout), then SIGKILL to its process group for whatever is still
        there after `timeout` seconds."""
        process, self.process = self.process, None
        if process is not None:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while (process.poll() is None or _group_alive(process.pid)) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _group_alive(process.pid):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ------------------------------------------------------------------ command line
def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    from exporters.cli import fail

    p = argparse.ArgumentParser(prog="python -m runtimes.triton_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", type=Path, help=f"server environment (default ${ENV_VARIABLE} or ./{DEFAULT_ENV})")
    p.add_argument("--setup", action="store_true", help="make or refresh the server environment, then exit")
    p.add_argument("--repo", type=Path, help="model repository to serve (python-backend models)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port on 127.0.0.1 (default 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port on 127.0.0.1 (default 8001)")
    p.add_argument("--model", action="append", dest="models", help="load only this model (repeatable)")
    p.add_argument("--log", type=Path, default=Path("tritonserver.log"),
                   help="the server's own output (default ./tritonserver.log)")
    a = p.parse_args(argv)
    env = a.env or default_env()
    if a.setup:
        try:
            setup_env(env)
        except (subprocess.CalledProcessError, OSError, TritonServerError) as e:
            fail(f"could not make the server environment {env}: {e}")
        print(f"ready: {env} (serve with python -m runtimes.triton_server --repo REPO"
              f"{'' if env == DEFAULT_ENV else f' --env {env}'})")
        return 0
    if a.repo is None:
        fail("give --repo REPO to serve, or --setup to make the server environment")
    signal.signal(signal.SIGTERM, _interrupt)  # kill or timeout stops the server too, as Ctrl-C does
    server = TritonServer(a.repo, env, a.http_port, a.grpc_port, a.models, log_file=a.log, start_timeout=600)
    try:
        server.start()
    except TritonServerError as e:
        fail(str(e))
    except KeyboardInterrupt:  # start() has stopped the server already
        return 130
    print(f"serving {a.repo} (pid {server.process.pid}): HTTP {HOST}:{server.http_port}, gRPC {HOST}:{server.grpc_port};"
          f" e.g. runtimes.load('{server.url('NAME')}'); its log: {a.log}. Ctrl-C stops it.", flush=True)
    try:
        while server.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        code = server.process.returncode if server.process else None
        server.stop()
    return 0 if code in (None, 0) else 1


if __name__ == "__main__":
    sys.exit(main())
