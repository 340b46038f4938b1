"""`benchmarks/run.py --cross-check`: each runtime's own tool on the same artifact, threads,
precision and input canvas as our timing, in the same invocation right after the table's timing.
The tool's runs alternate with blocks of our timer on that row alone, in rounds (--rounds), so
that load which comes and goes hits both alike. Printed: our table's model-only p50, the tool's
median (of its runs' medians) and their ratio, and our p50 alone and its ratio to the tool.

- OpenVINO: benchmark_app (a console script of the openvino wheel; where it is not on the PATH,
  openvino.tools.benchmark.main:main, which has no `python -m` entry), synchronous, one stream,
  the row's threads and inference precision (`-hint none -nstreams 1 -nthreads T -api sync
  -infer_precision f32`), fed our canvas through `-i canvas.npy`: left alone it feeds random
  bytes, and the NMS cost depends on the image. Its median latency, from its JSON report.
- ONNX Runtime: its wheel ships no benchmark tool, so its own profiler is the independent timer:
  a session of the same graph and options (runtimes.load: threads, the Winograd rewrite) with
  SessionOptions.enable_profiling, run back to back on the canvas; the median of its "model_run"
  events (ONNX Runtime's C++ clock around each Run). Profiling records an event per node, which
  costs a little; our clock around the same profiled calls is shown beside it.
- TensorRT: trtexec --loadEngine with our canvas (--loadInputs), its median Latency (H2D +
  compute + D2H: what our model-only call spans, host arrays in and out) and GPU Compute Time.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks import timing
from runtimes.base import first_line

HEAD = ["row", "tool", "ours p50 ms", "tool median ms", "ours / tool", "ours alone p50 ms", "alone / tool",
        "status"]


class Unavailable(Exception):
    """The tool cannot run here; the message says why (one line)."""


def _run(cmd: list[str], timeout: float) -> str:
    """stdout of a tool's command; RuntimeError with its telling line when it fails."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout:.0f} s") from None
    if r.returncode != 0:
        lines = [l.strip() for l in (r.stderr + "\n" + r.stdout).splitlines() if l.strip()]
        errors = [l for l in lines if "ERROR" in l or "rror" in l]
        raise RuntimeError((errors or lines or [f"exit code {r.returncode}"])[-1][:200])
    return r.stdout


def _timeout(row, n: int) -> float:
    return 120 + 10 * n * row.result["latency_model"]["p50_ms"] / 1000


# ------------------------------------------------------------------ OpenVINO: benchmark_app
def benchmark_app_command() -> list[str] | None:
    """How to start benchmark_app here: the console script, else its main function; None without openvino."""
    found = shutil.which("benchmark_app")
    if found:
        return [found]
    try:
        import openvino.tools.benchmark.main  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-c", "import sys; from openvino.tools.benchmark.main import main; sys.exit(main())"]


def parse_benchmark_app(stdout: str, report: Path | None = None) -> dict:
    """benchmark_app's latency statistics (ms): from its -json_stats report when there is one,
    else from the "Median:/Average:/Min:/Max:" lines it prints. ValueError when neither has them."""
    if report is not None and report.is_file():
        res = json.loads(report.read_text())["execution_results"]
        return dict(median_ms=float(res["latency (ms)"]), mean_ms=float(res["avg latency"]),
                    min_ms=float(res["min latency"]), max_ms=float(res["max latency"]),
                    n=int(res["total number of iterations"]))
    found = {k.lower(): float(v) for k, v in re.findall(r"(Median|Average|Min|Max):\s+([\d.]+)\s*ms", stdout)}
    count = re.search(r"Count:\s+(\d+)\s+iterations", stdout)
    if "median" not in found:
        raise ValueError("no latency median in benchmark_app's output")
    return dict(median_ms=found["median"], mean_ms=found.get("average"), min_ms=found.get("min"),
                max_ms=found.get("max"), n=int(count.group(1)) if count else None)


class BenchmarkApp:
    """OpenVINO's benchmark_app on the row's IR, our canvas as its input."""

    name = "benchmark_app"
    note = "median of its synchronous loop, fed our canvas (-i)"

    def __init__(self, row, canvas: np.ndarray, threads: int, work: Path, options):
        exe = benchmark_app_command()
        if exe is None:
            raise Unavailable("openvino.tools.benchmark is not importable")
        det, self.row, self.work, self.medians = row.detector, row, work, []
        np.save(work / "canvas.npy", canvas)
        self.args = ["-m", str(det.path), "-d", det.device, "-hint", "none", "-nstreams", "1", "-api", "sync",
                     "-nthreads", str(det.threads or threads), "-i", str(work / "canvas.npy")]
        if det.precision:
            self.args += ["-infer_precision", det.precision]
        if det.batch is None:  # a dynamic-batch IR: the batch of our canvas
            self.args += ["-shape", f"images[{','.join(map(str, canvas.shape))}]"]
        self.exe = exe
        self.command = " ".join(["benchmark_app", *self.args, "-niter N"])

    def measure(self, n: int) -> None:
        report = self.work / "benchmark_report.json"
        report.unlink(missing_ok=True)
        out = _run(self.exe + self.args + ["-niter", str(n), "-json_stats", "-report_type", "no_counters",
                                           "-report_folder", str(self.work)], _timeout(self.row, n))
        self.medians.append(parse_benchmark_app(out, report)["median_ms"])

    def finish(self) -> list[float]:
        return self.medians


# ------------------------------------------------------------------ ONNX Runtime: its profiler
def profile_runs(path: str | Path) -> list[float]:
    """Milliseconds of every Run in an ONNX Runtime profile (its "model_run" events), in order."""
    events = json.loads(Path(path).read_text())
    return [e["dur"] / 1000 for e in events if e.get("name") == "model_run" and e.get("cat") == "Session"]


class OrtProfiler:
    """A profiled session of the row's graph (same runtimes.load options), run back to back."""

    name = "onnxruntime profiler"
    warmup = 2  # untimed runs before each measured run of n

    def __init__(self, row, canvas: np.ndarray, threads: int, work: Path, options):
        import runtimes

        self.det = runtimes.load(row.artifact, device=row.detector.device, runtime="onnxruntime", **options(row),
                                 profile=str(work / "ort-profile"))
        self.canvas, self.sizes, self.ours = canvas, [], []
        self.command = "SessionOptions.enable_profiling on the same graph and options"

    def measure(self, n: int) -> None:
        import time

        for i in range(self.warmup + n):
            t = time.perf_counter()
            self.det.infer_batched(self.canvas)
            if i >= self.warmup:
                self.ours.append(time.perf_counter() - t)
        self.sizes.append(n)

    def finish(self) -> list[float]:
        runs, medians = profile_runs(self.det.session.end_profiling()), []
        if len(runs) != sum(self.sizes) + self.warmup * len(self.sizes):
            raise RuntimeError(f"{len(runs)} model_run events in the profile, expected "
                               f"{sum(self.sizes) + self.warmup * len(self.sizes)}")
        for n in self.sizes:
            medians.append(float(np.median(runs[self.warmup: self.warmup + n])))
            runs = runs[self.warmup + n:]
        same = timing.percentiles(self.ours)["p50_ms"]
        self.note = (f"median of its model_run events; our clock around the same profiled calls: p50 {same:.2f} ms "
                     "(profiling records every node, which costs time)")
        return medians


# ------------------------------------------------------------------ TensorRT: trtexec
_TRTEXEC_LINE = re.compile(r"\]\s*(Latency|GPU Compute Time):\s*min = ([\d.e+-]+) ms, max = ([\d.e+-]+) ms, "
                           r"mean = ([\d.e+-]+) ms, median = ([\d.e+-]+) ms")


def parse_trtexec(stdout: str) -> dict:
    """trtexec's performance summary: median and mean (ms) of Latency and GPU Compute Time."""
    out = {}
    for m in _TRTEXEC_LINE.finditer(stdout):
        key = "latency" if m.group(1) == "Latency" else "gpu_compute"
        out[f"{key}_median_ms"], out[f"{key}_mean_ms"] = float(m.group(5)), float(m.group(4))
    if "latency_median_ms" not in out:
        raise ValueError("no 'Latency: ... median = ...' line in trtexec's output")
    return out


class Trtexec:
    """trtexec on the row's engine with our canvas (--loadInputs)."""

    name = "trtexec"

    def __init__(self, row, canvas: np.ndarray, threads: int, work: Path, options):
        exe = shutil.which("trtexec")
        if exe is None:
            raise Unavailable("trtexec is not on the PATH (TensorRT not installed here)")
        det, self.row, self.stats = row.detector, row, []
        canvas.tofile(work / "canvas.bin")
        self.args = [f"--loadEngine={det.path}", f"--loadInputs=images:{work / 'canvas.bin'}", "--duration=0",
                     "--warmUp=500", "--avgRuns=1", "--useSpinWait", f"--device={det.device.split(':')[-1]}"]
        if det.batch is None:
            self.args.append(f"--shapes=images:{'x'.join(map(str, canvas.shape))}")
        if det.meta.export.get("plugins", "custom") == "custom":
            from runtimes.tensorrt import find_plugin_library

            self.args.append(f"--dynamicPlugins={find_plugin_library(None, det.meta.export.get('plugin_library'))}")
        self.exe = exe
        self.command = " ".join(["trtexec", *self.args, "--iterations=N"])

    def measure(self, n: int) -> None:
        self.stats.append(parse_trtexec(_run([self.exe, *self.args, f"--iterations={n}"], _timeout(self.row, n))))

    def finish(self) -> list[float]:
        gpu = [s.get("gpu_compute_median_ms") for s in self.stats]
        self.note = f"median Latency (H2D + compute + D2H); GPU compute medians {gpu} ms"
        return [s["latency_median_ms"] for s in self.stats]


TOOLS = {"openvino": BenchmarkApp, "onnxruntime": OrtProfiler, "tensorrt": Trtexec}  # runtime -> its own tool


def _check(row, tool: str, **fields) -> dict:
    ours = (row.result.get("latency_model") or {}).get("p50_ms")
    check = dict(row=f"{row.name} {row.precision}", runtime=row.runtime, tool=tool, ours_ms=ours, tool_ms=None,
                 tool_runs=[], alone_ms=None, status="ok", command=None, note="")
    check.update(fields)
    if check["tool_ms"] and ours:
        check["ratio"] = ours / check["tool_ms"]
    if check["tool_ms"] and check["alone_ms"]:
        check["alone_ratio"] = check["alone_ms"] / check["tool_ms"]
    return check


def cross_check(row, sample: list, threads: int, iters: int, rounds: int, work: Path, options) -> dict:
    """`rounds` rounds, each a run of the row's tool and then a block of our timer on the row alone
    (iters split across them): the tool's median (of its runs' medians) against our table's p50
    and our p50 alone, measured in turn with the tool."""
    cls = TOOLS[row.runtime]
    work.mkdir(parents=True, exist_ok=True)
    try:
        tool = cls(row, row.detector.prepare(sample)[0], threads, work, options)
    except Unavailable as e:
        return _check(row, cls.name, status=f"not available: {e}")
    ours = []
    for n in timing.split(iters, rounds):
        tool.measure(n)
        done = timing.blocks({row.key: timing.staged(row.detector, sample)}, [n], warmup=0, desc="ours alone")
        ours += timing.samples(done, row.key, "model")
    runs = tool.finish()
    return _check(row, cls.name, tool_ms=float(np.median(runs)), tool_runs=runs,
                  alone_ms=timing.percentiles(ours)["p50_ms"], command=tool.command, note=tool.note)


def run(rows: list, sample: list, threads: int, iters: int, rounds: int, work: Path, options: Callable) -> list[dict]:
    """cross_check of each row whose runtime has a tool; rows that did not run get a line saying why.
    `options(row)` are the row's runtimes.load options."""
    checks = []
    for row in rows:
        if row.runtime not in TOOLS:
            continue
        name = TOOLS[row.runtime].name
        if row.detector is None or not row.result.get("latency_model"):  # parity failures are still timed
            status = row.status if row.status.startswith("not available") else f"not available: {row.status}"
            checks.append(_check(row, name, status=status))
            continue
        print(f"cross-check {row.name} {row.precision}: {name} and ours, {rounds} rounds ...", flush=True)
        try:
            checks.append(cross_check(row, sample, threads, iters, rounds, work / row.key, options))
        except Exception as e:  # a tool's failure or odd output must not lose the run's results
            checks.append(_check(row, name, status=f"failed: {first_line(e)}"))
    return checks


def _ms(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def cells(c: dict) -> list[str]:
    ratio = lambda k: f"{c[k]:.3f}" if c.get(k) else "-"  # noqa: E731
    status = c["status"] if len(c["status"]) <= 30 else c["status"][:27] + "..."
    return [c["row"], c["tool"], _ms(c["ours_ms"]), _ms(c["tool_ms"]), ratio("ratio"), _ms(c["alone_ms"]),
            ratio("alone_ratio"), status]


def describe(c: dict) -> str:
    """The command and how to read it, or the full status of a check that did not run."""
    what = [c["command"], c["note"]] if c["status"] == "ok" else [c["status"]]
    return f"{c['row']}, {c['tool']}: " + "; ".join(x for x in what if x)


def table(checks: list[dict]) -> str:
    from benchmarks.report import text_table

    if not checks:
        return "cross-check: no row of a runtime with a tool (openvino, onnxruntime, tensorrt)"
    return "\n".join(["cross-check: our model-only p50 (the table's) against each runtime's own tool",
                      text_table(HEAD, [cells(c) for c in checks]), *(describe(c) for c in checks)])
