"""PNG plots of a training run: losses and COCO mAP.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global
backend switch), so it works on headless machines and inside other programs.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .checkpoint import atomic_write

LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path


def _epoch_ticks(ax, epochs: list[int]) -> None:
    if len(epochs) <= 20:
        ax.set_xticks(epochs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_losses(history: list[dict], steps: list[list[float]], path: Path) -> Path:
    """Left: total loss over training steps (mean of each logging window). Right: per-epoch loss terms."""
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    if steps:
        ax1.plot([s[0] for s in steps], [s[1] for s in steps], lw=1, marker="." if len(steps) < 50 else None)
    ax1.set(xlabel="step", ylabel="loss", title="training loss", yscale="log")
    epochs = [h["epoch"] for h in history]
    for key in ("loss", *LOSS_KEYS):
        ax2.plot(epochs, [h[key] for h in history], marker="o", label=key)
    ax2.set(xlabel="epoch", ylabel="mean loss", title="loss per epoch", yscale="log")
    ax2.legend(fontsize=8)
    _epoch_ticks(ax2, epochs)
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_map(history: list[dict], path: Path) -> Path:
    """COCO AP@[.5:.95], AP@.5 and AP@.75 on the validation split after each epoch."""
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    epochs = [h["epoch"] for h in history]
    for key in ("AP@[.5:.95]", "AP@.5", "AP@.75"):
        ax.plot(epochs, [h["coco"][key] for h in history], marker="o", label=key)
    ax.set(xlabel="epoch", ylabel="COCO AP", title="validation mAP", ylim=(0, 1))
    _epoch_ticks(ax, epochs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_run(history: list[dict], steps: list[list[float]], run_dir: Path) -> list[Path]:
    run_dir = Path(run_dir)
    return [plot_losses(history, steps, run_dir / "loss.png"), plot_map(history, run_dir / "map.png")]
