"""Latency measurement: warm-up, then runtimes alternating in rounds, so that drift of the
machine (other load, clocks) hits every runtime alike; start-up in a fresh process. No timing
happens in unit tests."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm


def percentiles(seconds: list[float]) -> dict:
    ms = np.asarray(seconds, float) * 1000
    if not len(ms):
        return {}
    return dict(p50_ms=float(np.percentile(ms, 50)), p90_ms=float(np.percentile(ms, 90)),
                p99_ms=float(np.percentile(ms, 99)), mean_ms=float(ms.mean()), n=int(len(ms)))


def interleaved(calls: dict[str, Callable[[], object]], warmup: int, iters: int | None = None,
                seconds: float | None = None, sync: Callable[[], None] = lambda: None,
                desc: str = "timing", settle: float = 0.05) -> dict[str, list[float]]:
    """Time every call `iters` times (or until `seconds` have passed), one of each per round,
    the order rotating every round. `sync` runs after each call (e.g. CUDA synchronise).

    Each timed call waits `settle` seconds first: the thread pools of the call before it
    (ONNX Runtime's, OpenMP's, TBB's) spin on the cores for a while after returning. Without the
    pause, the tiny model's calls measured 1.3-2x slower alternating than each runtime timed
    alone (2 cores); with 0.05 s, within 25% of alone (a call after a pause wakes its pool)."""
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
        sync()
    times = {n: [] for n in names}
    start = time.perf_counter()
    bar = tqdm(total=iters, desc=desc, unit="round", leave=False)
    rnd = 0
    while (iters is not None and rnd < iters) or (iters is None and time.perf_counter() - start < (seconds or 0)):
        for k in range(len(names)):
            name = names[(rnd + k) % len(names)]
            if settle:
                time.sleep(settle)
            t = time.perf_counter()
            calls[name]()
            sync()
            times[name].append(time.perf_counter() - t)
        rnd += 1
        bar.update(1)
    bar.close()
    return times


def photos(n: int) -> list:
    """`n` COCO-like photos: 480x640 shapes images, letterboxed onto the canvas by every runtime alike."""
    from trainer.data.shapes import render

    return [render(3, i, size_range=((480, 481), (640, 641)))[0] for i in range(n)]


def end_to_end(detectors: dict, images: list, warmup: int, rounds: int, desc: str = "end to end") -> dict[str, dict]:
    """Percentiles of each detector called on one image at a time (decoded image in memory ->
    boxes in image pixels), every detector walking the same images in the same order,
    alternating (interleaved), `rounds` passes; printed as p50/p90 lines."""
    feeds = {name: itertools.cycle(images) for name in detectors}
    calls = {name: (lambda n=name, d=det: d(next(feeds[n]))) for name, det in detectors.items()}
    times = interleaved(calls, warmup, rounds * len(images), desc=desc)
    stats = {name: percentiles(ts) for name, ts in times.items()}
    for name, st in stats.items():
        print(f"  {name:12s} p50 {st['p50_ms']:8.1f} ms   p90 {st['p90_ms']:8.1f} ms   (n={st['n']})")
    return stats


PROBE = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np, runtimes
path, runtime, device, batch, opts = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])
det = runtimes.load(path, device=device, runtime=runtime, **opts)
loaded = time.perf_counter()
h, w = det.canvas
det.infer_batched(np.zeros((batch, h, w, 3), np.uint8))
end = time.perf_counter()
try:  # VmHWM is this process's own peak; ru_maxrss would include the parent's from before exec
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"startup_s": end - t0, "load_s": loaded - t0, "first_inference_s": end - loaded,
                  "peak_mb": peak / 1024}))
"""


def fresh_start(artifact, runtime: str, device: str = "cpu", batch: int = 1, **options) -> dict:
    """Start-up of `artifact` in a fresh process: seconds to import + load (load_s), to run the
    first inference (first_inference_s), both (startup_s), and peak RSS (peak_mb). `options` go
    to runtimes.load. RuntimeError with the child's last line when it fails."""
    cmd = [sys.executable, "-c", PROBE, str(artifact), runtime, device, str(batch), json.dumps(options)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=str(Path(__file__).resolve().parents[1]))
    if r.returncode != 0:
        raise RuntimeError((r.stderr.strip().splitlines() or ["?"])[-1])
    return json.loads(r.stdout.strip().splitlines()[-1])
