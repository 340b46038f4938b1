"""benchmarks.concurrency's bookkeeping with a stand-in detector (no timing is asserted)."""

import threading

import pytest

from benchmarks import concurrency


class CountingDetector:
    """Counts calls and the most threads inside at once; fails on the image `fail_on`."""

    def __init__(self, fail_on=None, together: int = 1):
        self.calls, self.inside, self.most_inside, self.fail_on = 0, 0, 0, fail_on
        self.lock = threading.Lock()
        self.gate = threading.Barrier(together, timeout=10)  # the first calls wait until `together` are inside

    def __call__(self, image):
        with self.lock:
            self.calls += 1
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            first = self.calls <= self.gate.parties
        try:
            if image == self.fail_on:
                raise ValueError("bad image")
            if first:
                self.gate.wait()
        finally:
            with self.lock:
                self.inside -= 1


def test_every_client_makes_its_calls_concurrently():
    det = CountingDetector(together=4)  # passes only if 4 clients are inside at once
    block = concurrency.one_block(det, images=list(range(10)), clients=4, calls=3)
    assert det.calls == 12 and block["n"] == 12 and det.most_inside == 4
    assert block["images_per_s"] > 0


def test_a_failing_call_is_reported():
    with pytest.raises(RuntimeError, match="bad image"):
        concurrency.one_block(CountingDetector(fail_on=2), images=[0, 1, 2, 3], clients=1, calls=4)


def test_rounds_and_client_counts_are_all_measured():
    dets = {"a": CountingDetector(), "b": CountingDetector()}
    out = concurrency.throughput(dets, images=[0, 1], clients=(1, 2), calls=2, rounds=2, warmup=1, settle=0)
    assert set(out) == {"a", "b"} and set(out["a"]) == {1, 2}
    assert out["a"][2]["rounds"] == 2 and out["a"][2]["n"] == 4
    # warm-up + rounds x client counts x (one untimed call + clients x 2 calls)
    assert dets["a"].calls == 1 + 2 * ((1 + 1 * 2) + (1 + 2 * 2))
