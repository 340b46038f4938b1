"""Latency measurement: warm-up, then runtimes alternating in rounds, so that drift of the
machine (other load, clocks) hits every runtime alike. No timing happens in unit tests."""
from __future__ import annotations

import time
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
                desc: str = "timing") -> dict[str, list[float]]:
    """Time every call `iters` times (or until `seconds` have passed), one of each per round,
    the order rotating every round. `sync` runs after each call (e.g. CUDA synchronise)."""
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
            t = time.perf_counter()
            calls[name]()
            sync()
            times[name].append(time.perf_counter() - t)
        rnd += 1
        bar.update(1)
    bar.close()
    return times
