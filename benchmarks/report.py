"""Results as a terminal table, a markdown report and two plots: latency against mAP, and the
speed-up against torchvision's eager model.

A results file (JSON) holds one machine's run: {"system": ..., "settings": ..., "rows": [...]},
optionally "cross_check" (benchmarks.crosscheck) and "training" (benchmarks.train_throughput).
`benchmarks/compare.py` feeds several of them through the same functions.
"""
from __future__ import annotations

import math
from pathlib import Path

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
    ("cv model/e2e", "cv", "{}"),
    ("img/s", "throughput", "{:.2f}"),
    ("vs torchvision", "speedup", "{:.2f}x"),
    ("peak MB", "peak_mb", "{:.0f}"),
    ("start s", "startup_s", "{:.2f}"),
    ("timing flags", "flags", "{}"),
]
PLOTS = ("latency_vs_map.png", "speedup.png")
TRAINING_HEAD = ["loop", "arch", "batch", "canvas", "device", "threads", "ms/step p50", "p90", "cv", "img/s"]
MIN_MAP_SPAN = 0.05  # the mAP axis spans at least this much: identical accuracy looks identical


def _lat(stats: dict | None) -> str:
    if not stats:
        return "-"
    return f"{stats['p50_ms']:.1f}/{stats['p90_ms']:.1f}/{stats['p99_ms']:.1f}"


def _cv(row: dict) -> str:
    model, e2e = row.get("latency_model"), row.get("latency_e2e")
    if not model or "cv" not in model:
        return "-"
    return f"{model['cv']:.1%}/{e2e['cv']:.1%}"


def short_flag(flag: str) -> str:
    return "unstable" if flag.startswith("unstable") else flag


def cells(row: dict) -> list[str]:
    out = []
    for _, key, fmt in COLUMNS:
        if key == "model_ms":
            out.append(_lat(row.get("latency_model")))
        elif key == "e2e_ms":
            out.append(_lat(row.get("latency_e2e")))
        elif key == "cv":
            out.append(_cv(row))
        elif key == "flags":
            out.append(", ".join(dict.fromkeys(map(short_flag, row.get("flags") or []))) or "-")
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


def training_cells(t: dict) -> list[str]:
    return [t["name"], t["arch"], str(t["batch"]), "x".join(map(str, t["canvas"])), t["device"], str(t["threads"]),
            f"{t['ms_per_step']:.1f}", f"{t['p90_ms']:.1f}", f"{t['cv']:.1%}", f"{t['img_s']:.2f}"]


def notes(rows: list[dict]) -> list[str]:
    """The full status of rows whose status the table shortens, and every timing flag in full."""
    out = [f"{r['name']} {r['precision']}: {r['status']}" for r in rows if len(r.get("status", "")) > 30]
    return out + [f"{r['name']} {r['precision']}: {f}" for r in rows for f in r.get("flags") or []]


def table(rows: list[dict], headers: list[str] | None = None, extra: list[list[str]] | None = None) -> str:
    """Fixed-width text table; `extra` prepends columns (e.g. the machine in compare.py)."""
    head = (headers or []) + [h for h, _, _ in COLUMNS]
    body = [(extra[i] if extra else []) + cells(r) for i, r in enumerate(rows)]
    return "\n".join([text_table(head, body), *notes(rows)])


def text_table(head: list[str], body: list[list[str]]) -> str:
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    line = lambda cols: "  ".join(c.ljust(w) for c, w in zip(cols, widths))  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def md_table(head: list[str], body: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(b) + " |" for b in body)]


def markdown(results: list[dict], title: str, plots: tuple[str, ...] = ()) -> str:
    """A markdown report of one or several results files; `plots` are PNGs beside it."""
    from benchmarks import crosscheck

    out = [f"# {title}", ""]
    for name in plots:
        out += [f"![{name[:-4].replace('_', ' ')}]({name})", ""]
    for res in results:
        s, cfg = res["system"], res["settings"]
        gpu = ", ".join(f"{g['name']} (driver {g['driver']})" for g in s.get("gpus", [])) or "none"
        out += [f"## {s.get('hostname', '?')}: {s['cpu']} ({s['cores']} cores), GPU: {gpu}", "",
                "Settings: " + ", ".join(f"{k}={v}" for k, v in cfg.items()), ""]
        if res["rows"]:
            out += md_table([h for h, _, _ in COLUMNS], [cells(r) for r in res["rows"]])
            out += [""] + [f"- {n}" for n in notes(res["rows"])]
            out += ["", "Latency: back-to-back blocks per row, the rows alternating across rounds; model only "
                        "is timed inside the end-to-end calls (benchmarks.timing)."]
        if res.get("cross_check"):
            out += ["", "### The runtimes' own tools on the same artifacts (--cross-check)", "",
                    *md_table(crosscheck.HEAD, [crosscheck.cells(c) for c in res["cross_check"]]), "",
                    *[f"- {crosscheck.describe(c)}" for c in res["cross_check"]]]
        if res.get("training"):
            out += ["", "### Training speed (benchmarks/train_throughput.py)", "",
                    *md_table(TRAINING_HEAD, [training_cells(t) for t in res["training"]])]
        versions = ", ".join(f"{k} {v}" for k, v in s["versions"].items() if v)
        out += ["", f"Software: {versions}", ""]
    return "\n".join(out)


def write(out: Path, results: list[dict], title: str, plot_title: str) -> None:
    """report.md and the PLOTS into `out`."""
    plot(results, out / PLOTS[0], plot_title)
    speedup_plot(results, out / PLOTS[1], plot_title)
    (out / "report.md").write_text(markdown(results, title, PLOTS))


# ------------------------------------------------------------------ plots
def _label(row: dict, res: dict, many: bool) -> str:
    return f"{row['name']} {row['precision']}" + (f" @ {res['system'].get('hostname', '?')}" if many else "")


def spread(desired: list[float], gap: float, lo: float = 0.0, hi: float = 1.0) -> list[float]:
    """Positions as close to `desired` as can be with neighbours at least `gap` apart, kept in
    [lo, hi] when they fit there (in the same order as `desired`, ties kept in input order)."""
    order = sorted(range(len(desired)), key=lambda i: desired[i])
    ys = [min(max(desired[i], lo), hi) for i in order]
    for k in range(1, len(ys)):  # push up from the bottom
        ys[k] = max(ys[k], ys[k - 1] + gap)
    if ys and ys[-1] > hi:  # then down from the top, as far as the bottom allows
        ys[-1] = max(hi, lo + gap * (len(ys) - 1))
        for k in range(len(ys) - 2, -1, -1):
            ys[k] = min(ys[k], ys[k + 1] - gap)
    placed = [0.0] * len(desired)
    for k, i in enumerate(order):
        placed[i] = ys[k]
    return placed


def label_order(points: list[tuple[float, float]], gap: float) -> list[float]:
    """Desired label heights for (x, y) points in axes units: each point's height, except that
    points closer in height than `gap` share one, their labels going top down from left to right
    (so that their leader lines do not cross)."""
    order = sorted(range(len(points)), key=lambda i: points[i][1])
    clusters, heights = [], [0.0] * len(points)
    for i in order:
        if clusters and points[i][1] - points[clusters[-1][-1]][1] < gap:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    for cluster in clusters:
        mid = sum(points[i][1] for i in cluster) / len(cluster)
        for rank, i in enumerate(sorted(cluster, key=lambda i: -points[i][0])):  # rightmost lowest
            heights[i] = mid + 1e-9 * rank
    return heights


def latency_map_figure(results: list[dict], title: str):
    """The latency-vs-mAP figure: end-to-end p50 (log x) against mAP, one point per row (and
    machine), each labelled in a column to the right of the axes with a line to its point; the
    labels never overlap (spread) and the mAP axis spans at least MIN_MAP_SPAN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    many = len(results) > 1
    points = [(row["latency_e2e"]["p50_ms"], row["map"], _label(row, res, many), k)
              for k, res in enumerate(results) for row in res["rows"]
              if row.get("latency_e2e") and row.get("map") is not None]
    line_pt, font = 13, 8
    fig = plt.figure(figsize=(9, max(4.5, 1.6 + len(points) * line_pt / 72 / 0.7)))
    ax = fig.add_axes([0.09, 0.12, 0.52, 0.78])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("end-to-end latency p50 (ms, log scale)")
    ax.set_ylabel("COCO mAP@[.5:.95]")
    ax.grid(True, which="both", alpha=0.3)
    if not points:
        ax.text(0.5, 0.5, "no mAP measured in these results\n(--eval-images 0, or no ground truth here)",
                ha="center", va="center", transform=ax.transAxes)
        return fig
    lat = [p[0] for p in points]
    maps = [p[1] for p in points]
    span = max(MIN_MAP_SPAN, (max(maps) - min(maps)) * 1.2)
    low = min(max((max(maps) + min(maps) - span) / 2, 0.0), 1.0 - span)  # centred, inside [0, 1]
    ax.set_ylim(low, low + span)
    ax.set_xscale("log")
    ax.set_xlim(min(lat) / 1.35, max(lat) * 1.35)
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 3, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    colours = plt.get_cmap("tab10")
    markers = "os^Dv<>p*"
    names = list(dict.fromkeys(p[2].split(" @ ")[0] for p in points))
    colour = lambda label: colours(names.index(label.split(" @ ")[0]) % 10)  # noqa: E731
    for x, y, label, k in points:
        ax.scatter(x, y, s=50, marker=markers[k % len(markers)], color=colour(label), zorder=3, edgecolor="black",
                   linewidth=0.5)
    gap = line_pt / 72 / (fig.get_figheight() * ax.get_position().height)
    desired = label_order([(math.log(x), (y - low) / span) for x, y, _, _ in points], gap)
    to_axes = ax.transData + ax.transAxes.inverted()
    for (x, y, label, k), slot in zip(points, spread(desired, gap)):
        # the leader runs inside the axes to the right edge, then level to its label: never through a label
        px, py = to_axes.transform((x, y))
        ax.plot([px, 1.0, 1.025], [py, slot, slot], transform=ax.transAxes, clip_on=False, color=colour(label),
                linewidth=0.7, zorder=2)
        ax.text(1.03, slot, f"{label}: {x:.1f} ms, mAP {y:.4f}", transform=ax.transAxes, va="center",
                fontsize=font, color=colour(label))
    return fig


def plot(results: list[dict], path, title: str) -> None:
    """latency_map_figure written to `path`."""
    import matplotlib.pyplot as plt

    fig = latency_map_figure(results, title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def speedup_plot(results: list[dict], path, title: str) -> None:
    """Horizontal bars: each row's p50 speed-up against torchvision's eager model in the same run,
    end to end and model only, one pair per runtime and precision (and machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    many = len(results) > 1
    bars = [(_label(row, res, many), row["speedup_e2e"], row.get("speedup_model"))
            for res in results for row in res["rows"] if row.get("speedup_e2e")]
    bars.sort(key=lambda b: b[1])
    fig, ax = plt.subplots(figsize=(8, max(3.0, 1.4 + 0.45 * len(bars))))
    ax.set_title(f"speed-up against torchvision eager (p50), {title}", fontsize=10)
    if not bars:
        ax.text(0.5, 0.5, "no torchvision baseline in these results", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        ys = range(len(bars))
        ax.barh([y + 0.18 for y in ys], [b[1] for b in bars], height=0.36, color="tab:blue", label="end to end")
        ax.barh([y - 0.18 for y in ys], [b[2] or 0 for b in bars], height=0.36, color="tab:orange", label="model only")
        for y, (_, e2e, model) in zip(ys, bars):
            ax.text(e2e, y + 0.18, f" {e2e:.2f}x", va="center", fontsize=8)
            if model:
                ax.text(model, y - 0.18, f" {model:.2f}x", va="center", fontsize=8)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks(list(ys), [b[0] for b in bars], fontsize=9)
        ax.set_xlim(0, max(max(b[1], b[2] or 0) for b in bars) * 1.18)
        ax.set_xlabel("times faster than torchvision eager (1.0 = as fast)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
