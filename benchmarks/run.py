#!/usr/bin/env python
"""Benchmark every runtime on this machine: COCO mAP, parity and ms per image.

    python benchmarks/run.py                                  # train/reuse the default tiny model, all runtimes
    python benchmarks/run.py --model runs/my-run --runtime onnxruntime,openvino
    python benchmarks/run.py --model random:resnet50_fpn --eval-images 0 --iters 5   # R50 speed only
    python benchmarks/run.py --model torchvision:resnet50_fpn --data coco-val2017    # torchvision's COCO box AP
    python benchmarks/run.py --model model.onnx               # one artifact alone: .onnx, .xml (or its folder), .engine
    python benchmarks/run.py --cross-check                    # and each runtime's own tool beside our figure
    python benchmarks/run.py --runtime onnxruntime,triton --triton-url triton://127.0.0.1:8000/frcnn_tiny
    python benchmarks/run.py --model triton://127.0.0.1:8000/frcnn_tiny   # a served model alone

With no --model, the default tiny model is trained on the built-in shapes data (or reused
from runs/default-tiny). Each row (a runtime at a precision, see ROWS) gets its artifact
exported from the checkpoint, then: status, artifact size, COCO mAP/AP50 (pycocotools,
detections saved as COCO JSON), parity against the PyTorch deploy graph, latency model only
and end to end (p50/p90/p99 and coefficient of variation), throughput, peak memory and
start-up time (each in a fresh process).

Latency is timed as benchmark_app and trtexec time it (benchmarks.timing): back-to-back
blocks of calls, one block per row per round, the rows' order rotating across rounds, an idle
pause and an untimed call before each block; model only is read inside the same end-to-end
calls, so end to end >= model only by construction (a row where not is flagged). A row whose
coefficient of variation exceeds --cv-warn gets a warning. --cross-check then runs OpenVINO's
benchmark_app, ONNX Runtime's own profiler and trtexec (where TensorRT is installed) on the
same artifacts, threads, precision and canvas, and prints their medians next to ours.

The int8 rows (ONNX Runtime Q/DQ, OpenVINO through NNCF; exporters.qdq, exporters.openvino_int8)
are calibrated on --calib-images of the checkpoint's training data (or --calib-data) and held by
the mAP gate below, their parity only reported. --precision picks the precisions measured.

--model naming an artifact benchmarks it alone: mAP on --data (default: the dataset its
metadata names) and latency; ONNX Runtime, OpenVINO and TensorRT artifacts import no torch.

Where the CPU has bf16, --runtime openvino adds `openvino bf16` (an IR recording bf16, see
exporters.openvino --precision) and torchvision eager under torch.autocast bf16, its fair
baseline; each row records the precision it really ran in (OpenVINO's, after compiling). bf16
rows are held by the mAP gate, their parity only reported; "vs torchvision" stays against fp32.

A model served by Triton (exporters.triton, from an export of the same checkpoint) is a row
like any other: --triton-url URL with --runtime ...,triton, or --model URL alone. It gets mAP,
parity and latency as the others do (its size and export are the server's business), then the
images/s of 1, 4 and 16 concurrent one-image clients, beside the direct ONNX Runtime adapter
when that row is in the run (benchmarks.concurrency).

Writes results.json (with hardware and versions), report.md, latency_vs_map.png and
speedup.png; exits 1 when a runtime's mAP falls below the reference by more than --max-map-drop.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/run.py` puts benchmarks/, not the repo, on the path
    sys.path.insert(0, str(ROOT))

from benchmarks import report, system, timing  # noqa: E402
from exporters.cli import fail  # noqa: E402
from runtimes.base import ModelLoadError, first_line  # noqa: E402

DEFAULT_RUN = Path("runs/default-tiny")
THREADED = ("torch", "torchvision", "onnxruntime", "openvino")  # runtimes that take a thread count
REDUCED = ("bf16",)  # precisions measured only where the CPU has them, mAP-gated (exporters.gate)
SERVED = ("triton",)  # rows whose model runs on a server (--triton-url): not part of "all"


# ------------------------------------------------------------------ the rows
@dataclass(frozen=True)
class RowKind:
    """A kind of row: a runtime at a precision, how its artifact is made from the checkpoint
    (`make(artifacts, kind) -> path`; None: the checkpoint itself) and the extra runtimes.load
    options it runs with. A new precision or runtime is one more entry in ROWS."""

    name: str  # what the table shows
    runtime: str  # runtimes.load's runtime
    precision: str = "fp32"
    make: Callable[["Artifacts", "RowKind"], Path] | None = None
    options: dict = field(default_factory=dict, hash=False)


@dataclass
class Row:
    kind: RowKind
    artifact: Path | str | None = None  # a file, or a served model's URL
    status: str = "ok"
    detector: object = None
    result: dict = field(default_factory=dict)

    name = property(lambda self: self.kind.name)
    runtime = property(lambda self: self.kind.runtime)
    precision = property(lambda self: self.kind.precision)

    @property
    def key(self) -> str:
        return f"{self.name}-{self.precision}"


class Artifacts:
    """The exported files of one checkpoint in `work`, each written once and reused while newer
    than the checkpoint."""

    def __init__(self, checkpoint: Path, model, meta, work: Path, batch: int, triton_url: str | None = None,
                 calib_images: int = 300, calib_data: str | None = None):
        self.checkpoint, self.model, self.meta, self.work, self.batch = Path(checkpoint), model, meta, work, batch
        self.triton_url = triton_url
        self.calib_images, self.calib_data = calib_images, calib_data
        self._calibration = None

    def fresh(self, path: Path) -> bool:
        return newer_than(path, self.checkpoint)

    def onnx(self) -> Path:
        """Standard-flavour ONNX at the run's batch."""
        path = self.work / f"model.b{self.batch}.onnx"
        if not self.fresh(path):
            from exporters.onnx import export_onnx

            print(f"exporting ONNX -> {path} ...", flush=True)
            export_onnx(self.model, self.meta, path, batch=self.batch)
        return path

    def openvino(self, precision: str) -> Path:
        """An IR converted from onnx(), its weights in fp32 or compressed to fp16 ("fp16-weights"),
        or recording bf16 as its inference precision ("bf16")."""
        xml = self.work / f"openvino-{precision}" / "model.xml"
        source = self.onnx()
        if not self.fresh(xml):
            from exporters.openvino import convert

            print(f"converting to OpenVINO IR ({precision}) -> {xml} ...", flush=True)
            convert(source, xml, fp16_weights=precision == "fp16-weights",
                    inference_precision="bf16" if precision == "bf16" else "f32")
        return xml

    def calibration(self):
        """The INT8 rows' one calibration set (exporters.calibration), decoded once."""
        if self._calibration is None:
            from exporters.calibration import calibration_set

            self._calibration = calibration_set(self.meta, self.calib_images, self.calib_data)
        return self._calibration

    def onnx_int8(self) -> Path:
        """onnx() quantized for ONNX Runtime (Q/DQ, uint8 activations), calibrated on calibration()."""
        path = self.work / f"model.b{self.batch}.int8-c{self.calib_images}.onnx"  # a new calibration, a new file
        source = self.onnx()
        if not self.fresh(path):
            from exporters.qdq import calibrate, quantize_onnx

            print(f"quantizing ONNX to INT8 ({self.calib_images} calibration images) -> {path} ...", flush=True)
            quantize_onnx(calibrate(source, self.calibration(), self.work / "int8-calibration"), path)
        return path

    def openvino_int8(self) -> Path:
        """The fp32 IR quantized by NNCF (post-processing float), calibrated on calibration()."""
        import onnx

        xml = self.work / f"openvino-int8-c{self.calib_images}" / "model.int8.xml"
        fp32 = self.openvino("fp32")
        if not self.fresh(xml):
            from exporters.openvino_int8 import quantize_ir

            print(f"quantizing the IR to INT8 with NNCF ({self.calib_images} calibration images) -> {xml} ...",
                  flush=True)
            quantize_ir(fp32, xml, self.calibration(), onnx.load(str(self.onnx())))
        return xml

    def tensorrt(self, precision: str) -> Path:
        engine = self.work / f"model.{precision}.engine"
        if not self.fresh(engine):
            from exporters.trt import build_from_checkpoint

            print(f"building TensorRT engine ({precision}) -> {engine} ...", flush=True)
            build_from_checkpoint(self.model, self.meta, engine, fp16=precision == "fp16", batch=self.batch)
        return engine

    def triton(self) -> str:
        """The served model (--triton-url): exported and served beforehand, by exporters.triton and a server."""
        if not self.triton_url:
            raise ValueError("--runtime triton needs --triton-url URL")
        return self.triton_url


ROWS = (
    RowKind("torchvision", "torchvision"),  # torchvision's eager model: the speed baseline
    # the same under bf16 autocast: the fair baseline of the bf16 rows, planned only beside one
    RowKind("torchvision", "torchvision", "bf16", options=dict(precision="bf16")),
    RowKind("torch", "torch"),  # the PyTorch deploy graph: the parity reference
    RowKind("onnxruntime", "onnxruntime", make=lambda art, kind: art.onnx()),
    RowKind("openvino", "openvino", make=lambda art, kind: art.openvino(kind.precision)),
    RowKind("openvino", "openvino", "fp16-weights", make=lambda art, kind: art.openvino(kind.precision)),
    RowKind("openvino", "openvino", "bf16", make=lambda art, kind: art.openvino(kind.precision)),
    RowKind("onnxruntime", "onnxruntime", "int8", make=lambda art, kind: art.onnx_int8()),
    RowKind("openvino", "openvino", "int8", make=lambda art, kind: art.openvino_int8()),
    RowKind("tensorrt", "tensorrt", "fp16", make=lambda art, kind: art.tensorrt(kind.precision)),
    RowKind("triton", "triton", make=lambda art, kind: art.triton()),
)
ALWAYS = ("torchvision", "torch")  # the baseline and the reference join every checkpoint run
ALL = tuple(dict.fromkeys(k.runtime for k in ROWS if k.runtime not in ("torchvision", *SERVED)))  # "all"
PRECISIONS = tuple(dict.fromkeys(k.precision for k in ROWS))  # what --precision selects
GATED = ("int8", *REDUCED)  # precisions held by the mAP gate (exporters.gate), their parity reported only


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


def resolve_model(spec: str | None) -> tuple[Path | None, Row | None]:
    """--model as (checkpoint, None) or (None, the artifact's row).

    A run dir, checkpoint, .pth, random:ARCH or named weights (torchvision:ARCH, a URL) is a
    checkpoint; an .onnx, .xml (or a folder holding one) or .engine is an artifact, benchmarked
    alone by the runtime runtimes.load picks for it, and so is a triton:// or triton+grpc:// URL."""
    if not spec:
        return default_model(), None
    from runtimes.triton import is_triton_url

    if is_triton_url(spec):  # a served model: no file, no torch
        return None, Row(RowKind("triton", "triton"), artifact=spec)
    if spec.startswith("random:"):
        return random_model(spec.split(":", 1)[1], Path("runs/bench-models")), None
    if not Path(spec).exists():  # a file or folder here is what it names; only then weights to fetch
        from trainer.weights import is_named  # (imports torch: never for an artifact that exists)

        if is_named(spec):
            return pretrained_model(spec, Path("runs/bench-models")), None
        fail(f"{spec}: no such model")
    import runtimes

    try:
        runtime = runtimes.runtime_for(spec)
    except ModelLoadError as e:
        fail(first_line(e))
    if runtime == "torch":
        return Path(spec), None
    return None, Row(RowKind(runtime, runtime), artifact=Path(spec))


def plan(wanted: list[str], device: str, precisions: list[str] = PRECISIONS) -> list[Row]:
    """The rows to measure: torchvision's eager model (the speed baseline), the PyTorch deploy
    graph (the parity reference), then each requested runtime's rows from ROWS at the requested
    precisions; torchvision under bf16 autocast only beside another bf16 row."""
    import runtimes

    rows = [Row(kind) for kind in ROWS if kind.runtime in ALWAYS or (kind.runtime in wanted and
                                                                       kind.precision in precisions)]
    if not any(r.precision in REDUCED for r in rows if r.runtime not in ALWAYS):
        rows = [r for r in rows if r.runtime not in ALWAYS or r.precision not in REDUCED]
    for row in rows:
        reason = runtimes.unavailable(row.runtime, device) or precision_unavailable(row, device)
        if reason:
            row.status = f"not available: {reason}"
    return rows


def precision_unavailable(row: Row, device: str) -> str | None:
    """Why this CPU cannot run a reduced-precision row natively (one line), or None. (A GPU's
    support is left to its runtime.)"""
    if row.precision not in REDUCED or device.startswith("cuda"):
        return None
    if row.runtime == "openvino":
        from runtimes.openvino import core
        from runtimes.openvino_precision import CAPABILITY, supports

        if not supports(core(), "CPU", row.precision):
            return (f"no {row.precision} on this CPU "
                    f"(OpenVINO's OPTIMIZATION_CAPABILITIES lacks {CAPABILITY[row.precision]})")
        return None
    isa = system.reduced_precision()
    if not (isa["avx512_bf16"] or isa["amx_bf16"]):
        return "no bf16 on this CPU (neither avx512_bf16 nor amx_bf16 in its flags)"
    return None


def export_all(rows: list[Row], artifacts: Artifacts) -> None:
    """Each row's artifact, made by its kind (the checkpoint itself for the PyTorch rows)."""
    for row in rows:
        if row.status != "ok":
            continue
        if row.kind.make is None:
            row.artifact = artifacts.checkpoint
            continue
        t0 = time.perf_counter()
        try:
            row.artifact = row.kind.make(artifacts, row.kind)
        except Exception as e:
            from exporters.calibration import CalibrationError

            # no calibration data (published weights name no training set) is a row this run cannot
            # have, not a broken export
            row.status = f"{'not available' if isinstance(e, CalibrationError) else 'export failed'}: {first_line(e)}"
            continue
        if row.runtime not in SERVED:
            row.result["export_s"] = time.perf_counter() - t0


def artifact_mb(path: Path) -> float:
    files = [path] if path.is_file() else []
    if path.suffix == ".xml":
        files.append(path.with_suffix(".bin"))
    if path.is_dir():
        files = [path / "model.safetensors"] if (path / "model.safetensors").exists() else list(path.iterdir())
    return sum(f.stat().st_size for f in files if f.exists() and f.is_file()) / 2**20


def load_options(row: Row, threads: int) -> dict:
    return {**({"threads": threads} if row.runtime in THREADED else {}), **row.kind.options}


def ran_in(detector) -> dict:
    """The precision a row really ran in, as its runtime reports it: OpenVINO's after compiling
    (and the runtime graph's compute layers: how many in each precision, which kernels), torch's
    autocast."""
    if detector.runtime == "openvino":
        from runtimes.openvino_precision import kernels, layer_precisions

        return dict(inference_precision=detector.inference_precision,
                    layer_precisions=layer_precisions(detector.compiled), kernels=kernels(detector.compiled))
    if detector.runtime in ("torch", "torchvision"):
        return dict(inference_precision=detector.precision)
    return {}


# ------------------------------------------------------------------ measurements
def probe(row: Row, device: str, threads: int, batch: int) -> None:
    """Start-up time (imports + load + first inference) and peak RSS, in a fresh process."""
    try:
        row.result.update(timing.fresh_start(row.artifact, row.runtime, device, batch, **load_options(row, threads)))
    except RuntimeError as e:
        row.status = f"load failed: {e}"


def accuracy(rows: list[Row], images, gt, ids, meta, batch: int, out: Path) -> None:
    """Detections of every row on the evaluation images -> COCO JSON, mAP, parity vs the deploy graph.
    Scored against the ground truth of exactly these images (written to ground_truth.json): the
    rest of the split, never run, would count as misses."""
    from tqdm import tqdm

    from runtimes.coco import evaluate, restrict, to_coco_results
    from runtimes.parity import compare

    gt = restrict(gt, ids)
    (out / "ground_truth.json").write_text(json.dumps(gt))
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


def latency(rows: list[Row], sample: list, a) -> None:
    """Model-only (canvas batch in -> padded outputs) and end-to-end (images -> boxes in image
    pixels) latency of every row, both from the same calls, timed in alternating blocks."""
    calls = {row.key: timing.staged(row.detector, sample) for row in rows}
    done = timing.blocks(calls, timing.split(a.iters, a.rounds) if a.iters else [0] * a.rounds, a.warmup,
                         a.block_warmup, seconds=a.seconds, desc="latency")
    for row in rows:
        model, e2e = (timing.percentiles(timing.samples(done, row.key, s)) for s in ("model", "e2e"))
        row.result.update(latency_model=model, latency_e2e=e2e, throughput=len(sample) / (e2e["mean_ms"] / 1000),
                          flags=timing_flags(model, e2e, a.cv_warn))
    base = next((r for r in rows if r.runtime == "torchvision" and r.precision == "fp32"), None)
    for row in rows:
        if base is not None:
            for kind in ("model", "e2e"):
                ref, mine = base.result[f"latency_{kind}"], row.result[f"latency_{kind}"]
                row.result[f"speedup_{kind}"] = ref["p50_ms"] / mine["p50_ms"]
            row.result["speedup"] = row.result["speedup_e2e"]
    for row in rows:
        for flag in row.result["flags"]:
            print(f"warning: {row.name} {row.precision} timing is {flag}" + (
                f" (above --cv-warn {a.cv_warn:.0%}): other jobs or clock changes; rerun, or raise --iters"
                if flag.startswith("unstable") else ""), file=sys.stderr)


def concurrent_clients(rows: list[Row], images: list, calls: int) -> None:
    """Images/s of 1, 4 and 16 concurrent one-image clients of each row whose one detector serves
    many threads (a served model, and the direct ONNX Runtime adapter to hold it against); only
    when a served model is in the run."""
    from benchmarks import concurrency

    rows = [r for r in rows if r.runtime in concurrency.THREAD_SAFE]
    if not any(r.runtime in SERVED for r in rows):
        return
    results = concurrency.throughput({r.key: r.detector for r in rows}, images, calls=calls)
    print("concurrent one-image clients, images/s (median of rounds):")
    for row in rows:
        row.result["concurrent"] = {str(c): v for c, v in results[row.key].items()}
        print(f"  {row.key:20s} " + "   ".join(f"{c:2d} clients {v['images_per_s']:6.1f}"
                                               for c, v in results[row.key].items()))


def timing_flags(model: dict, e2e: dict, cv_warn: float) -> list[str]:
    """What the table flags in a row's timing: a coefficient of variation above `cv_warn`, and
    end to end faster than model only at any percentile (the method excludes it: a flag is a bug)."""
    flags = []
    if timing.unstable(model, cv_warn) or timing.unstable(e2e, cv_warn):
        flags.append(f"unstable: coefficient of variation {model['cv']:.1%} model only, {e2e['cv']:.1%} end to end")
    if any(e2e[p] < model[p] for p in ("p50_ms", "p90_ms", "p99_ms")):
        flags.append("e2e < model")
    return flags


def tolerances(precision: str):
    """Parity thresholds of a row: strict for fp32, none for the mAP-gated precisions (reported
    only: the run's gate holds their mAP), runtimes.parity.FP16 otherwise."""
    from exporters.gate import REPORT_ONLY
    from runtimes.parity import FP16, Thresholds

    return Thresholds() if precision == "fp32" else REPORT_ONLY if precision in GATED else FP16


# ------------------------------------------------------------------ main
def parse_args(argv):
    p = argparse.ArgumentParser(prog="python benchmarks/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="run dir, checkpoint, .pth, random:ARCH, named weights (torchvision:resnet50_fpn, "
                                   "_v2, mobilenet_v3_large_fpn, mobilenet_v3_large_320_fpn; a URL), or an "
                                   "artifact: .onnx, .xml, .engine, a served triton://host:port/name (default: the tiny shapes model)")
    p.add_argument("--runtime", default="all",
                   help=f"{', '.join(ALL + SERVED)}, a comma list, or all (default all: all but {', '.join(SERVED)})")
    p.add_argument("--triton-url", help="the served model of --runtime triton: triton://host:8000/name or "
                                        "triton+grpc://host:8001/name (exporters.triton, from the same checkpoint)")
    p.add_argument("--concurrent-calls", type=int, default=8,
                   help="calls per client in the 1/4/16 concurrent-clients throughput of a served model (default 8)")
    p.add_argument("--precision", default="all",
                   help=f"{', '.join(PRECISIONS)}, a comma list, or all (default all); torchvision and the "
                        "PyTorch deploy graph always run in fp32")
    p.add_argument("--calib-images", type=int, default=100, metavar="N",
                   help="calibration images of the int8 rows (default 100; the exporters' default is 300)")
    p.add_argument("--calib-data", metavar="SPEC",
                   help="calibration data of the int8 rows, any trainer --data spec (default: the checkpoint's "
                        "training data; needed for a checkpoint that names none, e.g. random:ARCH)")
    p.add_argument("--data", help="evaluation data, any trainer --data spec, e.g. coco-val2017[:DIR] (found under "
                                  "DIR or $COCO_ROOT, else downloaded) (default: the model's dataset, its "
                                  "validation split)")
    p.add_argument("--eval-images", type=int, help="images for mAP/parity (default: the whole validation split; 0: skip)")
    p.add_argument("--batch", type=int, default=1, help="batch size for export and timing (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads per runtime (default: all cores)")
    t = p.add_argument_group("timing (benchmarks.timing)")
    t.add_argument("--warmup", type=int, default=3, help="untimed calls per row before the first round (default 3)")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--iters", type=int, help="timed calls per row, spread over the rounds (default 40)")
    g.add_argument("--seconds", type=float, help="time each row for about this long instead of --iters")
    t.add_argument("--rounds", type=int, default=4, help="blocks per row, the rows alternating (default 4)")
    t.add_argument("--block-warmup", type=int, default=1,
                   help="untimed calls at the start of each block, after the idle pause (default 1)")
    t.add_argument("--cv-warn", type=float, default=timing.UNSTABLE_CV,
                   help=f"warn when a row's coefficient of variation exceeds this (default {timing.UNSTABLE_CV})")
    p.add_argument("--cross-check", action="store_true",
                   help="also run each runtime's own tool (benchmark_app, ONNX Runtime's profiler, trtexec) "
                        "on the same artifact and print both figures")
    p.add_argument("--max-map-drop", type=float, default=0.01,
                   help="exit 1 when a runtime's mAP is below the reference's by more than this (default 0.01)")
    p.add_argument("--out", type=Path, help="results folder (default runs/bench/HOST-TIME)")
    a = p.parse_args(argv)
    a.runtimes = list(ALL) if a.runtime == "all" else [r.strip() for r in a.runtime.split(",")]
    bad = [r for r in a.runtimes if r not in ALL + SERVED]
    if bad:
        p.error(f"unknown runtime(s) {', '.join(bad)}; choose from {', '.join(ALL + SERVED)} or all")
    if ("triton" in a.runtimes) != bool(a.triton_url):
        p.error("--runtime ...,triton and --triton-url URL go together (or --model URL for the served model alone)")
    if a.concurrent_calls < 1:
        p.error("--concurrent-calls must be at least 1")
    a.precisions = list(PRECISIONS) if a.precision == "all" else [x.strip() for x in a.precision.split(",")]
    bad = [x for x in a.precisions if x not in PRECISIONS]
    if bad:
        p.error(f"unknown precision(s) {', '.join(bad)}; choose from {', '.join(PRECISIONS)} or all")
    from exporters.calibration import MIN_IMAGES

    if a.calib_images < MIN_IMAGES:
        p.error(f"--calib-images must be at least {MIN_IMAGES}")
    if a.batch < 1 or a.threads < 1 or a.rounds < 1:
        p.error("--batch, --threads and --rounds must be at least 1")
    if a.warmup < 0 or a.block_warmup < 0 or (a.iters is not None and a.iters < 1) or (a.seconds or 1) <= 0:
        p.error("--warmup and --block-warmup must be at least 0, --iters at least 1, --seconds positive")
    if a.iters is None and a.seconds is None:
        a.iters = 40
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
    checkpoint, artifact = resolve_model(a.model)
    import runtimes

    if artifact:  # one artifact alone: no checkpoint, no torch unless the artifact's runtime is torch
        rows = [artifact]
        reason = runtimes.unavailable(artifact.runtime, a.device)
        if reason:
            fail(f"{artifact.artifact}: {artifact.runtime} {reason}")
    else:
        import torch

        from exporters.cli import load_source

        torch.set_num_threads(a.threads)
        model, meta = load_source(str(checkpoint))
        rows = plan(a.runtimes, a.device, a.precisions)
        out.mkdir(parents=True, exist_ok=True)
        export_all(rows, Artifacts(checkpoint, model, meta, out / "artifacts", a.batch, a.triton_url,
                                   a.calib_images, a.calib_data))
        del model  # every runtime loads its own from the artifact
    out.mkdir(parents=True, exist_ok=True)
    for row in [r for r in rows if r.status == "ok"]:
        try:
            row.detector = runtimes.load(row.artifact, device=a.device, runtime=row.runtime, **load_options(row, a.threads))
        except ModelLoadError as e:
            if row is artifact:
                fail(first_line(e))
            row.status = f"load failed: {first_line(e)}"
            continue
        row.result.update(ran_in(row.detector))
        if row.runtime in SERVED:  # its precision is the served artifact's; its size the server's business
            row.kind = replace(row.kind, precision=row.detector.meta.export.get("precision", "fp32"))
        else:
            row.result["size_mb"] = artifact_mb(row.artifact)
        if row.precision in REDUCED and row.result.get("inference_precision") not in (row.precision, None):
            row.status = f"ran in {row.result['inference_precision']}, not {row.precision}"
            continue
        probe(row, a.device, a.threads, a.batch)
    live = [r for r in rows if r.status == "ok"]
    if artifact and not live:
        fail(f"{artifact.artifact}: {artifact.status}")
    if artifact:
        meta = artifact.detector.meta
        ran = artifact.result.get("inference_precision")  # a bf16 IR: the precision it really ran in
        precision = ran if ran in REDUCED else meta.export.get("precision", "fp32")
        artifact.kind = replace(artifact.kind, precision=precision)

    if a.data:
        meta = replace(meta, provenance=dict(meta.provenance, dataset=a.data, val_dataset=None))
    from exporters.verify import sample_images

    n_eval = a.eval_images if a.eval_images is not None else 10**9
    images, gt, ids, source = sample_images(meta, max(n_eval, a.batch))
    if n_eval and gt is not None:
        ids = ids[:n_eval]
        print(f"accuracy on {source.split(' (')[0]} ({len(ids)} images)")
        accuracy(live, images[:n_eval], gt, ids, meta, a.batch, out)
    elif n_eval:
        print(f"no ground truth for {meta.arch}'s classes here: mAP and parity skipped (timing on {source})")
    sample = [images[i % len(images)] for i in range(a.batch)]
    print(f"timing {len(live)} rows: batch {a.batch}, {a.threads} threads, {a.warmup} warm-up, "
          f"{a.iters or str(a.seconds) + ' s'} timed calls in {a.rounds} alternating blocks")
    latency(live, sample, a)
    concurrent_clients(live, images, a.concurrent_calls)
    checks = []
    if a.cross_check:
        from benchmarks import crosscheck

        checks = crosscheck.run(rows, sample, a.threads, a.iters or 40, a.rounds, out / "cross-check",
                                lambda row: load_options(row, a.threads))
        print()
        print(crosscheck.table(checks))

    settings = dict(model=str(checkpoint or artifact.artifact), arch=meta.arch, canvas=list(meta.canvas),
                    batch=a.batch, device=a.device, threads=a.threads, warmup=a.warmup, iters=a.iters,
                    seconds=a.seconds, rounds=a.rounds, block_warmup=a.block_warmup, settle_s=timing.SETTLE_S,
                    eval_images=len(ids) if (n_eval and gt is not None) else 0,
                    dataset=meta.provenance.get("dataset"), triton_url=a.triton_url)
    result = dict(system=system.describe(), settings=settings, cross_check=checks,
                  rows=[dict(name=r.name, precision=r.precision, runtime=r.runtime, status=r.status,
                             artifact=str(r.artifact) if r.artifact else None, **r.result) for r in rows])
    (out / "results.json").write_text(json.dumps(result, indent=2))
    title = f"{meta.arch} {meta.canvas[0]}x{meta.canvas[1]}, batch {a.batch}, {a.device}, {a.threads} threads"
    report.write(out, [result], f"frcnn-deploy benchmark: {title}", title)
    print()
    print(report.table(result["rows"]))
    print(f"\nwrote {out}/results.json, report.md, {', '.join(report.PLOTS)}")
    return gate(result["rows"], a.max_map_drop)


def gate(rows: list[dict], max_drop: float) -> int:
    """1 when a row's mAP is below the reference's by more than `max_drop`. torchvision under
    bf16 autocast is a speed baseline, not one of our artifacts: its drop is said, not gated."""
    ref = next((r for r in rows if r["runtime"] == "torch" and r.get("map") is not None), None)
    if ref is None:
        return 0
    low = [r for r in rows if r.get("map") is not None and r["map"] < ref["map"] - max_drop]
    baseline = [r for r in low if r["runtime"] == "torchvision" and r["precision"] in REDUCED]
    for r in low:
        print(f"{'note' if r in baseline else 'GATE'}: {r['name']} {r['precision']} mAP {r['map']:.4f} is below the "
              f"reference {ref['map']:.4f} by more than {max_drop}" +
              (" (a speed baseline: reported, not gated)" if r in baseline else ""), file=sys.stderr)
    return 1 if len(low) > len(baseline) else 0


if __name__ == "__main__":
    sys.exit(main())
