"""Why benchmarks.timing times blocks with an idle pause: the thread pools' spinning, measured,
and each way of alternating runtimes in one process against every runtime timed alone.

    flock /tmp/frcnn-bench.lock python -m benchmarks.interference --model runs/default-tiny --threads 2

1. Spinning: after a few calls of one runtime, the process's CPU time over successive windows
   of idling, as cores kept busy: how long that runtime's pool holds the cores after returning.
2. Alone: each runtime in a fresh process that loads only it, called back to back (what
   benchmark_app and trtexec see). ONNX Runtime also alone with its pool's spinning turned off
   (session.intra_op.allow_spinning=0, a raw session of the same file): what that setting costs it.
3. Methods, every runtime loaded in this one process, each runtime's model-only p50 against its
   alone figure:
   - per call: one call per runtime per round, no pause;
   - per call, pause: 0.05 s before every timed call (benchmarks.timing until issue 14);
   - blocks: back-to-back blocks alternating across rounds, no pause, no untimed call;
   - blocks, pause: an idle pause before each block;
   - blocks, pause + warm-up call: the pause and one untimed call (benchmarks.timing now).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import timing
from benchmarks.run import Artifacts, load_options, plan, export_all, resolve_model

ALONE = r"""
import json, sys, time
import numpy as np
from benchmarks import timing
path, runtime, opts, image, iters, spin = sys.argv[1:7]
image, iters, opts = np.load(image), int(iters), json.loads(opts)
if spin == "default":
    import runtimes
    call = timing.staged(runtimes.load(path, runtime=runtime, **opts), [image])
else:  # a raw ONNX Runtime session of the file, its pool spinning or not
    import onnxruntime as ort
    from runtimes.onnxruntime import OnnxRuntimeDetector, session_options
    det = OnnxRuntimeDetector(path, threads=opts.get("threads"))
    so = session_options(opts.get("threads"))
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    canvas = det.prepare([image])[0]
    del det
    def call():
        t = time.perf_counter()
        session.run(None, {"images": canvas})
        return {"model": time.perf_counter() - t}
done = timing.blocks({"x": call}, [iters], warmup=5, block_warmup=0, settle=0, desc="alone")
print(json.dumps(timing.percentiles(timing.samples(done, "x", "model"))))
"""

METHODS = {  # name -> (calls per block or None for the iterations split in blocks, pause s, untimed calls per block)
    "per call": (1, 0.0, 0),
    "per call, 0.05 s pause": (1, 0.05, 0),
    "blocks": (None, 0.0, 0),
    "blocks, pause": (None, timing.SETTLE_S, 0),
    "blocks, pause + warm-up call": (None, timing.SETTLE_S, 1),
}
WINDOWS_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)  # ends of the idle windows after a call


def spinning(detector, sample, repeats: int = 5) -> list[float]:
    """Cores kept busy by this process in each idle window after `detector`'s calls (median of repeats)."""
    busy = []
    for _ in range(repeats):
        for _ in range(3):
            detector(sample)
        start, cpu0, row = time.perf_counter(), time.process_time(), []
        for end in WINDOWS_S:
            w0, c0 = time.perf_counter(), time.process_time()
            time.sleep(max(0.0, start + end - w0))
            row.append((time.process_time() - c0) / max(time.perf_counter() - w0, 1e-6))
        busy.append(row)
    return list(np.median(busy, axis=0))


def alone(row, threads: int, image: Path, iters: int, spin: str = "default") -> dict:
    opts = json.dumps(load_options(row, threads))
    r = subprocess.run([sys.executable, "-c", ALONE, str(row.artifact), row.runtime, opts, str(image), str(iters), spin],
                       capture_output=True, text=True, cwd=str(Path(__file__).resolve().parents[1]))
    if r.returncode != 0:
        raise SystemExit(f"error: timing {row.key} alone failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.interference", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="checkpoint (default: the default tiny model, runs/default-tiny)")
    p.add_argument("--threads", type=int, default=2, help="threads for every runtime (default 2)")
    p.add_argument("--iters", type=int, default=40, help="timed calls per runtime and method (default 40)")
    p.add_argument("--rounds", type=int, default=4, help="blocks per runtime in the block methods (default 4)")
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "frcnn-interference",
                   help="where the exported files are kept (default %(default)s)")
    p.add_argument("--json", type=Path, help="also write the results here")
    a = p.parse_args(argv)
    if min(a.threads, a.iters, a.rounds) < 1:
        p.error("--threads, --iters and --rounds must be at least 1")

    import torch

    import runtimes
    from exporters.cli import load_source
    from exporters.verify import sample_images

    torch.set_num_threads(a.threads)
    checkpoint, _ = resolve_model(a.model)
    model, meta = load_source(str(checkpoint))
    rows = [r for r in plan(["onnxruntime", "openvino"], "cpu") if r.precision == "fp32" and r.status == "ok"]
    export_all(rows, Artifacts(checkpoint, model, meta, a.work_dir, 1))
    del model
    sample = sample_images(meta, 1)[0]
    a.work_dir.mkdir(parents=True, exist_ok=True)
    np.save(a.work_dir / "image.npy", sample[0])

    result = {"alone": {}, "methods": {}, "spinning": {}}
    print(f"alone (a fresh process each, {a.iters} calls back to back), model-only p50:")
    for row in rows:
        result["alone"][row.key] = alone(row, a.threads, a.work_dir / "image.npy", a.iters)
        print(f"  {row.key:20s} {result['alone'][row.key]['p50_ms']:8.2f} ms")
    ort_row = next((r for r in rows if r.runtime == "onnxruntime"), None)
    if ort_row:
        for spin in ("1", "0"):
            result["alone"][f"onnxruntime raw, allow_spinning={spin}"] = st = alone(
                ort_row, a.threads, a.work_dir / "image.npy", a.iters, spin)
            print(f"  onnxruntime raw session, allow_spinning={spin}: {st['p50_ms']:8.2f} ms")

    for row in rows:
        row.detector = runtimes.load(row.artifact, runtime=row.runtime, **load_options(row, a.threads))
    calls = {row.key: timing.staged(row.detector, sample) for row in rows}
    for method, (per_block, pause, untimed) in METHODS.items():
        sizes = [per_block] * a.iters if per_block else timing.split(a.iters, a.rounds)
        done = timing.blocks(calls, sizes, warmup=5, block_warmup=untimed, settle=pause, desc=method)
        result["methods"][method] = {k: timing.percentiles(timing.samples(done, k, "model")) for k in calls}

    print(f"\nmodel-only p50 in one process, all {len(rows)} runtimes loaded, against alone:")
    print(f"  {'method':30s}" + "".join(f"{k:>24s}" for k in calls))
    for method, stats in result["methods"].items():
        print(f"  {method:30s}" + "".join(
            f"{stats[k]['p50_ms']:9.2f} ms ({stats[k]['p50_ms'] / result['alone'][k]['p50_ms']:5.2f}x)".rjust(24)
            for k in calls))

    print(f"\ncores kept busy while idle after a runtime's calls (windows ending at {', '.join(map(str, WINDOWS_S))} s):")
    for row in rows:
        result["spinning"][row.key] = busy = spinning(row.detector, sample)
        print(f"  {row.key:20s} " + " ".join(f"{b:5.2f}" for b in busy))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
