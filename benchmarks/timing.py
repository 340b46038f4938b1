"""Latency measurement the way the runtimes' own tools do it, so that our figures and theirs
agree (OpenVINO's benchmark_app, TensorRT's trtexec): warm-up, then calls back to back.

Several runtimes share one process and one machine, so each runtime is timed in blocks:
one block per runtime per round, the blocks' order rotating every round so that drift of the
machine (other jobs, clocks) hits every runtime alike. Before each block the process idles for
`SETTLE_S`, long enough for the thread pools of the block before (ONNX Runtime's, OpenMP's,
TBB's) to stop spinning, and the block's first `block_warmup` calls are untimed: they wake the
timed runtime's own pool, which the idle let fall asleep. Inside a block nothing else runs.
(`python -m benchmarks.interference` measures why: the spinning, and each method against
every runtime timed alone in a process of its own.)

An end-to-end call (image in memory -> boxes in image pixels) is timed in its stages:
the model stage (canvas batch in -> padded outputs) is read off the same clock inside the same
call, as trtexec reports GPU compute time and latency of the same iterations, so end to end
is never shorter than model only. Start-up is timed in a fresh process. No timing happens in
unit tests.
"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

# Idle before each block. After a call returns, ONNX Runtime's and OpenMP's workers spin on the
# cores for a while; measured (benchmarks.interference) the spinning is over well within this.
SETTLE_S = 0.2
# Coefficient of variation above which a runtime's timing is called unstable. trtexec warns from
# 1%, on a GPU whose clocks can be locked; a CPU shared with other jobs rarely gets below 2%.
UNSTABLE_CV = 0.05


@dataclass
class Block:
    """One runtime's back-to-back calls in one round: one sample per timed call, each holding
    `total` (seconds of the whole call) and the stages the call timed itself (seconds)."""

    name: str
    round: int
    samples: list[dict[str, float]] = field(default_factory=list)


def split(iters: int, rounds: int) -> list[int]:
    """`iters` timed calls as `rounds` blocks, as even as can be (5 in 4: 2, 1, 1, 1)."""
    rounds = max(1, min(rounds, iters))
    return [iters // rounds + (i < iters % rounds) for i in range(rounds)]


def blocks(calls: dict[str, Callable[[], dict | None]], sizes: list[int], warmup: int = 3, block_warmup: int = 1,
           settle: float = SETTLE_S, seconds: float | None = None, sync: Callable[[], None] = lambda: None,
           desc: str = "timing") -> list[Block]:
    """Time every call in blocks, one block per call per round (len(sizes) rounds), in the order run.

    First every call runs `warmup` times untimed. Round r runs the calls in `calls`' order rotated
    by r; each block idles `settle` seconds, runs `block_warmup` untimed calls, then `sizes[r]`
    timed ones back to back (with `seconds`: as many as fit in seconds / rounds, at least one).
    A call may return a dict of stage durations it timed itself; they join its sample.
    `sync` runs after every call (e.g. CUDA synchronise)."""
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
            sync()
    done: list[Block] = []
    per_block = seconds / len(sizes) if seconds else None
    bar = tqdm(total=len(sizes) * len(names), desc=desc, unit="block", leave=False)
    for rnd, size in enumerate(sizes):
        for k in range(len(names)):
            name = names[(rnd + k) % len(names)]
            if settle:
                time.sleep(settle)
            for _ in range(block_warmup):
                calls[name]()
                sync()
            block = Block(name, rnd)
            start = time.perf_counter()
            while (len(block.samples) < size) if per_block is None else \
                    (not block.samples or time.perf_counter() - start < per_block):
                t = time.perf_counter()
                stages = calls[name]()
                sync()
                block.samples.append({"total": time.perf_counter() - t, **(stages or {})})
            done.append(block)
            bar.update(1)
    bar.close()
    return done


def samples(done: list[Block], name: str, stage: str = "total") -> list[float]:
    """Seconds of one stage of every timed call of `name`, in the order run."""
    return [s[stage] for b in done if b.name == name for s in b.samples]


def percentiles(seconds: list[float]) -> dict:
    """p50/p90/p99/mean in ms, the coefficient of variation (std / mean) and the count."""
    ms = np.asarray(seconds, float) * 1000
    if not len(ms):
        return {}
    return dict(p50_ms=float(np.percentile(ms, 50)), p90_ms=float(np.percentile(ms, 90)),
                p99_ms=float(np.percentile(ms, 99)), mean_ms=float(ms.mean()),
                cv=float(ms.std() / ms.mean()) if ms.mean() > 0 else 0.0, n=int(len(ms)))


def unstable(stats: dict, threshold: float = UNSTABLE_CV) -> bool:
    return bool(stats) and stats.get("n", 0) > 1 and stats["cv"] > threshold


def staged(detector, images: list) -> Callable[[], dict[str, float]]:
    """One end-to-end call of `detector` on `images` (Detector.__call__'s three stages: prepare,
    infer_batched, postprocess) that returns the seconds of the model stage and of the whole call,
    both read off one clock, so e2e >= model in every call."""
    clock = time.perf_counter

    def call() -> dict[str, float]:
        t0 = clock()
        canvas, boxes = detector.prepare(images)
        t1 = clock()
        out = detector.infer_batched(canvas)  # every adapter returns host arrays: the work is done
        t2 = clock()
        detector.postprocess(out, boxes, None)
        t3 = clock()
        return {"model": t2 - t1, "e2e": t3 - t0}

    return call


def photos(n: int) -> list:
    """`n` COCO-like photos: 480x640 shapes images, letterboxed onto the canvas by every runtime alike."""
    from trainer.data.shapes import render

    return [render(3, i, size_range=((480, 481), (640, 641)))[0] for i in range(n)]


def end_to_end(detectors: dict, images: list, warmup: int, rounds: int, desc: str = "end to end") -> dict[str, dict]:
    """Percentiles of each detector called on one image at a time (decoded image in memory ->
    boxes in image pixels), in blocks (one pass over `images` per block), `rounds` rounds,
    every detector walking the same images in the same order; printed as p50/p90 lines."""
    feeds = {name: itertools.cycle(images) for name in detectors}
    calls = {name: (lambda n=name, d=det: d(next(feeds[n]))) for name, det in detectors.items()}
    done = blocks(calls, [len(images)] * rounds, warmup, block_warmup=0, desc=desc)
    stats = {name: percentiles(samples(done, name)) for name in detectors}
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
