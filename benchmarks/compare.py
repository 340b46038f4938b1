#!/usr/bin/env python
"""Merge benchmark results from several machines into one table, one report and one plot.

    python benchmarks/compare.py runs/bench/*/results.json --out runs/compare
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
            print(f"error: {p}: not a benchmarks/run.py results file ({type(e).__name__}: {e})", file=sys.stderr)
            raise SystemExit(2)
        results.append(res)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/compare.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="results.json files from benchmarks/run.py")
    p.add_argument("--out", type=Path, default=Path("runs/compare"), help="output folder (default runs/compare)")
    a = p.parse_args(argv)
    results = load(a.results)
    rows, machine = [], []
    for res in results:
        s = res["system"]
        gpu = s["gpus"][0]["name"] if s.get("gpus") else "no GPU"
        for row in res["rows"]:
            rows.append(row)
            machine.append([s.get("hostname", "?"), f"{s['cpu'][:28]} / {gpu}"])
    a.out.mkdir(parents=True, exist_ok=True)
    print(report.table(rows, headers=["machine", "hardware"], extra=machine))
    (a.out / "report.md").write_text(report.markdown(results, "frcnn-deploy benchmarks across machines"))
    report.plot(results, a.out / "latency_vs_map.png", "latency vs mAP across machines")
    print(f"\nwrote {a.out}/report.md and latency_vs_map.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
