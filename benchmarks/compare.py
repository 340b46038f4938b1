#!/usr/bin/env python
"""Merge benchmark results from several machines into one table, one report and its plots.

    python benchmarks/compare.py runs/bench/*/results.json --out runs/compare

Takes the results files of benchmarks/run.py (inference rows) and of
benchmarks/train_throughput.py (training ms/step), from any machines.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402


def load(paths: list[Path]) -> list[dict]:
    results = []
    for p in paths:
        try:
            res = json.loads(Path(p).read_text())
            res["rows"], res["system"], res["settings"]  # noqa: B018 - the keys a results file must have
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"error: {p}: not a benchmarks results file ({type(e).__name__}: {e})", file=sys.stderr)
            raise SystemExit(2)
        results.append(res)
    return results


def hardware(s: dict) -> list[str]:
    """The machine columns: host name, CPU / GPU."""
    gpu = s["gpus"][0]["name"] if s.get("gpus") else "no GPU"
    return [s.get("hostname", "?"), f"{s['cpu'][:28]} / {gpu}"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/compare.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="results.json files from benchmarks/run.py or benchmarks/train_throughput.py")
    p.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder (default runs/compare)")
    a = p.parse_args(argv)
    results = load(a.results)
    rows, machine = [], []
    for res in results:
        for row in res["rows"]:
            rows.append(row)
            machine.append(hardware(res["system"]))
    training = [(hardware(res["system"]), t) for res in results for t in res.get("training", [])]
    a.out.mkdir(parents=True, exist_ok=True)
    if rows:
        print(report.table(rows, headers=["machine", "hardware"], extra=machine))
    if training:
        print("\ntraining speed:")
        print(report.text_table(["machine", "hardware", *report.TRAINING_HEAD],
                                [m + report.training_cells(t) for m, t in training]))
    report.write(a.out, results, "frcnn-deploy benchmarks across machines", "across machines")
    print(f"\nwrote {a.out}/report.md, {', '.join(report.PLOTS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
