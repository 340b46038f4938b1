"""Throughput under concurrent clients: N threads, each sending one image per call to a shared
detector, for a fixed number of calls. For a Triton model this is N clients of one server (its
dynamic batcher groups their requests); for a direct adapter, N threads sharing one session.
Detectors alternate block by block, so drift of the machine hits each alike; as in
benchmarks.timing, each block follows an idle pause (timing.SETTLE_S) and one untimed call
that wakes the runtime's threads. No timing happens in unit tests."""
from __future__ import annotations

import itertools
import statistics
import threading
import time

from tqdm import tqdm

from .timing import SETTLE_S, percentiles

CLIENTS = (1, 4, 16)
THREAD_SAFE = ("onnxruntime", "triton")  # adapters whose one instance serves many threads at once


def one_block(detector, images: list, clients: int, calls: int, timeout: float = 600.0) -> dict:
    """`clients` threads, `calls` one-image calls each, started together: images per second over
    the whole block and the per-call latency percentiles. RuntimeError if a call failed."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(index: int) -> None:
        feed = itertools.islice(itertools.cycle(images), index, None)  # clients start at different images
        start.wait()
        mine = []
        try:
            for _ in range(calls):
                image = next(feed)
                t = time.perf_counter()
                detector(image)
                mine.append(time.perf_counter() - t)
        except BaseException as e:  # reported by the caller, not lost in the thread
            errors.append(e)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout)
    wall = time.perf_counter() - t0
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError(f"{clients} clients: {errors[0] if errors else f'not done within {timeout:g}s'}")
    return dict(images_per_s=clients * calls / wall, **percentiles(latencies))


def throughput(detectors: dict, images: list, clients=CLIENTS, calls: int = 8, rounds: int = 2,
               warmup: int = 2, settle: float = SETTLE_S) -> dict[str, dict[int, dict]]:
    """name -> clients -> {images_per_s (median over rounds), p50_ms, p90_ms, ... of the last round}.
    Every detector gets `warmup` calls first; each round runs every detector once per client count,
    the order rotating, each block after `settle` seconds idle and one untimed call."""
    names = list(detectors)
    for name in names:
        for image in images[:warmup]:
            detectors[name](image)
    rates = {n: {c: [] for c in clients} for n in names}
    last = {n: {} for n in names}
    bar = tqdm(total=rounds * len(clients) * len(names), desc="concurrent clients", unit="block", leave=False)
    for rnd in range(rounds):
        for c in clients:
            for k in range(len(names)):
                name = names[(rnd + k) % len(names)]
                time.sleep(settle)  # the previous block's thread pools spin down
                detectors[name](images[0])  # and this one's wake up, untimed
                block = one_block(detectors[name], images, c, calls)
                rates[name][c].append(block["images_per_s"])
                last[name][c] = block
                bar.update(1)
    bar.close()
    return {n: {c: dict(last[n][c], images_per_s=statistics.median(rates[n][c]), rounds=rounds, calls=calls)
                for c in clients} for n in names}
