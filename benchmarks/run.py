#!/usr/bin/env python
"""Benchmark every runtime on this machine: COCO mAP, parity and ms per image.

    python benchmarks/run.py                                  # train/reuse the default tiny model, all runtimes
    python benchmarks/run.py --model runs/my-run --runtime onnxruntime,openvino
    python benchmarks/run.py --model random:resnet50_fpn --eval-images 0 --iters 5   # R50 speed only
    python benchmarks/run.py --model torchvision:resnet50_fpn --data coco-val2017    # torchvision's COCO box AP

With no --model, the default tiny model is trained on the built-in shapes data (or reused
from runs/default-tiny). Each runtime gets its artifact exported from the checkpoint, then:
status, artifact size, COCO mAP/AP50 (pycocotools, detections saved as COCO JSON), parity
against the PyTorch deploy graph, model-only and end-to-end latency p50/p90/p99 (warm-up,
runtimes alternating in rounds), throughput, peak memory and start-up time (each in a fresh
process). Writes results.json (with hardware and versions), report.md and a latency-vs-mAP
plot; exits 1 when a runtime's mAP falls below the reference by more than --max-map-drop.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/run.py` puts benchmarks/, not the repo, on the path
    sys.path.insert(0, str(ROOT))

from benchmarks import report, system, timing  # noqa: E402
from exporters.cli import fail  # noqa: E402
from runtimes.base import first_line  # noqa: E402

DEFAULT_RUN = Path("runs/default-tiny")
ALL = ("torch", "onnxruntime", "openvino", "tensorrt")
THREADED = ("torch", "torchvision", "onnxruntime", "openvino")


@dataclass
class Row:
    name: str  # what the table shows
    runtime: str  # runtimes.load's runtime
    precision: str = "fp32"
    artifact: Path | None = None
    status: str = "ok"
    detector: object = None
    result: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}-{self.precision}"


# ------------------------------------------------------------------ model and artifacts
def default_model() -> Path:
    """The default tiny shapes model: reused when trained before, trained now otherwise."""
    if (DEFAULT_RUN / "model.safetensors").exists():
        print(f"using the cached default model {DEFAULT_RUN} (delete it to retrain)")
        return DEFAULT_RUN
    print(f"no model given: training the default tiny model on shapes into {DEFAULT_RUN} ...", flush=True)
    cmd = [sys.executable, "-m", "trainer", "--data", "shapes", "--arch", "tiny", "--out", str(DEFAULT_RUN)]
    if subprocess.run(cmd, cwd=os.getcwd()).returncode != 0:
        fail("training the default model failed (see above)")
    return DEFAULT_RUN


def random_model(arch: str, work: Path) -> Path:
    """A randomly initialised model with COCO's classes, for speed measurements."""
    import torch
    from torchvision.models._meta import _COCO_CATEGORIES

    from trainer.checkpoint import save_checkpoint
    from trainer.models import ARCHS, build_model, default_meta

    if arch not in ARCHS:
        fail(f"unknown architecture {arch!r} in random:ARCH; choose from {', '.join(ARCHS)}")
    path = work / f"random-{arch}" / "model.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        # the module tree of torchvision's pretrained COCO models: FrozenBatchNorm2d in the backbone
        meta = default_meta(arch, list(_COCO_CATEGORIES), provenance={"weights": "random"},
                            arch_kwargs={"frozen_bn": arch != "tiny"})
        save_checkpoint(path, build_model(meta).eval(), meta)
    return path


def pretrained_model(spec: str, work: Path) -> Path:
    """Named weights (torchvision:ARCH, a URL: trainer.weights) as one of our checkpoints, so that
    every row and fresh process loads plain safetensors; kept per weights file."""
    from trainer.checkpoint import CheckpointError, load_any, save_checkpoint
    from trainer.weights import cache_path, lookup

    try:
        path = work / cache_path(lookup(spec)[0]).stem / "model.safetensors"
        if not path.exists():
            model, meta = load_any(spec)
            save_checkpoint(path, model, meta)
    except CheckpointError as e:
        fail(first_line(e))
    return path.resolve()  # the fresh-process probes run elsewhere


def newer_than(artifact: Path, checkpoint: Path) -> bool:
    """Whether `artifact` exists and was written after `checkpoint` (a file, or a run dir's weights)."""
    weights = checkpoint if checkpoint.is_file() else checkpoint / "model.safetensors"
    return artifact.exists() and artifact.stat().st_mtime >= weights.stat().st_mtime


def add_speed_args(p: argparse.ArgumentParser, work_name: str) -> None:
    """The options of the focused speed scripts: which model (exported_onnx), threads, images, rounds."""
    p.add_argument("--checkpoint", help="checkpoint to time (default: a random R50-FPN, COCO classes, 800x1344)")
    p.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / work_name,
                   help="where the exported files are kept between runs (default %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="threads for every runtime (default 2)")
    p.add_argument("--images", type=int, default=3, help="distinct test images (default 3)")
    p.add_argument("--rounds", type=int, default=4, help="passes over the images, alternating (default 4)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls of each first (default 2)")
    p.add_argument("--json", type=Path, help="also write the results here")


def check_speed_args(p: argparse.ArgumentParser, a) -> None:
    if min(a.threads, a.images, a.rounds) < 1 or a.warmup < 0:
        p.error("--threads, --images and --rounds must be at least 1, --warmup at least 0")
    if a.checkpoint and not Path(a.checkpoint).exists():
        p.error(f"--checkpoint {a.checkpoint}: no such file or directory")


def exported_onnx(work: Path, checkpoint: str | None = None) -> tuple[Path, Path]:
    """(checkpoint, work/model.onnx): `checkpoint`, or a random R50-FPN with COCO's classes
    (800x1344), exported to standard ONNX (batch 1) unless an export newer than it is there."""
    from exporters.cli import load_source
    from exporters.onnx import export_onnx

    checkpoint = Path(checkpoint) if checkpoint else random_model("resnet50_fpn", work)
    onnx_path = work / "model.onnx"
    if not newer_than(onnx_path, checkpoint):
        model, meta = load_source(str(checkpoint))
        print(f"exporting {meta.arch} {meta.canvas[0]}x{meta.canvas[1]} to {onnx_path} ...", flush=True)
        export_onnx(model, meta, onnx_path, batch=1)
    return checkpoint, onnx_path


def plan(wanted: list[str], device: str) -> list[Row]:
    """The rows to measure: torchvision's eager model (the speed baseline), the PyTorch deploy
    graph (the parity reference), then each requested runtime and precision."""
    import runtimes

    rows = [Row("torchvision", "torchvision"), Row("torch", "torch")]
    if "onnxruntime" in wanted:
        rows.append(Row("onnxruntime", "onnxruntime"))
    if "openvino" in wanted:
        rows += [Row("openvino", "openvino"), Row("openvino", "openvino", "fp16-weights")]
    if "tensorrt" in wanted:
        rows.append(Row("tensorrt", "tensorrt", "fp16"))
    for row in rows:
        reason = runtimes.unavailable(row.runtime, device)
        if reason:
            row.status = f"not available: {reason}"
    return rows


def export_all(rows: list[Row], checkpoint: Path, model, meta, work: Path, batch: int) -> None:
    """Write each row's artifact (of `model`, loaded from `checkpoint`) into `work`, reused when
    newer than the checkpoint."""
    fresh = lambda p: newer_than(p, Path(checkpoint))  # noqa: E731
    onnx_path = work / f"model.b{batch}.onnx"
    for row in rows:
        if row.status != "ok":
            continue
        if row.runtime in ("torch", "torchvision"):
            row.artifact = Path(checkpoint)
            continue
        t0 = time.perf_counter()
        try:
            if row.runtime in ("onnxruntime", "openvino") and not fresh(onnx_path):
                from exporters.onnx import export_onnx

                print(f"exporting ONNX -> {onnx_path} ...", flush=True)
                export_onnx(model, meta, onnx_path, batch=batch)
            if row.runtime == "onnxruntime":
                row.artifact = onnx_path
            elif row.runtime == "openvino":
                from exporters.openvino import convert

                xml = work / f"openvino-{row.precision}" / "model.xml"
                if not fresh(xml):
                    print(f"converting to OpenVINO IR ({row.precision}) -> {xml} ...", flush=True)
                    convert(onnx_path, xml, fp16_weights=row.precision == "fp16-weights")
                row.artifact = xml
            elif row.runtime == "tensorrt":
                from exporters.trt import build_from_checkpoint

                engine = work / f"model.{row.precision}.engine"
                if not fresh(engine):
                    print(f"building TensorRT engine ({row.precision}) -> {engine} ...", flush=True)
                    build_from_checkpoint(model, meta, engine, fp16=row.precision == "fp16", batch=batch)
                row.artifact = engine
        except Exception as e:
            row.status = f"export failed: {first_line(e)}"
            continue
        row.result["export_s"] = time.perf_counter() - t0


def artifact_mb(path: Path) -> float:
    files = [path] if path.is_file() else []
    if path.suffix == ".xml":
        files.append(path.with_suffix(".bin"))
    if path.is_dir():
        files = [path / "model.safetensors"]
    return sum(f.stat().st_size for f in files if f.exists()) / 2**20


# ------------------------------------------------------------------ measurements
def probe(row: Row, device: str, threads: int, batch: int) -> None:
    """Start-up time (imports + load + first inference) and peak RSS, in a fresh process."""
    opts = {"threads": threads} if row.runtime in THREADED else {}
    try:
        row.result.update(timing.fresh_start(row.artifact, row.runtime, device, batch, **opts))
    except RuntimeError as e:
        row.status = f"load failed: {e}"


def accuracy(rows: list[Row], images, gt, ids, meta, batch: int, out: Path) -> None:
    """Detections of every row on the evaluation images -> COCO JSON, mAP, parity vs the deploy graph."""
    from tqdm import tqdm

    from runtimes.coco import evaluate, to_coco_results
    from runtimes.parity import compare

    dets = {}
    for row in rows:
        found = []
        for start in tqdm(range(0, len(images), batch), desc=f"accuracy {row.key}", unit="batch", leave=False):
            found += row.detector(images[start: start + batch])
        dets[row.key] = found
        results = [r for i, d in zip(ids, found) for r in to_coco_results(i, d.boxes, d.scores, d.labels,
                                                                            meta.category_ids)]
        path = out / f"detections_{row.key}.json"
        path.write_text(json.dumps(results))
        stats = evaluate(gt, results)
        row.result.update(map=stats["AP@[.5:.95]"], ap50=stats["AP@.5"], detections_file=path.name)
    ref = next((r for r in rows if r.runtime == "torch"), None)
    for row in rows:
        if ref is None or row is ref:
            continue
        rep = compare(dets[ref.key], dets[row.key], tolerances(row.precision), gt=gt, image_ids=ids,
                      category_ids=meta.category_ids)
        row.result["parity"] = rep.to_dict()
        if not rep.passed and row.status == "ok":
            row.status = "parity failed: " + "; ".join(rep.failures())


def latency(rows: list[Row], images, batch: int, warmup: int, iters: int | None, seconds: float | None) -> None:
    """Model-only (canvas batch in -> padded outputs) and end-to-end (images -> boxes in image pixels)."""
    sample = [images[i % len(images)] for i in range(batch)]
    canvases = {row.key: row.detector.prepare(sample)[0] for row in rows}
    model_calls = {row.key: (lambda r=row: r.detector.infer_batched(canvases[r.key])) for row in rows}
    e2e_calls = {row.key: (lambda r=row: r.detector(sample)) for row in rows}
    for kind, calls in (("latency_model", model_calls), ("latency_e2e", e2e_calls)):
        times = timing.interleaved(calls, warmup, iters, seconds, desc=kind.replace("_", " "))
        for row in rows:
            row.result[kind] = timing.percentiles(times[row.key])
    for row in rows:
        e2e = row.result["latency_e2e"]
        row.result["throughput"] = batch / (e2e["mean_ms"] / 1000) if e2e else None
    base = next((r for r in rows if r.runtime == "torchvision"), None)
    for row in rows:
        if base is not None:
            row.result["speedup"] = base.result["latency_e2e"]["p50_ms"] / row.result["latency_e2e"]["p50_ms"]


def tolerances(precision: str):
    """Parity thresholds of a row: strict for fp32, runtimes.parity.FP16 otherwise."""
    from runtimes.parity import FP16, Thresholds

    return Thresholds() if precision == "fp32" else FP16


# ------------------------------------------------------------------ main
def parse_args(argv):
    p = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="run dir, checkpoint, .pth, random:ARCH, or named weights (torchvision:resnet50_fpn, "
                                   "_v2, mobilenet_v3_large_fpn, mobilenet_v3_large_320_fpn; a URL) "
                                   "(default: the tiny shapes model)")
    p.add_argument("--runtime", default="all", help="torch, onnxruntime, openvino, tensorrt, a comma list, or all")
    p.add_argument("--data", help="evaluation data, any trainer --data spec, e.g. coco-val2017[:DIR] (found under "
                                  "DIR or $COCO_ROOT, else downloaded) (default: the checkpoint's dataset, its "
                                  "validation split)")
    p.add_argument("--eval-images", type=int, help="images for mAP/parity (default: the whole validation split; 0: skip)")
    p.add_argument("--batch", type=int, default=1, help="batch size for export and timing (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads per runtime (default: all cores)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per runtime first (default 3)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--iters", type=int, help="timed rounds (default 20)")
    g.add_argument("--seconds", type=float, help="time rounds for this long instead of --iters")
    p.add_argument("--max-map-drop", type=float, default=0.01,
                   help="exit 1 when a runtime's mAP is below the reference's by more than this (default 0.01)")
    p.add_argument("--out", type=Path, help="results folder (default runs/bench/HOST-TIME)")
    a = p.parse_args(argv)
    a.runtimes = list(ALL) if a.runtime == "all" else [r.strip() for r in a.runtime.split(",")]
    bad = [r for r in a.runtimes if r not in ALL]
    if bad:
        p.error(f"unknown runtime(s) {', '.join(bad)}; choose from {', '.join(ALL)} or all")
    if a.batch < 1 or a.threads < 1:
        p.error("--batch and --threads must be at least 1")
    if a.iters is None and a.seconds is None:
        a.iters = 20
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    import platform

    out = a.out or Path("runs/bench") / f"{platform.node() or 'host'}-{time.strftime('%Y%m%d-%H%M%S')}"
    if a.data:  # before any export: a dataset that cannot be had is one line, not a fallback
        from trainer.data import DatasetError, validation_set

        try:
            validation_set(a.data)
        except DatasetError as e:
            fail(first_line(e))
    from trainer.weights import is_named

    if a.model and a.model.startswith("random:"):
        checkpoint = random_model(a.model.split(":", 1)[1], Path("runs/bench-models"))
    elif a.model and is_named(a.model):
        checkpoint = pretrained_model(a.model, Path("runs/bench-models"))
    elif a.model:
        if not Path(a.model).exists():
            fail(f"{a.model}: no such model")
        checkpoint = Path(a.model)
    else:
        checkpoint = default_model()

    import torch

    torch.set_num_threads(a.threads)
    import runtimes
    from exporters.cli import load_source
    from exporters.verify import sample_images

    model, meta = load_source(str(checkpoint))
    rows = plan(a.runtimes, a.device)
    out.mkdir(parents=True, exist_ok=True)
    export_all(rows, checkpoint, model, meta, out / "artifacts", a.batch)
    del model  # every runtime loads its own from the artifact
    live = [r for r in rows if r.status == "ok"]
    for row in live:
        row.result["size_mb"] = artifact_mb(row.artifact)
        probe(row, a.device, a.threads, a.batch)
    live = [r for r in rows if r.status == "ok"]
    for row in live:
        opts = {"threads": a.threads} if row.runtime in THREADED else {}
        row.detector = runtimes.load(row.artifact, device=a.device, runtime=row.runtime, **opts)

    if a.data:
        meta.provenance = dict(meta.provenance, dataset=a.data, val_dataset=None)
    n_eval = a.eval_images if a.eval_images is not None else 10**9
    images, gt, ids, source = sample_images(meta, max(n_eval, a.batch))
    if n_eval and gt is not None:
        print(f"accuracy on {source}")
        accuracy(live, images[:n_eval], gt, ids[:n_eval], meta, a.batch, out)
        (out / "ground_truth.json").write_text(json.dumps(gt))
    elif n_eval:
        print(f"no ground truth for {meta.arch}'s classes here: mAP and parity skipped (timing on {source})")
    print(f"timing {len(live)} runtimes: batch {a.batch}, {a.threads} threads, {a.warmup} warm-up, "
          f"{a.iters or str(a.seconds) + ' s'} rounds")
    latency(live, images, a.batch, a.warmup, a.iters, a.seconds)

    settings = dict(model=str(checkpoint), arch=meta.arch, canvas=list(meta.canvas), batch=a.batch, device=a.device,
                    threads=a.threads, warmup=a.warmup, iters=a.iters, seconds=a.seconds,
                    eval_images=len(ids[:n_eval]) if (n_eval and gt is not None) else 0)
    result = dict(system=system.describe(), settings=settings,
                  rows=[dict(name=r.name, precision=r.precision, runtime=r.runtime, status=r.status,
                             artifact=str(r.artifact) if r.artifact else None, **r.result) for r in rows])
    (out / "results.json").write_text(json.dumps(result, indent=2))
    title = f"{meta.arch} {meta.canvas[0]}x{meta.canvas[1]}, batch {a.batch}, {a.device}, {a.threads} threads"
    (out / "report.md").write_text(report.markdown([result], f"frcnn-deploy benchmark: {title}"))
    report.plot([result], out / "latency_vs_map.png", title)
    print()
    print(report.table(result["rows"]))
    print(f"\nwrote {out}/results.json, report.md, latency_vs_map.png")
    return gate(result["rows"], a.max_map_drop)


def gate(rows: list[dict], max_drop: float) -> int:
    ref = next((r for r in rows if r["runtime"] == "torch" and r.get("map") is not None), None)
    if ref is None:
        return 0
    low = [r for r in rows if r.get("map") is not None and r["map"] < ref["map"] - max_drop]
    for r in low:
        print(f"GATE: {r['name']} {r['precision']} mAP {r['map']:.4f} is below the reference "
              f"{ref['map']:.4f} by more than {max_drop}", file=sys.stderr)
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
