"""TensorRT export: checkpoint or ONNX -> serialized engine + metadata sidecar, verified against PyTorch.

    python -m exporters.trt --checkpoint runs/shapes-tiny --out runs/shapes-tiny/model.engine --fp16
    python -m exporters.trt --checkpoint runs/coco --out model.engine --max-batch 8 --timing-cache trt.cache
    python -m exporters.trt --onnx model.trt.onnx --out model.engine --no-verify

Plugins: --plugins custom (default from a checkpoint) builds the TensorRT-flavoured graph with
our NMS and multi-level RoIAlign plugins; build them first with python -m plugins.build.
--plugins builtin needs no build: TensorRT's ONNX parser maps the standard graph's RoiAlign
onto its ROIAlign_TRT plugin and NonMaxSuppression onto INMSLayer (slow NMS). With --onnx the
file's flavour decides (model.trt.onnx: custom, model.onnx: builtin).

Precision: fp32 by default, with TF32 off so fp32 means fp32. --int8 builds INT8 by explicit
quantization on TensorRT 10 and 11 alike: from a checkpoint it exports the graph with symmetric
Q/DQ on the networks' convolutions and fully-connected layers (exporters.qdq, calibrated on
--calib-images of the checkpoint's training data; post-processing float) and builds it strongly
typed (no precision flags: the Q/DQ say where INT8 runs); an --onnx that exporters.onnx --int8
--flavor trt wrote builds the same way. The check after the build is the INT8 gate: the mAP drop
against the fp32 deploy graph at most --max-map-drop. --fp16 on TensorRT 11 exports the
mixed-precision ONNX (networks fp16; anchors, box decoding, NMS inputs and RoI coordinates fp32)
and builds it strongly typed: TensorRT 11 has no BuilderFlag.FP16. TensorRT 10 builds the fp32
ONNX with BuilderFlag.FP16 and lets TensorRT pick each layer's precision; --strongly-typed
makes it build the mixed-precision ONNX as TensorRT 11 does.

Batch: --batch N builds for exactly N images; --max-batch N for 1..N (optimised for
--opt-batch, default N). Build time is minutes for large models; --timing-cache reuses kernel
timings across builds on the same GPU and TensorRT version.

Output: the engine plus model.engine.json beside it (the checkpoint's metadata with precision,
plugins, plugin library path, TensorRT version and batch range); runtimes.load(engine) reads both.
The engine runs only with the TensorRT version and GPU model it was built with.

Before parsing, the ONNX is held against TensorRT's published parser rules (python -m exporters.trt_check):
a graph that breaks one stops here with one line naming the node and the rule.

Exit codes: 0 built (and parity OK), 1 not TensorRT-ready, build or parity check failed, 2 bad arguments or input,
3 TensorRT, pycuda, a CUDA GPU or the plugin library is missing.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from runtimes import ENGINE_SUFFIXES
from runtimes.base import ModelLoadError, first_line
from runtimes.meta import ModelMeta, read_onnx_meta
from runtimes.tensorrt import (INPUT_NAME, find_plugin_library, import_cuda, import_tensorrt, load_plugins,
                               make_logger, sidecar_path, version_tuple)

from .cli import add_verify_args, check_reference_arg, fail, load_source
from .int8 import add_int8_args, check_int8_args
from .trt_check import NotReadyError, ensure_ready

MISSING = 3  # exit code: something to install or build is missing
FLAVOR = {"custom": "trt", "builtin": "onnx"}  # --plugins -> the ONNX flavour it builds from


class EngineBuildError(RuntimeError):
    """TensorRT refused the network or the build failed; the message is one line."""


# ------------------------------------------------------------------ version-dependent choices
@dataclass(frozen=True)
class Precision:
    """How an engine of the requested precision is built on one TensorRT version."""

    precision: str  # "fp32", "fp16" or "int8"
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED: the ONNX's types are the engine's

    @property
    def half_onnx(self) -> bool:
        """Build from the mixed-precision ONNX (exporters.onnx half=True): fp16, strongly typed."""
        return self.precision == "fp16" and self.strongly_typed

    @property
    def fp16_flag(self) -> bool:
        """BuilderFlag.FP16: fp16 weakly typed, TensorRT 10 may run any layer in fp16."""
        return self.precision == "fp16" and not self.strongly_typed

    @property
    def typing(self) -> str:
        return "strong" if self.strongly_typed else "weak"


def precision_plan(version: str, fp16: bool, onnx_precision: str | None = None,
                   strongly_typed: bool = False, int8: bool = False) -> Precision:
    """The build recipe for TensorRT `version`. onnx_precision: the given ONNX's ("fp32",
    "mixed-fp16" or "int8"), None when the exporter writes the ONNX itself. ValueError when impossible."""
    major, _ = version_tuple(version)
    if major < 10:
        raise ValueError(f"TensorRT {version} is too old: the plugins are IPluginV3, which needs TensorRT 10 or newer")
    if int8 or onnx_precision == "int8":
        if fp16:
            raise ValueError("--int8 and --fp16 exclude each other: the INT8 graph's float layers stay fp32")
        if onnx_precision not in (None, "int8"):
            raise ValueError(f"--int8 builds from an INT8 Q/DQ ONNX, and this one is {onnx_precision}: quantize it "
                             "with python -m exporters.onnx --int8 --flavor trt, or build from --checkpoint")
        return Precision("int8", strongly_typed=True)  # explicit quantization: the Q/DQ types are the engine's
    strong = major >= 11 or strongly_typed
    if onnx_precision == "mixed-fp16":  # its types say fp16 already; only a strongly typed build keeps them
        return Precision("fp16", strongly_typed=True)
    if not fp16:
        return Precision("fp32", strongly_typed=major >= 11)
    if strong:
        if onnx_precision == "fp32":
            raise ValueError(f"TensorRT {version} builds fp16 strongly typed, from the mixed-precision ONNX: "
                             "build from --checkpoint with --fp16 instead of an fp32 --onnx")
        return Precision("fp16", strongly_typed=True)
    return Precision("fp16", strongly_typed=False)


def batch_profile(onnx_batch: int | None, batch: int | None = None, max_batch: int | None = None,
                  opt_batch: int | None = None) -> tuple[int, int, int]:
    """(min, opt, max) batch of the optimization profile. onnx_batch: the ONNX's fixed batch,
    None when dynamic. ValueError with one line when the request does not fit the ONNX."""
    if batch is not None and max_batch is not None:
        raise ValueError("give --batch or --max-batch, not both")
    if opt_batch is not None and max_batch is None:
        raise ValueError("--opt-batch goes with --max-batch")
    fixed_hint = (f"the ONNX has a fixed batch of {onnx_batch}: re-export it with python -m exporters.onnx "
                  "--dynamic-batch, or build from --checkpoint")
    if max_batch is not None:
        if max_batch < 1:
            raise ValueError("--max-batch must be at least 1")
        if onnx_batch is not None:
            raise ValueError(fixed_hint)
        opt = max_batch if opt_batch is None else opt_batch
        if not 1 <= opt <= max_batch:
            raise ValueError(f"--opt-batch must be between 1 and --max-batch {max_batch}")
        return 1, opt, max_batch
    n = batch if batch is not None else (onnx_batch or 1)
    if n < 1:
        raise ValueError("--batch must be at least 1")
    if onnx_batch is not None and n != onnx_batch:
        raise ValueError(fixed_hint)
    return n, n, n


def checkpoint_profile(batch: int | None = 1, max_batch: int | None = None,
                       opt_batch: int | None = None) -> tuple[int, int, int]:
    """The profile of an engine built from a checkpoint, whose ONNX is exported to fit it:
    a fixed `batch` (default 1), or dynamic up to `max_batch`."""
    fixed = None if max_batch is not None else (1 if batch is None else batch)
    return batch_profile(fixed, fixed, max_batch, opt_batch)


def plugins_for(flavor: str, plugins: str | None = None) -> str:
    """The plugins an ONNX of `flavor` needs; ValueError when `plugins` asks for the other kind."""
    needed = {v: k for k, v in FLAVOR.items()}.get(flavor)
    if needed is None:
        raise ValueError(f"unknown ONNX flavour {flavor!r}")
    if plugins and plugins != needed:
        raise ValueError(f"a {flavor!r}-flavoured ONNX builds with --plugins {needed}; for --plugins {plugins} "
                         f"export with --flavor {FLAVOR[plugins]} (or build from --checkpoint)")
    return needed


# ------------------------------------------------------------------ files
def write_sidecar(engine, meta: ModelMeta) -> Path:
    """model.engine.json: the metadata runtimes.tensorrt reads (see read_sidecar there)."""
    from trainer.checkpoint import atomic_write_text

    path = sidecar_path(engine)
    atomic_write_text(path, meta.to_json())
    return path


def _write_bytes(path: Path, data) -> None:
    from trainer.checkpoint import atomic_write

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)  # IHostMemory is a buffer

    atomic_write(path, write)


@contextlib.contextmanager
def elapsed(desc: str):
    """A ticking elapsed-time line while a long call without progress reports runs."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, bar_format="{desc}: {elapsed}", leave=False)
    stop = threading.Event()

    def tick():
        while not stop.wait(1.0):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()


# ------------------------------------------------------------------ build steps
def new_builder(trt, logger):
    try:
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError):  # pybind11 raises when createInferBuilder returns null (no GPU/driver)
        builder = None
    if builder is None:
        raise ModelLoadError(f"TensorRT cannot create a builder: no usable CUDA GPU ({logger.last_error()})")
    return builder


def _describe(error) -> str:
    try:
        return f"{error.node_operator()} node {error.node_name()!r}: {error.desc()}"
    except Exception:  # older parsers lack node_operator/node_name
        return str(error)


def parse_onnx(trt, builder, logger, onnx_path: Path, strongly_typed: bool):
    """(network, parser): the parser owns the weights, so it must live until the build is done."""
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_describe(parser.get_error(i)) for i in range(parser.num_errors)] or [logger.last_error()]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path.name}: {errors[0]}{more}")
    return network, parser


def builder_config(trt, builder, network, plan: Precision, profile: tuple[int, int, int],
                   workspace_gib: float | None = None):
    config = builder.create_builder_config()
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.precision in ("fp32", "int8"):  # int8: the layers outside the Q/DQ stay exact fp32
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; it rounds fp32 inputs to 10-bit mantissas
    images = network.get_input(0)
    if network.num_inputs != 1 or images.name != INPUT_NAME:
        raise EngineBuildError(f"the network's input is {images.name!r}, expected {INPUT_NAME!r} "
                               "(export it with python -m exporters.onnx)")
    shape = tuple(images.shape)
    low, opt, high = profile
    if shape[0] < 0:
        p = builder.create_optimization_profile()
        p.set_shape(INPUT_NAME, (low, *shape[1:]), (opt, *shape[1:]), (high, *shape[1:]))
        config.add_optimization_profile(p)
    elif low != shape[0] or high != shape[0]:
        raise EngineBuildError(f"the ONNX has a fixed batch of {shape[0]}, asked for {low}..{high}")
    return config


def attach_timing_cache(config, path: Path | None):
    """Load kernel timings from `path` if it exists (a fresh cache otherwise) and attach them."""
    if path is None:
        return
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if data and (cache is None or not config.set_timing_cache(cache, ignore_mismatch=False)):
        print(f"note: {path} was made on another GPU or TensorRT version; starting a fresh timing cache")
        data, cache = b"", config.create_timing_cache(b"")
    if not data:
        config.set_timing_cache(cache, ignore_mismatch=False)


def build_engine(onnx_path, out, meta: ModelMeta, plan: Precision, profile: tuple[int, int, int],
                 plugins: str = "custom", plugin_library=None, workspace_gib: float | None = None,
                 timing_cache=None, verbose: bool = False, check: bool = True) -> Path:
    """ONNX -> serialized engine at `out` + its metadata sidecar. Returns `out`. check: hold the ONNX
    against the parser's published rules first (exporters.trt_check; NotReadyError names node and rule)."""
    trt = import_tensorrt()
    onnx_path, out = Path(onnx_path), Path(out)
    if check:
        ensure_ready(onnx_path)
    logger = make_logger(trt, "info" if verbose else "warning")
    library = find_plugin_library(plugin_library) if plugins == "custom" else None
    load_plugins(trt, logger, plugins, library)
    builder = new_builder(trt, logger)
    network, parser = parse_onnx(trt, builder, logger, onnx_path, plan.strongly_typed)
    config = builder_config(trt, builder, network, plan, profile, workspace_gib)
    cache_path = Path(timing_cache) if timing_cache else None
    attach_timing_cache(config, cache_path)
    with elapsed(f"building TensorRT {trt.__version__} engine"):
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build {onnx_path.name}: {logger.last_error()}")
    del parser  # the weights are in the engine now
    if cache_path:
        _write_bytes(cache_path, config.get_timing_cache().serialize())
    _write_bytes(out, serialized)
    low, opt, high = profile
    meta = replace(meta, export=dict(
        meta.export, format="tensorrt", tensorrt=trt.__version__, precision=plan.precision, typing=plan.typing,
        onnx_precision=meta.export.get("precision"), plugins=plugins, plugin_library=str(library) if library else None,
        batch=low if low == high else None, batch_range=[low, opt, high], source=onnx_path.name,
        workspace_gib=workspace_gib))
    write_sidecar(out, meta)
    return out


def export_for_tensorrt(model, meta: ModelMeta, onnx_path, plan: Precision, plugins: str = "custom",
                        batch: int | None = 1, calib=None) -> Path:
    """The ONNX TensorRT builds from: flavour from `plugins`, mixed precision when `plan` builds
    fp16 strongly typed, TensorRT's Q/DQ calibrated on `calib` (exporters.calibration) when it
    builds int8; batch None = dynamic. `meta` is left as it is."""
    from .onnx import export_onnx

    if plan.precision == "int8":
        from .qdq import export_int8

        if calib is None:
            raise ValueError("an INT8 build needs calibration images (exporters.calibration.calibration_set)")
        return export_int8(model, meta, onnx_path, calib, batch, FLAVOR[plugins], qdq="tensorrt")
    return export_onnx(model, meta, onnx_path, batch=batch, flavor=FLAVOR[plugins],
                       half=plan.half_onnx)


def build_from_checkpoint(model, meta: ModelMeta, out, fp16: bool = False, batch: int | None = 1,
                          max_batch: int | None = None, opt_batch: int | None = None, plugins: str = "custom",
                          plugin_library=None, workspace_gib: float | None = None, timing_cache=None,
                          strongly_typed: bool = False, verbose: bool = False, log=print, calib=None) -> Path:
    """Export the ONNX the installed TensorRT needs into a temporary folder and build the engine from
    it; INT8 when `calib` (exporters.calibration.calibration_set) is given."""
    trt = import_tensorrt()
    plan = precision_plan(trt.__version__, fp16, strongly_typed=strongly_typed, int8=calib is not None)
    profile = checkpoint_profile(batch, max_batch, opt_batch)
    if plugins == "custom":
        plugin_library = find_plugin_library(plugin_library)  # fail before the export, not after
    return export_and_build(model, meta, out, plan, profile, plugins, plugin_library, workspace_gib, timing_cache,
                            verbose, log, calib=calib)


def export_and_build(model, meta: ModelMeta, out, plan: Precision, profile: tuple[int, int, int],
                     plugins: str = "custom", plugin_library=None, workspace_gib: float | None = None,
                     timing_cache=None, verbose: bool = False, log=print, check: bool = True, calib=None) -> Path:
    """build_from_checkpoint once the plan, the profile and the plugin library are known (and, for
    an int8 plan, the calibration images)."""
    low, _, high = profile
    fixed = low if low == high else None
    with tempfile.TemporaryDirectory(prefix="frcnn-trt-") as tmp:
        onnx_path = Path(tmp) / ("model.trt.onnx" if FLAVOR[plugins] == "trt" else "model.onnx")
        kind = "int8 Q/DQ" if plan.precision == "int8" else "mixed-fp16" if plan.half_onnx else "fp32"
        log(f"exporting ONNX (flavor {FLAVOR[plugins]}, {kind}, batch {fixed or 'dynamic'}) ...")
        t0 = time.perf_counter()
        export_for_tensorrt(model, meta, onnx_path, plan, plugins, fixed, calib)
        log(f"exported in {time.perf_counter() - t0:.1f}s")
        return build_engine(onnx_path, out, read_onnx_meta(onnx_path), plan, profile, plugins, plugin_library,
                            workspace_gib, timing_cache, verbose, check)


# ------------------------------------------------------------------ command line
def verify_engine(engine: Path, a: argparse.Namespace, model=None, meta: ModelMeta | None = None) -> bool:
    """Parity of the engine (through runtimes.tensorrt) against PyTorch, or ONNX Runtime on --onnx."""
    from runtimes.tensorrt import TensorRTDetector

    from .verify import verify_artifact

    try:
        test = TensorRTDetector(engine, plugins=a.plugin_library)
    except ModelLoadError as e:
        fail(str(e), MISSING)
    if test.meta.export.get("precision") == "int8":  # gated by its mAP drop, not by box-level parity
        from .int8 import gate
        from .verify import pick_reference

        reference = pick_reference(model, meta or test.meta, a.onnx, a.reference_checkpoint)
        return gate(test, reference, test.meta, a).passed
    return verify_artifact(test, str(engine), a, model, meta, fp16=test.meta.export.get("precision") == "fp16")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m exporters.trt", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="run directory, .safetensors or torchvision .pth (exported to ONNX first)")
    src.add_argument("--onnx", type=Path,
                     help="ONNX written by python -m exporters.onnx (its flavour picks the plugins)")
    p.add_argument("--out", type=Path, required=True, help="engine file to write (.engine or .plan); "
                                                           "its metadata goes to OUT.json")
    p.add_argument("--fp16", action="store_true", help="fp16 engine (default fp32; looser parity defaults, see below)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch", type=int, help="fixed batch size (default: 1, or the ONNX's fixed batch)")
    g.add_argument("--max-batch", type=int, help="dynamic batch 1..N (needs a dynamic-batch ONNX with --onnx)")
    p.add_argument("--opt-batch", type=int, help="batch the kernels are tuned for, with --max-batch (default: N)")
    p.add_argument("--workspace", type=float, metavar="GiB", help="builder workspace limit (default: TensorRT's)")
    p.add_argument("--timing-cache", type=Path, metavar="PATH", help="kernel timing cache to read and update")
    p.add_argument("--plugins", choices=sorted(FLAVOR), help="custom: our NMS/RoIAlign plugins (default from a "
                   "checkpoint); builtin: TensorRT's RoiAlign and NMS, no plugin build needed")
    p.add_argument("--plugin-library", type=Path, metavar="PATH", help="libfrcnn_trt_plugins.so (default: "
                   "$FRCNN_TRT_PLUGINS or plugins/build/)")
    p.add_argument("--strongly-typed", action="store_true", help="TensorRT 10: build fp16 from the mixed-precision "
                   "ONNX, as on TensorRT 11 (default there: BuilderFlag.FP16 on the fp32 graph)")
    p.add_argument("--no-readiness-check", dest="check", action="store_false",
                   help="skip the TensorRT-readiness check before parsing (python -m exporters.trt_check; it holds "
                        "the graph against onnx-tensorrt 10.1's published rules, which a newer parser may relax)")
    p.add_argument("--verbose", action="store_true", help="print TensorRT's info messages")
    add_verify_args(p, "--fp16", onnx_source=True)
    add_int8_args(p)
    a = p.parse_args(argv)
    check_int8_args(a)
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.out.suffix.lower() not in ENGINE_SUFFIXES:
        fail(f"--out {a.out}: use a {' or '.join(ENGINE_SUFFIXES)} file name (runtimes.load picks TensorRT by it)")
    if a.workspace is not None and a.workspace <= 0:
        fail("--workspace must be a positive number of GiB")
    check_reference_arg(a)
    onnx_precision = None
    try:
        if a.onnx:
            if not a.onnx.is_file():
                fail(f"{a.onnx}: no such file")
            onnx_meta = read_onnx_meta(a.onnx)
            if a.check:  # the graph's own rules first: they need no TensorRT
                ensure_ready(a.onnx)
            plugins = plugins_for(onnx_meta.export.get("flavor", "onnx"), a.plugins)
            onnx_precision = onnx_meta.export.get("precision", "fp32")
            if a.int8 and onnx_precision != "int8":
                raise ValueError(f"--int8 with --onnx builds an INT8 Q/DQ ONNX, and {a.onnx.name} is {onnx_precision}: "
                                 "quantize it with python -m exporters.onnx --int8 --flavor trt, or use --checkpoint")
            profile = batch_profile(onnx_meta.export.get("batch"), a.batch, a.max_batch, a.opt_batch)
        else:
            plugins = a.plugins or "custom"
            profile = checkpoint_profile(a.batch, a.max_batch, a.opt_batch)
    except NotReadyError as e:
        fail(str(e), 1)
    except ValueError as e:
        fail(first_line(e))
    try:
        trt = import_tensorrt()
        if not a.no_verify:
            import_cuda()
        library = find_plugin_library(a.plugin_library) if plugins == "custom" else None
    except ModelLoadError as e:
        fail(str(e), MISSING)
    try:
        plan = precision_plan(trt.__version__, a.fp16, onnx_precision, a.strongly_typed, a.int8)
    except ValueError as e:
        fail(str(e))
    low, opt, high = profile
    print(f"TensorRT {trt.__version__}: {plan.precision} engine ({plan.typing}ly typed), plugins {plugins}, batch "
          f"{low if low == high else f'{low}..{high} (opt {opt})'}", flush=True)
    model = meta = None
    t0 = time.perf_counter()
    try:
        if a.checkpoint:
            model, meta = load_source(a.checkpoint)
            calib = None
            if plan.precision == "int8":
                from .calibration import CalibrationError, calibration_set

                try:
                    calib = calibration_set(meta, a.calib_images, a.calib_data)
                except CalibrationError as e:
                    fail(first_line(e))
            export_and_build(model, meta, a.out, plan, profile, plugins, library, a.workspace, a.timing_cache,
                             a.verbose, check=a.check, calib=calib)
        else:
            build_engine(a.onnx, a.out, onnx_meta, plan, profile, plugins, library, a.workspace, a.timing_cache,
                         a.verbose, check=False)  # checked above
    except ModelLoadError as e:
        fail(str(e), MISSING)
    except (EngineBuildError, ValueError) as e:
        fail(first_line(e), 1)
    print(f"wrote {a.out} ({a.out.stat().st_size / 2**20:.1f} MiB) + {sidecar_path(a.out).name} "
          f"in {time.perf_counter() - t0:.1f}s")
    if a.no_verify:
        return 0
    return 0 if verify_engine(a.out, a, model, meta) else 1


if __name__ == "__main__":
    sys.exit(main())
