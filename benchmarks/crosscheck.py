"""`benchmarks/run.py --cross-check`: each runtime's own tool on the same artifact, threads,
precision and input canvas as our timing, in the same invocation right after it, printed next
to our model-only p50 with the ratio. After each tool, our timer runs that row alone once more
(`ours alone`), back to back with the tool.

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

HEAD = ["row", "tool", "ours p50 ms", "tool median ms", "ours / tool", "ours alone p50 ms", "status"]


def _check(row, tool: str, **fields) -> dict:
    ours = (row.result.get("latency_model") or {}).get("p50_ms")
    check = dict(row=f"{row.name} {row.precision}", runtime=row.runtime, tool=tool, ours_ms=ours, tool_ms=None,
                 alone_ms=None, status="ok", command=None, note="")
    check.update(fields)
    if check["tool_ms"] and ours:
        check["ratio"] = ours / check["tool_ms"]
    return check


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _tail(r: subprocess.CompletedProcess) -> str:
    lines = [l.strip() for l in (r.stderr + "\n" + r.stdout).splitlines() if l.strip()]
    errors = [l for l in lines if "ERROR" in l or "rror" in l]
    return (errors or lines or [f"exit code {r.returncode}"])[-1][:200]


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


def benchmark_app(row, canvas: np.ndarray, threads: int, iters: int, work: Path, options) -> dict:
    det = row.detector
    cmd = benchmark_app_command()
    if cmd is None:
        return _check(row, "benchmark_app", status="not available: openvino.tools.benchmark not importable")
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "canvas.npy", canvas)
    report = work / "benchmark_report.json"
    report.unlink(missing_ok=True)
    cmd += ["-m", str(det.path), "-d", det.device, "-hint", "none", "-nstreams", "1", "-api", "sync",
            "-nthreads", str(det.threads or threads), "-niter", str(iters), "-i", str(work / "canvas.npy"),
            "-json_stats", "-report_type", "no_counters", "-report_folder", str(work)]
    if det.precision:
        cmd += ["-infer_precision", det.precision]
    if det.batch is None:  # a dynamic-batch IR: the batch of our canvas
        cmd += ["-shape", f"images[{','.join(map(str, canvas.shape))}]"]
    shown = " ".join(["benchmark_app", *cmd[cmd.index("-m"):]])
    try:
        r = _run(cmd, timeout=120 + iters * 10 * (row.result["latency_model"]["p50_ms"] / 1000))
    except subprocess.TimeoutExpired:
        return _check(row, "benchmark_app", status="failed: timed out", command=shown)
    if r.returncode != 0:
        return _check(row, "benchmark_app", status=f"failed: {_tail(r)}", command=shown)
    stats = parse_benchmark_app(r.stdout, report)
    return _check(row, "benchmark_app", tool_ms=stats["median_ms"], tool_stats=stats, command=shown,
                  note="median of its synchronous loop, fed our canvas (-i)")


# ------------------------------------------------------------------ ONNX Runtime: its profiler
def profile_runs(path: str | Path) -> list[float]:
    """Milliseconds of every Run in an ONNX Runtime profile (its "model_run" events), in order."""
    events = json.loads(Path(path).read_text())
    return [e["dur"] / 1000 for e in events if e.get("name") == "model_run" and e.get("cat") == "Session"]


def ort_profiler(row, canvas: np.ndarray, threads: int, iters: int, work: Path, options) -> dict:
    import time

    import runtimes

    work.mkdir(parents=True, exist_ok=True)
    det = runtimes.load(row.artifact, device=row.detector.device, runtime="onnxruntime", **options(row),
                        profile=str(work / "ort-profile"))
    warmup = 3
    ours = []
    for i in range(warmup + iters):
        t = time.perf_counter()
        det.infer_batched(canvas)
        ours.append(time.perf_counter() - t)
    runs = profile_runs(det.session.end_profiling())[warmup:]
    if len(runs) != iters:
        return _check(row, "onnxruntime profiler", status=f"failed: {len(runs)} model_run events, expected {iters}")
    same = timing.percentiles(ours[warmup:])["p50_ms"]
    return _check(row, "onnxruntime profiler", tool_ms=float(np.median(runs)), same_calls_ms=same,
                  command=f"SessionOptions.enable_profiling, {iters} runs after {warmup} warm-up",
                  note=f"median of its model_run events; our clock on the same profiled calls: p50 {same:.2f} ms")


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


def trtexec(row, canvas: np.ndarray, threads: int, iters: int, work: Path, options) -> dict:
    exe = shutil.which("trtexec")
    if exe is None:
        return _check(row, "trtexec", status="not available: trtexec is not on the PATH (TensorRT not installed here)")
    det = row.detector
    work.mkdir(parents=True, exist_ok=True)
    canvas.tofile(work / "canvas.bin")
    cmd = [exe, f"--loadEngine={det.path}", f"--loadInputs=images:{work / 'canvas.bin'}", f"--iterations={iters}",
           "--duration=0", "--warmUp=500", "--avgRuns=1", "--useSpinWait", f"--device={det.device.split(':')[-1]}"]
    if det.batch is None:
        cmd.append(f"--shapes=images:{'x'.join(map(str, canvas.shape))}")
    if det.meta.export.get("plugins", "custom") == "custom":
        from runtimes.tensorrt import find_plugin_library

        cmd.append(f"--dynamicPlugins={find_plugin_library(None, det.meta.export.get('plugin_library'))}")
    shown = " ".join(["trtexec", *cmd[1:]])
    r = _run(cmd, timeout=300)
    if r.returncode != 0:
        return _check(row, "trtexec", status=f"failed: {_tail(r)}", command=shown)
    stats = parse_trtexec(r.stdout)
    return _check(row, "trtexec", tool_ms=stats["latency_median_ms"], tool_stats=stats, command=shown,
                  note=f"median Latency (H2D + compute + D2H); GPU compute median {stats.get('gpu_compute_median_ms')} ms")


TOOLS: dict[str, tuple[str, Callable]] = {  # runtime -> (the tool's name, how to run it)
    "openvino": ("benchmark_app", benchmark_app),
    "onnxruntime": ("onnxruntime profiler", ort_profiler),
    "tensorrt": ("trtexec", trtexec),
}


def run(rows: list, sample: list, threads: int, iters: int, work: Path, options: Callable) -> list[dict]:
    """Each row whose runtime has a tool: the tool, then our timer on that row alone. Rows that did
    not run get a "not available" line with their status. `options(row)` are its runtimes.load options."""
    checks = []
    for row in rows:
        if row.runtime not in TOOLS:
            continue
        name, tool = TOOLS[row.runtime]
        if row.status != "ok" or row.detector is None:
            status = row.status if row.status.startswith("not available") else f"not available: {row.status}"
            checks.append(_check(row, name, status=status))
            continue
        canvas = row.detector.prepare(sample)[0]
        print(f"cross-check {row.name} {row.precision}: {name} ...", flush=True)
        try:
            check = tool(row, canvas, threads, iters, work / row.key, options)
        except Exception as e:  # a tool's odd output or a failed load must not lose the run's results
            check = _check(row, name, status=f"failed: {first_line(e)}")
        if check["status"] == "ok":
            done = timing.blocks({row.key: timing.staged(row.detector, sample)}, [iters], desc="ours alone")
            check["alone_ms"] = timing.percentiles(timing.samples(done, row.key, "model"))["p50_ms"]
        checks.append(check)
    return checks


def _ms(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def cells(c: dict) -> list[str]:
    ratio = f"{c['ratio']:.3f}" if c.get("ratio") else "-"
    return [c["row"], c["tool"], _ms(c["ours_ms"]), _ms(c["tool_ms"]), ratio, _ms(c["alone_ms"]), c["status"]]


def describe(c: dict) -> str:
    return f"{c['row']}, {c['tool']}: " + "; ".join(x for x in (c.get("command"), c.get("note")) if x)


def table(checks: list[dict]) -> str:
    from benchmarks.report import text_table

    if not checks:
        return "cross-check: no row of a runtime with a tool (openvino, onnxruntime, tensorrt)"
    return "\n".join(["cross-check: our model-only p50 (the table's) against each runtime's own tool",
                      text_table(HEAD, [cells(c) for c in checks]), *(describe(c) for c in checks)])
