"""benchmarks.timing's method, on real ONNX Runtime calls of the tiny model: block structure,
rotation, warm-up, model-only inside end-to-end, the coefficient of variation and its warning.
Nothing here asserts a duration: only what follows from the method."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import timing  # noqa: E402


@pytest.fixture(scope="module")
def detector(tiny_onnx):
    import runtimes

    return runtimes.load(tiny_onnx, threads=1)


def logged_calls(detector, shapes_images, names=("a", "b", "c")):
    """Real detector calls that append their name to a log when they run."""
    log = []

    def make(name):
        call = timing.staged(detector, shapes_images[:1])

        def run():
            log.append(name)
            return call()
        return run

    return {n: make(n) for n in names}, log


def test_split_is_even_and_complete():
    assert timing.split(5, 4) == [2, 1, 1, 1]
    assert timing.split(40, 4) == [10] * 4
    assert timing.split(3, 10) == [1, 1, 1]  # never an empty block
    assert sum(timing.split(17, 5)) == 17


def test_blocks_run_back_to_back_and_rotate(detector, shapes_images):
    calls, log = logged_calls(detector, shapes_images)
    sizes = [3, 2, 2]
    done = timing.blocks(calls, sizes, warmup=2, block_warmup=1, settle=0)
    # one block per name per round, the order rotated by one each round
    assert [(b.round, b.name) for b in done] == [(0, "a"), (0, "b"), (0, "c"), (1, "b"), (1, "c"), (1, "a"),
                                                 (2, "c"), (2, "a"), (2, "b")]
    assert [len(b.samples) for b in done] == [3, 3, 3, 2, 2, 2, 2, 2, 2]
    # the log: 2 warm-up calls each, then each block's untimed call and its timed calls with nothing between
    assert log[:6] == ["a", "a", "b", "b", "c", "c"]
    expected = [b.name for b in done for _ in range(1 + len(b.samples))]
    assert log[6:] == expected
    assert len(timing.samples(done, "a")) == sum(sizes)


def test_timed_for_seconds_gives_every_block_a_call(detector, shapes_images):
    calls, _ = logged_calls(detector, shapes_images, ("a", "b"))
    done = timing.blocks(calls, [0, 0], warmup=0, block_warmup=0, settle=0, seconds=1e-6)
    assert [len(b.samples) for b in done] == [1, 1, 1, 1]


def test_model_only_lies_inside_end_to_end(detector, shapes_images):
    """staged: the model stage is read inside the same call, so e2e >= model in every call and percentile."""
    calls = {"x": timing.staged(detector, shapes_images[:2])}
    done = timing.blocks(calls, [4, 4], warmup=1, settle=0)
    model, e2e = timing.samples(done, "x", "model"), timing.samples(done, "x", "e2e")
    assert len(model) == 8 and all(0 < m <= e for m, e in zip(model, e2e))
    assert all(e <= t for e, t in zip(e2e, timing.samples(done, "x")))  # inside the runner's own clock
    pm, pe = timing.percentiles(model), timing.percentiles(e2e)
    assert all(pm[k] <= pe[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms"))


def test_staged_runs_the_detectors_three_stages(detector, shapes_images, monkeypatch):
    """The stages staged() times are the ones Detector.__call__ runs, once each per call."""
    seen = []
    for stage in ("prepare", "infer_batched", "postprocess"):
        original = getattr(detector, stage)
        monkeypatch.setattr(detector, stage, lambda *a, _o=original, _s=stage: (seen.append(_s), _o(*a))[1])
    timing.staged(detector, shapes_images[:1])()
    assert seen == ["prepare", "infer_batched", "postprocess"]
    seen.clear()
    detector(shapes_images[:1])
    assert seen == ["prepare", "infer_batched", "postprocess"]


def test_coefficient_of_variation_and_the_unstable_warning():
    steady, shaky = timing.percentiles([0.010] * 5), timing.percentiles([0.010, 0.030])
    assert steady["cv"] == 0 and not timing.unstable(steady)
    assert shaky["cv"] == pytest.approx(0.5) and timing.unstable(shaky) and not timing.unstable(shaky, 0.6)
    assert not timing.unstable(timing.percentiles([0.5]))  # one call has no spread to judge
    assert timing.percentiles([]) == {}
