"""The training loop behind `python -m trainer`.

    python -m trainer --data shapes --arch tiny          # a small detector in minutes on a CPU
    python -m trainer --resume runs/tiny-shapes          # continue a stopped run exactly
    torchrun --nproc_per_node 2 -m trainer ...           # one process per GPU (or CPU, gloo)

A run directory holds model.safetensors/.json (best validation mAP), last.safetensors/.json,
metrics.jsonl (one record per epoch), loss.png, map.png, and resume.json + state/ (see
trainer.checkpoint). The data order and augmentation are a pure function of (seed, epoch,
position) and the training state includes every RNG, so a resumed run continues exactly
where the stopped one was.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from tqdm import tqdm

from runtimes.base import first_line

from . import checkpoint, distributed, plots
from . import weights as named_weights
from .data import DatasetError, build_datasets
from .distributed import DeviceError, Dist
from .eval import evaluate_model
from .loader import EpochBatchSampler, canvas_to_float, make_loader
from .models import ARCHS, DEFAULT_CANVAS, build_model, default_meta, parse_canvas

class TrainError(ValueError):
    """Bad options or a run that cannot go on; the message is one line for the user."""


# ---------------------------------------------------------------- recipes

@dataclass
class Recipe:
    """Training defaults of an architecture; every field can be overridden on the command line."""

    epochs: int
    lr: float  # for --batch-size 4; scaled linearly with the batch size
    optimizer: str = "sgd"
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    schedule: str = "cosine"


RECIPES = {
    # from scratch in minutes: 1200 `shapes` images x 4 epochs at batch 4 = 1200 steps, ~7 minutes
    # on 2 CPU cores. AdamW with strong weight decay learned several times faster than SGD here.
    "tiny": Recipe(epochs=4, lr=0.002, optimizer="adamw", weight_decay=0.05, warmup_iters=50),
}
DEFAULT_RECIPE = Recipe(epochs=12, lr=0.005)  # torchvision's 0.02 for batch 16, scaled to 4


@dataclass
class LRSchedule:
    """Learning rate as a pure function of the step: linear warm-up, then cosine or steps."""

    base_lr: float
    total_steps: int
    warmup_steps: int
    kind: str = "cosine"  # or "step": x0.1 at 70% and 90% of the run
    warmup_factor: float = 0.001

    def __call__(self, step: int) -> float:
        f = 1.0
        if step < self.warmup_steps:
            f = self.warmup_factor + (1 - self.warmup_factor) * step / self.warmup_steps
        progress = min(step / max(1, self.total_steps), 1.0)
        if self.kind == "cosine":
            f *= 0.5 * (1 + math.cos(math.pi * progress))
        else:
            f *= 0.1 ** sum(progress >= m for m in (0.7, 0.9))
        return self.base_lr * f


@dataclass
class Progress:
    """Where the run is; saved in resume.json."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches of the current epoch finished (by this process)
    step: int = 0  # optimizer steps in total
    best_map: float = -1.0
    best_epoch: int = 0
    loss_sums: dict = field(default_factory=dict)  # loss name -> sum over the epoch's batches so far
    skipped: dict = field(default_factory=dict)  # train-set skips this epoch (all processes)
    epoch_time: float = 0.0  # seconds spent in the current epoch before the last save
    history: list = field(default_factory=list)  # one record per finished epoch (metrics.jsonl)
    steps: list = field(default_factory=list)  # [step, mean loss, lr] per logging window (loss plot)
    window: list = field(default_factory=list)  # losses of the logging window in progress


# ---------------------------------------------------------------- command line

def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def non_negative_int(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, with bad options reported in one line instead of the full usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m trainer",
        description="Train a torchvision Faster R-CNN on a detection dataset. Writes a run directory "
                    "with the best and last checkpoints (safetensors + JSON metadata), metrics.jsonl, "
                    "loss/mAP plots and a resumable training state.",
        epilog="Multi-GPU / multi-node: torchrun --nproc_per_node N -m trainer ... "
               "(--batch-size is per process; gloo on CPU, nccl on GPU).")
    # every default is None here so that --resume can tell what was given on the command line
    p.add_argument("--data", help="training data spec (default shapes): shapes[:train=N,val=M,seed=S] "
                                  "or a COCO / VOC / TXT dataset (see trainer.data)")
    p.add_argument("--val-data", help="separate validation data spec (default: the val split of --data)")
    p.add_argument("--arch", help=f"architecture: {', '.join(ARCHS)} (default tiny, or the one of --weights)")
    p.add_argument("--epochs", type=positive_int, help="epochs (default per arch: tiny 4, others 12)")
    p.add_argument("--batch-size", type=positive_int, help="images per step and process (default 4)")
    p.add_argument("--lr", type=positive_float,
                   help="peak learning rate (default per arch, scaled linearly with --batch-size)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"),
                   help="optimizer (default per arch: tiny adamw, others sgd with momentum 0.9)")
    p.add_argument("--weight-decay", type=float, help="weight decay (default per arch: tiny 0.05, others 1e-4)")
    p.add_argument("--schedule", choices=("cosine", "step"),
                   help="after warm-up: cosine decay to zero, or x0.1 at 70%% and 90%% (default cosine)")
    p.add_argument("--warmup-iters", type=non_negative_int, help="linear warm-up steps (default per arch: tiny 50, others 500)")
    p.add_argument("--amp", action="store_true", default=None, help="mixed precision (CUDA only)")
    p.add_argument("--weights", help="start from these weights: coco (torchvision's COCO weights of --arch), "
                                     "torchvision:ARCH, torchvision:ENUM.MEMBER or a URL (downloaded once "
                                     "into torch's hub cache, SHA-256 checked), a torchvision .pth state dict "
                                     "(loaded with weights_only) or one of our checkpoints; when the classes "
                                     "differ, the class-specific predictor layers are taken by class name "
                                     "where the weights know every class, else re-initialised")
    p.add_argument("--weights-backbone", help="start only the backbone from ImageNet weights: imagenet "
                                              "(torchvision's for --arch), torchvision:ENUM.MEMBER, a URL or a "
                                              ".pth; the FPN, RPN and box head start random")
    p.add_argument("--canvas", type=parse_canvas, help="input canvas HxW, multiples of 32 "
                   f"(default per arch: {', '.join(f'{a} {h}x{w}' for a, (h, w) in DEFAULT_CANVAS.items())})")
    p.add_argument("--seed", type=int, help="seed for initialisation, data order and augmentation (default 0)")
    p.add_argument("--device", help="torch device (default cuda if available, else cpu)")
    p.add_argument("--workers", type=non_negative_int,
                   help="data loading processes per training process (default: 0 with 2 CPU cores or "
                        "fewer, else up to 4)")
    p.add_argument("--out", type=Path, help="run directory (default runs/<arch>-<data>, numbered if taken)")
    p.add_argument("--resume", nargs="?", const="", metavar="RUN_DIR",
                   help="continue a stopped run (default: --out, or the latest run under runs/)")
    p.add_argument("--checkpoint-every", type=non_negative_int,
                   help="also save the training state every N steps (default 200; 0: epoch ends only)")
    p.add_argument("--eval-batch-size", type=positive_int, help="images per forward pass in evaluation (default 8)")
    return p


DEFAULTS = dict(data="shapes", val_data=None, batch_size=4, schedule=None, amp=False, weights=None,
                weights_backbone=None,
                seed=0, checkpoint_every=200, eval_batch_size=8)
# options a resumed run may change; everything else must stay as the run was started
RESUME_OVERRIDABLE = {"epochs", "device", "workers", "checkpoint_every", "eval_batch_size", "out", "resume"}


def resolve_config(args: argparse.Namespace, weights_arch: str | None) -> dict:
    """Fill in the defaults (arch- and batch-size-dependent) for a new run."""
    c = {k: v for k, v in vars(args).items() if k not in ("resume", "out", "device", "workers")}
    for k, v in DEFAULTS.items():
        if c.get(k) is None:
            c[k] = v
    if c["arch"] is None:
        c["arch"] = weights_arch or "tiny"
    recipe = RECIPES.get(c["arch"], DEFAULT_RECIPE)
    c["epochs"] = c["epochs"] or recipe.epochs
    c["lr"] = c["lr"] or recipe.lr * c["batch_size"] / 4
    c["optimizer"] = c["optimizer"] or recipe.optimizer
    c["weight_decay"] = recipe.weight_decay if c["weight_decay"] is None else c["weight_decay"]
    c["warmup_iters"] = recipe.warmup_iters if c["warmup_iters"] is None else c["warmup_iters"]
    c["schedule"] = c["schedule"] or recipe.schedule
    c["canvas"] = list(c["canvas"] or DEFAULT_CANVAS[c["arch"]])
    return c


def default_workers(device: torch.device) -> int:
    cpus = os.cpu_count() or 1
    # on a small CPU machine a loader process only takes cores from the model
    return 0 if device.type == "cpu" and cpus <= 2 else min(4, cpus // 2)


def new_run_dir(arch: str, data: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{arch}-{Path(data.partition(':')[0]).stem or 'data'}")
    base, n = Path("runs") / name, 1
    path = base
    while path.exists():
        n += 1
        path = base.with_name(f"{name}-{n}")
    return path


def latest_run() -> Path:
    runs = sorted(Path("runs").glob(f"*/{checkpoint.RESUME_POINTER}"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise TrainError("--resume: no run to resume under runs/; pass the run directory")
    return runs[-1].parent


def toolkit_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("frcnn-deploy")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


# ---------------------------------------------------------------- model and weights

def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


class StartWeights(NamedTuple):
    """What --weights or --weights-backbone hands the new model."""

    state: dict[str, torch.Tensor]
    arch: str
    frozen_bn: bool
    class_names: list[str] | None  # the classes the weights were trained on, when known
    name: str  # for messages
    backbone_only: bool = False  # an ImageNet classifier's state dict (see named_weights.load_backbone)


def weights_info(path: str, arch: str | None) -> StartWeights:
    """What --weights holds. A .pth (named weights are one, once downloaded) loads with weights_only."""
    if named_weights.is_named(path):
        pretrained = named_weights.resolve(path, arch)
        state = checkpoint.load_pth(pretrained.path)
        return StartWeights(state, arch or pretrained.arch or checkpoint.guess_arch(state),
                            checkpoint.pth_frozen_bn(state), pretrained.class_names, pretrained.path.name)
    if str(path).endswith((".pth", ".pt")):
        state = checkpoint.load_pth(path)
        # A state dict does not name its architecture (mobilenet_v3_large_fpn and its 320 variant
        # share keys): --arch wins, the keys are only a guess.
        return StartWeights(state, arch or checkpoint.guess_arch(state), checkpoint.pth_frozen_bn(state), None,
                            Path(path).name)
    model, meta = checkpoint.load_checkpoint(path)
    if arch and arch != meta.arch:
        raise TrainError(f"--weights {path} holds a {meta.arch} model, not --arch {arch}")
    return StartWeights(model.state_dict(), meta.arch, bool(meta.arch_kwargs.get("frozen_bn", False)),
                        list(meta.class_names), Path(path).name)


def backbone_info(spec: str, arch: str | None) -> StartWeights:
    """What --weights-backbone holds: torchvision's ImageNet classifier weights for `arch`."""
    if arch is None:
        raise TrainError(f"--weights-backbone needs --arch: one of {', '.join(named_weights.PRETRAINED_ARCHS)}")
    pretrained = named_weights.resolve_backbone(spec, arch)
    return StartWeights(checkpoint.load_pth(pretrained.path), arch, named_weights.FROZEN_BN_WHEN_PRETRAINED[arch],
                        None, pretrained.path.name, backbone_only=True)


PREDICTOR = "roi_heads.box_predictor."
CLS_SCORE = PREDICTOR + "cls_score."


def class_rows(source: list[str] | None, target: list[str]) -> list[int] | None:
    """For each class of `target` (background first), its row in a head trained on `source`;
    None unless every class name appears exactly once there."""
    if not source or source[0] != target[0]:
        return None
    rows = [0]
    for name in target[1:]:
        if source.count(name) != 1:
            return None
        rows.append(source.index(name))
    return rows


def select_classes(state: dict[str, torch.Tensor], rows: list[int]) -> dict[str, torch.Tensor]:
    """The class-specific predictor layers cut down to `rows` (scores: one row per class; boxes: four)."""
    index = torch.tensor(rows)
    box_index = (index[:, None] * 4 + torch.arange(4)).reshape(-1)
    return {k: v[index] if k.startswith(CLS_SCORE) else v[box_index] if k.startswith(PREDICTOR) else v
            for k, v in state.items()}


def load_weights(model: torch.nn.Module, start: StartWeights, class_names: list[str]) -> str:
    """Load `start` into `model` (whose classes are `class_names`); returns what was done
    differently from a plain copy, in words, or "".

    When the class counts differ, only the class-specific layers (the box predictor's
    cls_score and bbox_pred) change: their rows are picked by class name where the weights'
    classes include every one of ours (COCO weights fine-tuned on COCO, or on a subset of it),
    else they keep their fresh initialisation. Every other tensor comes from the weights.
    """
    if start.backbone_only:
        n = named_weights.load_backbone(model, start.state, start.name)
        return f"backbone: {n} tensors from {start.name}; the FPN, RPN and box head start from random initialisation"
    state, own = start.state, model.state_dict()
    head = [k for k in state if k.startswith(PREDICTOR)]
    note = ""
    if any(k in own and own[k].shape != state[k].shape for k in head):
        n_src, n_own = state[CLS_SCORE + "weight"].shape[0], own[CLS_SCORE + "weight"].shape[0]
        layers = " and ".join(sorted({k.rsplit(".", 1)[0] for k in head}))
        rows = class_rows(start.class_names, class_names)
        if rows is not None and len(start.class_names) == n_src:
            state = select_classes(state, rows)
            note = (f"class head: {layers} cut to our {n_own - 1} classes, picked by name from the "
                    f"{n_src - 1} of {start.name}; every other layer as it was trained")
        else:
            state = {k: v for k, v in state.items() if k not in head}
            note = (f"class head re-initialised ({n_src} classes in {start.name}, {n_own} here): only {layers} "
                    "start from random values; every other layer comes from the weights")
    missing, unexpected, bad = checkpoint.state_mismatch(model, state)
    missing = [k for k in missing if not (note and k.startswith(PREDICTOR))]
    if missing or unexpected or bad:
        raise TrainError(f"{start.name}: does not fit the model (missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}, other shapes {bad[:3]})")
    model.load_state_dict(state, strict=False)
    return note


# ---------------------------------------------------------------- one step

def train_step(model: torch.nn.Module, images: list[torch.Tensor], targets: list[dict],
               optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """Forward, backward and update on one batch; returns the loss terms and their sum."""
    with torch.autocast("cuda", enabled=scaler is not None):
        losses = model(images, targets)
        loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    # one device-to-host copy for all the terms, not one sync each
    return dict(zip([*losses, "loss"], torch.stack([*losses.values(), loss]).detach().tolist()))


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to `device` in training mode, in the memory format that trains fastest there."""
    model.to(device).train()
    if device.type == "cpu":
        # oneDNN convolutions run faster on NHWC; the numerics are those of the same convolutions
        model.to(memory_format=torch.channels_last)
    return model


def step_on_batch(model, batch: dict, optimizer, scaler, lr: float, device) -> dict[str, float]:
    """One training step on a batch from trainer.loader at learning rate `lr`."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in batch["targets"]]
    return train_step(model, canvas_to_float(batch["images"], device), targets, optimizer, scaler)


def make_optimizer(model: torch.nn.Module, c: dict) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if c["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=c["lr"], weight_decay=c["weight_decay"])
    return torch.optim.SGD(params, lr=c["lr"], momentum=0.9, weight_decay=c["weight_decay"])


# ---------------------------------------------------------------- state

def save_state(run_dir: Path, model, optimizer, scaler, progress: Progress, config: dict, d: Dist) -> None:
    """Training-state checkpoint; a collective call: every process hands in its RNG state."""
    rngs = distributed.gather(d, checkpoint.rng_state())
    if not d.is_main:
        return
    tensors = {f"model.{k}": v for k, v in unwrap(model).state_dict().items()}
    opt_tensors, opt_plain = checkpoint.optimizer_state_to_tensors(optimizer.state_dict())
    tensors.update(opt_tensors)
    for rank, (rng_tensors, _) in enumerate(rngs):
        tensors.update({f"rng.{rank}.{k}": v for k, v in rng_tensors.items()})
    checkpoint.save_train_state(run_dir, tensors, dict(
        config=config, world_size=d.world_size, progress=asdict(progress), optimizer=opt_plain,
        scaler=scaler.state_dict() if scaler is not None else None, rng=[plain for _, plain in rngs]))


def restore_state(saved: dict, tensors: dict, model, optimizer, scaler, d: Dist) -> Progress:
    if saved["world_size"] != d.world_size:
        raise TrainError(f"the run was saved with {saved['world_size']} process(es); resume it with as many "
                         f"(now {d.world_size})")
    unwrap(model).load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(checkpoint.optimizer_state_from_tensors(saved["optimizer"], tensors))
    if scaler is not None and saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])
    prefix = f"rng.{d.rank}."
    checkpoint.set_rng_state({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                             saved["rng"][d.rank])
    return Progress(**saved["progress"])


def write_outputs(run_dir: Path, model, meta, progress: Progress, config: dict, record: dict) -> None:
    """Epoch end on the main process: last/best checkpoints, metrics.jsonl, plots."""
    meta.provenance = dict(
        dataset=config["data"], val_dataset=config["val_data"], epochs=record["epoch"],
        total_epochs=config["epochs"], map=record["coco"]["AP@[.5:.95]"], best_map=progress.best_map,
        best_epoch=progress.best_epoch, weights=config["weights"],
        weights_backbone=config.get("weights_backbone"), toolkit_version=toolkit_version(),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    checkpoint.save_checkpoint(run_dir / "last.safetensors", unwrap(model), meta)
    if progress.best_epoch == record["epoch"]:
        checkpoint.save_checkpoint(run_dir / "model.safetensors", unwrap(model), meta)
    checkpoint.atomic_write_text(run_dir / "metrics.jsonl",
                                 "".join(json.dumps(h) + "\n" for h in progress.history))
    plots.plot_run(progress.history, progress.steps, run_dir)


# ---------------------------------------------------------------- the loop

# resume.json's entries the loop reads, and their types
SAVED_FIELDS = {"config": dict, "world_size": int, "progress": dict, "optimizer": dict, "rng": list}


def check_saved_state(saved: dict, run_dir: Path) -> None:
    """CheckpointError, one line, when resume.json lacks what resuming needs (a damaged or edited file)."""
    where = run_dir / checkpoint.RESUME_POINTER
    for key, kind in SAVED_FIELDS.items():
        if not isinstance(saved.get(key), kind):
            raise checkpoint.CheckpointError(f"{where}: {key!r} is missing or not a {kind.__name__} "
                                             "(a damaged training state)")
    missing = sorted(set(vars(build_parser().parse_args([]))) - {"resume", "out", "device", "workers"}
                     - saved["config"].keys())
    if missing:
        raise checkpoint.CheckpointError(f"{where}: the saved config lacks {', '.join(missing)} "
                                         "(a damaged training state)")


def open_run(args: argparse.Namespace):
    """(run_dir, config, saved state and tensors or None, StartWeights or None) for the command line."""
    if args.resume is not None:
        run_dir = Path(args.resume or args.out or latest_run())
        saved, tensors = checkpoint.load_train_state(run_dir)
        check_saved_state(saved, run_dir)
        config = dict(saved["config"])
        given = {k: v for k, v in vars(args).items() if v is not None and k not in RESUME_OVERRIDABLE}
        changed = [k for k, v in given.items() if (list(v) if k == "canvas" else v) != config.get(k)]
        if changed:
            raise TrainError(f"cannot change --{changed[0].replace('_', '-')} of a run when resuming "
                             f"(it was {config.get(changed[0])!r}); start a new run instead")
        for k in ("epochs", "checkpoint_every", "eval_batch_size"):
            if getattr(args, k) is not None:
                config[k] = getattr(args, k)
        return run_dir, config, saved, tensors, None
    if args.arch is not None and args.arch not in ARCHS:
        raise TrainError(f"unknown --arch {args.arch!r}; choose from {', '.join(ARCHS)}")
    if args.weights and args.weights_backbone:
        raise TrainError("--weights and --weights-backbone exclude each other (--weights holds a backbone too)")
    start = weights_info(args.weights, args.arch) if args.weights else None
    config = resolve_config(args, start.arch if start else None)
    if args.weights_backbone:
        start = backbone_info(args.weights_backbone, args.arch)
    config["frozen_bn"] = bool(start and start.frozen_bn)
    run_dir = Path(args.out or new_run_dir(config["arch"], config["data"]))
    if (run_dir / checkpoint.RESUME_POINTER).exists():
        raise TrainError(f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                         "or choose another --out")
    return run_dir, config, None, None, start


def train(args: argparse.Namespace) -> Path:
    device = distributed.parse_device(args.device)
    d, device = distributed.init(device)
    run_dir, config, saved, tensors, start = open_run(args)
    if config["amp"] and device.type != "cuda":
        raise TrainError(f"--amp needs a CUDA device (training on {device.type})")
    workers = default_workers(device) if args.workers is None else args.workers
    say = tqdm.write if d.is_main else (lambda *a, **k: None)

    train_set, val_set = build_datasets(config["data"], config["val_data"])
    if train_set is val_set:  # coco-val2017: an evaluation set
        say(f"note: {train_set.name} validates on its own training images; its mAP measures fit only")
    for ds in (train_set, val_set):
        if len(ds) == 0:
            raise DatasetError(f"{ds.name}: no images")
        if ds.skip_report():
            say(ds.skip_report())

    torch.manual_seed(config["seed"])
    meta = default_meta(config["arch"], ["__background__", *train_set.class_names], tuple(config["canvas"]),
                        category_ids=train_set.label_category_ids(),
                        arch_kwargs={"frozen_bn": True} if config.get("frozen_bn") else {})
    model = build_model(meta)
    if start:
        note = load_weights(model, start, meta.class_names)
        if note:
            say(note)
    prepare_model(model, device)
    optimizer = make_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda") if config["amp"] else None
    if d.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    sampler = EpochBatchSampler(len(train_set), config["batch_size"], seed=config["seed"],
                                rank=d.rank, world_size=d.world_size)
    schedule = LRSchedule(config["lr"], config["epochs"] * sampler.batches_per_epoch,
                          min(config["warmup_iters"], sampler.batches_per_epoch * config["epochs"] // 2),
                          config["schedule"])
    progress = Progress()
    if saved is not None:
        try:
            progress = restore_state(saved, tensors, model, optimizer, scaler, d)
        except TrainError:
            raise
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as e:  # what torch and Progress raise
            raise checkpoint.CheckpointError(f"{run_dir / checkpoint.RESUME_POINTER}: the saved training state "
                                             f"does not fit this run ({first_line(e)})") from None
        del tensors
        say(f"resuming {run_dir} at epoch {progress.epoch + 1}, batch {progress.batch}, step {progress.step}")
        if progress.epoch >= config["epochs"]:
            say(f"{run_dir}: all {config['epochs']} epochs are done; pass --epochs N to train longer")
            return run_dir
    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        say(f"run {run_dir}: {config['arch']} on {train_set.name} ({len(train_set)} images, val "
            f"{len(val_set)}), canvas {meta.canvas[0]}x{meta.canvas[1]}, {config['epochs']} epoch(s) x "
            f"{sampler.batches_per_epoch} steps of {config['batch_size']} x {d.world_size} process(es), "
            f"{config['optimizer']} lr {config['lr']:g}, device {device}")
    val_gt = val_set.coco_dict() if d.is_main else None
    log_every = 10

    for epoch in range(progress.epoch, config["epochs"]):
        sampler.set_epoch(epoch, progress.batch)
        loader = make_loader(train_set, meta.canvas, sampler, train=True, workers=workers)
        started = time.time()
        bar = tqdm(total=sampler.batches_per_epoch, initial=progress.batch, unit="step",
                   desc=f"epoch {epoch + 1}/{config['epochs']}", disable=not d.is_main, dynamic_ncols=True)
        skipped_before = Counter(train_set.skipped)
        for batch in loader:
            train_set.skipped.update(batch["skipped"])
            lr = schedule(progress.step)
            losses = step_on_batch(model, batch, optimizer, scaler, lr, device)
            if not math.isfinite(losses["loss"]):
                raise TrainError(f"loss is {losses['loss']} at step {progress.step}; lower --lr")
            progress.step += 1
            progress.batch += 1
            for k, v in losses.items():
                progress.loss_sums[k] = progress.loss_sums.get(k, 0.0) + v
            progress.window.append(losses["loss"])
            if len(progress.window) == log_every:
                progress.steps.append([progress.step, sum(progress.window) / log_every, lr])
                progress.window = []
            bar.set_postfix(loss=f"{losses['loss']:.3f}", lr=f"{lr:.2e}", refresh=False)
            bar.update()
            if config["checkpoint_every"] and progress.step % config["checkpoint_every"] == 0 \
                    and progress.batch < sampler.batches_per_epoch:
                progress.skipped = dict(Counter(progress.skipped) + (Counter(train_set.skipped) - skipped_before))
                skipped_before = Counter(train_set.skipped)
                progress.epoch_time += time.time() - started
                started = time.time()
                save_state(run_dir, model, optimizer, scaler, progress, config, d)
        bar.close()

        # epoch end: add up over processes, evaluate on the main process, write everything
        skipped = Counter(progress.skipped) + (Counter(train_set.skipped) - skipped_before)
        all_skipped = sum((Counter(s) for s in distributed.gather(d, dict(skipped))), Counter())
        sums = distributed.gather(d, progress.loss_sums)
        train_time = progress.epoch_time + time.time() - started
        if d.is_main:
            t0 = time.time()
            stats, _ = evaluate_model(unwrap(model), val_set, meta, device, config["eval_batch_size"],
                                      workers, gt=val_gt)
            n = progress.batch * d.world_size
            record = dict(epoch=epoch + 1, step=progress.step, lr=lr,
                          **{k: sum(s.get(k, 0.0) for s in sums) / n for k in ("loss", *plots.LOSS_KEYS)},
                          coco=stats, images=progress.batch * config["batch_size"] * d.world_size,
                          train_time_s=round(train_time, 2), eval_time_s=round(time.time() - t0, 2),
                          skipped=dict(all_skipped), val_skipped=dict(val_set.skipped))
            progress.history.append(record)
            if stats["AP@[.5:.95]"] > progress.best_map:
                progress.best_map, progress.best_epoch = stats["AP@[.5:.95]"], epoch + 1
            write_outputs(run_dir, model, meta, progress, config, record)
            say(f"epoch {epoch + 1}: loss {record['loss']:.4f}, mAP@[.5:.95] {stats['AP@[.5:.95]']:.4f}, "
                f"mAP@.5 {stats['AP@.5']:.4f} (train {train_time:.0f} s, eval {record['eval_time_s']:.0f} s)")
            if all_skipped:
                say(f"{train_set.name}: skipped " + ", ".join(f"{v} {k}" for k, v in sorted(all_skipped.items())))
        progress.epoch, progress.batch = epoch + 1, 0
        progress.loss_sums, progress.skipped, progress.epoch_time = {}, {}, 0.0
        save_state(run_dir, model, optimizer, scaler, progress, config, d)
        distributed.barrier(d)

    if d.is_main:
        say(f"done: best mAP@[.5:.95] {progress.best_map:.4f} (epoch {progress.best_epoch}) -> "
            f"{run_dir / 'model.safetensors'}")
    return run_dir


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except (TrainError, DatasetError, DeviceError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # e.g. a full disk under metrics.jsonl or a plot (checkpoints say so themselves)
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    finally:
        distributed.cleanup()
    return 0
