"""Results as a terminal table, a markdown report and a latency-vs-mAP plot.

A results file (JSON) holds one machine's run: {"system": ..., "settings": ..., "rows": [...]}.
`benchmarks/compare.py` feeds several of them through the same functions.
"""
from __future__ import annotations

import math

COLUMNS = [  # (header, key, format)
    ("runtime", "name", "{}"),
    ("precision", "precision", "{}"),
    ("status", "status", "{}"),
    ("size MB", "size_mb", "{:.1f}"),
    ("mAP", "map", "{:.4f}"),
    ("AP50", "ap50", "{:.4f}"),
    ("parity", "parity", "{}"),
    ("model p50/p90/p99 ms", "model_ms", "{}"),
    ("e2e p50/p90/p99 ms", "e2e_ms", "{}"),
    ("img/s", "throughput", "{:.2f}"),
    ("vs torchvision", "speedup", "{:.2f}x"),
    ("peak MB", "peak_mb", "{:.0f}"),
    ("start s", "startup_s", "{:.2f}"),
]


def _lat(stats: dict | None) -> str:
    if not stats:
        return "-"
    return f"{stats['p50_ms']:.1f}/{stats['p90_ms']:.1f}/{stats['p99_ms']:.1f}"


def cells(row: dict) -> list[str]:
    out = []
    for _, key, fmt in COLUMNS:
        if key == "model_ms":
            out.append(_lat(row.get("latency_model")))
        elif key == "e2e_ms":
            out.append(_lat(row.get("latency_e2e")))
        elif key == "parity":
            p = row.get("parity")
            out.append("-" if not p else f"{p['matched_fraction']:.1%} {p['max_box_px']:.2f}px")
        elif key == "status":
            status = row.get("status", "")
            out.append(status if len(status) <= 30 else status[:27] + "...")
        else:
            v = row.get(key)
            out.append("-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v))
    return out


def notes(rows: list[dict]) -> list[str]:
    """The full status of rows whose status the table shortens."""
    return [f"{r['name']} {r['precision']}: {r['status']}" for r in rows if len(r.get("status", "")) > 30]


def table(rows: list[dict], headers: list[str] | None = None, extra: list[list[str]] | None = None) -> str:
    """Fixed-width text table; `extra` prepends columns (e.g. the machine in compare.py)."""
    head = (headers or []) + [h for h, _, _ in COLUMNS]
    body = [(extra[i] if extra else []) + cells(r) for i, r in enumerate(rows)]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cols: "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body), *notes(rows)])


def markdown(results: list[dict], title: str) -> str:
    """A markdown report of one or several results files."""
    out = [f"# {title}", ""]
    for res in results:
        s, cfg = res["system"], res["settings"]
        gpu = ", ".join(f"{g['name']} (driver {g['driver']})" for g in s.get("gpus", [])) or "none"
        out += [f"## {s.get('hostname', '?')}: {s['cpu']} ({s['cores']} cores), GPU: {gpu}", "",
                "Settings: " + ", ".join(f"{k}={v}" for k, v in cfg.items()), "",
                "| " + " | ".join(h for h, _, _ in COLUMNS) + " |",
                "|" + "---|" * len(COLUMNS)]
        out += ["| " + " | ".join(cells(r)) + " |" for r in res["rows"]]
        out += [""] + [f"- {n}" for n in notes(res["rows"])]
        versions = ", ".join(f"{k} {v}" for k, v in s["versions"].items() if v)
        out += ["", f"Software: {versions}", ""]
    return "\n".join(out)


def plot(results: list[dict], path, title: str) -> None:
    """Latency (end-to-end p50) against mAP: one point per runtime and precision (and machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    many = len(results) > 1
    markers = "os^Dv<>p*"
    for k, res in enumerate(results):
        for row in res["rows"]:
            lat, m = row.get("latency_e2e"), row.get("map")
            if not lat or m is None:
                continue
            label = f"{row['name']} {row['precision']}" + (f" @ {res['system'].get('hostname', k)}" if many else "")
            ax.scatter(lat["p50_ms"], m, marker=markers[k % len(markers)], s=60)
            ax.annotate(label, (lat["p50_ms"], m), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency p50 (ms, log scale)")
    ax.set_ylabel("COCO mAP@[.5:.95]")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
