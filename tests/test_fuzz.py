"""Fuzzed inputs never crash: every target of tests/fuzz.py with a bounded number of examples.

The examples are derandomized (the same every run), so CI time and results are fixed; the
random exploration is `python -m tests.fuzz --minutes 10`. A target fails on any exception other
than a one-line DatasetError, ModelLoadError or ImageError, and on malformed accepted output;
each must also reach both sides of the rule (some inputs refused, some accepted), or its
mutations would be testing nothing.
"""
from __future__ import annotations

from collections import Counter

import pytest

from tests import fuzz

# examples per target: ~3 minutes in all on 2 CPU cores
EXAMPLES = {"coco": 300, "voc": 300, "txt": 300, "spec": 300, "detector": 200, "model:onnx": 60,
            "model:openvino": 60, "model:checkpoint": 60, "model:pth": 40, "model:engine": 60}
ACCEPTED = {"accepted", "skipped", "sidecar accepted"}  # (engines cannot load here: their sidecars can)


@pytest.fixture(scope="module")
def artifacts(tiny_run, tiny_onnx, tmp_path_factory):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install -e .[dev])")
    made = fuzz.make_artifacts(tmp_path_factory.mktemp("fuzz_artifacts"), run=tiny_run, onnx_path=tiny_onnx)
    fuzz.use_artifacts(made)
    return made


def test_every_target_has_an_example_count():
    assert set(EXAMPLES) == set(fuzz.TARGETS)


@pytest.mark.parametrize("target", fuzz.TARGETS)
def test_fuzzed_inputs_never_crash(target, request):
    if target.startswith("model:") or target == "detector":
        request.getfixturevalue("artifacts")
    before = Counter(fuzz.COUNTS)
    fuzz.run_target(target, EXAMPLES[target], derandomize=True)
    outcomes = {k: v for (t, k), v in (fuzz.COUNTS - before).items() if t == target}
    print(target, dict(sorted(outcomes.items())))
    assert outcomes.get("error", 0) > 0, outcomes
    assert sum(v for k, v in outcomes.items() if k in ACCEPTED) > 0, outcomes


def test_a_crash_is_caught(monkeypatch):
    """The harness itself: a reader that raises anything but the three errors fails the target."""
    def broken(spec, val=None):
        raise KeyError("boom")

    monkeypatch.setattr(fuzz, "build_datasets", broken)
    with pytest.raises(KeyError):
        fuzz.run_target("spec", 5, derandomize=True)


def test_one_line_errors_escape_line_breaks():
    from runtimes import ImageError, ModelLoadError
    from trainer.checkpoint import CheckpointError
    from trainer.data import DatasetError

    for error in (DatasetError, ModelLoadError, ImageError, CheckpointError):
        message = str(error("images/a\nb.jpg: not found\r\u2028"))
        assert message == "images/a\\nb.jpg: not found" and len(message.splitlines()) == 1
