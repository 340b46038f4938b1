"""OpenVINO inference precision: which one an IR is compiled for, and what the device really ran.

An IR exported with `python -m exporters.openvino --precision bf16` records that precision in
its metadata (`export.inference_precision`); the adapter compiles it so unless told
otherwise. An IR that records nothing runs in f32, the precision parity against PyTorch needs
(CPU plugins with bf16 units would otherwise pick bf16 by themselves).

A reduced precision the device cannot run natively falls back to f32, with one warning per
process: OpenVINO lists what a device runs natively in OPTIMIZATION_CAPABILITIES (BF16 on CPUs
with AVX-512 BF16 or AMX). What the device then really runs is read back from the compiled
model: its INFERENCE_PRECISION_HINT, and the runtime graph's precision of each layer. (OpenVINO
2026.4's CPU plugin ignores an INFERENCE_PRECISION_HINT under rt_info `runtime_options`, so the
precision is passed when compiling, not left in the IR for OpenVINO to find.)
"""
from __future__ import annotations

import warnings
from collections import Counter

RECORDED = "recorded"  # the adapter's default: the precision the artifact records, else f32
DEFAULT = "f32"
PRECISIONS = ("f32", "bf16", "f16")
CAPABILITY = {"bf16": "BF16", "f16": "FP16"}  # OPTIMIZATION_CAPABILITIES entry a reduced precision needs
# layers whose arithmetic the precision is about (the runtime graph's layerType)
COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul")

_warned: set[tuple[str, str]] = set()  # (device, precision) fallbacks already reported in this process


def recorded(meta) -> str | None:
    """The inference precision an artifact's metadata records (None when it records none)."""
    return meta.export.get("inference_precision")


def device_capabilities(core, device: str) -> set[str] | None:
    """OPTIMIZATION_CAPABILITIES of a single device ("CPU", "GPU.1"), or None where OpenVINO gives
    none (virtual devices such as AUTO or HETERO:GPU,CPU pick their devices at compile time)."""
    if ":" in device or device.split(".")[0] in ("AUTO", "HETERO", "MULTI", "BATCH"):
        return None
    try:
        return set(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except RuntimeError:
        return None


def supports(core, device: str, precision: str) -> bool:
    """Whether `device` runs `precision` natively (f32 always; unknown devices are given the benefit)."""
    need = CAPABILITY.get(precision)
    caps = device_capabilities(core, device) if need else None
    return caps is None or need in caps


def choose(core, device: str, requested: str | None, meta) -> str | None:
    """The INFERENCE_PRECISION_HINT to compile with: `requested`, or with RECORDED the artifact's
    recorded precision (f32 when none); a reduced precision `device` lacks becomes f32, said once.
    None leaves the choice to the device."""
    precision = (recorded(meta) or DEFAULT) if requested == RECORDED else requested
    if precision is None or supports(core, device, precision):
        return precision
    if (device, precision) not in _warned:
        _warned.add((device, precision))
        where = "recorded in the artifact" if requested == RECORDED else "requested"
        warnings.warn(f"OpenVINO {device} has no native {precision} (OPTIMIZATION_CAPABILITIES lacks "
                      f"{CAPABILITY[precision]}): the {precision} {where} falls back to f32", RuntimeWarning,
                      stacklevel=3)
    return DEFAULT


def compiled_precision(compiled) -> str | None:
    """The inference precision OpenVINO reports for a compiled model ("f32", "bf16", ...). AUTO's
    compiled model does not answer the property: then the one precision its runtime graph's
    compute layers run in, None when they mix."""
    try:
        return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    except RuntimeError:
        layers = layer_precisions(compiled)
        return next(iter(layers)) if len(layers) == 1 else None


def compute_layers(compiled) -> list[tuple[str, str, str]]:
    """(layerType, runtimePrecision, primitiveType) of each compute layer (COMPUTE_LAYERS) of the
    compiled model's runtime graph: what the device executes, whatever the hint says.
    runtimePrecision follows the layer's inputs, weights included (an fp32 convolution on fp16
    weights reads f16); primitiveType names the kernel ("brgconv_avx512_amx_bf16")."""
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else ""
        if kind in COMPUTE_LAYERS:
            layers.append((kind, *(info[k].astype(str).lower() if k in info else "?"
                                   for k in ("runtimePrecision", "primitiveType"))))
    return layers


def layer_precisions(compiled) -> dict[str, int]:
    """How many compute layers run in each runtimePrecision, e.g. {"bf16": 39}."""
    return dict(Counter(precision for _, precision, _ in compute_layers(compiled)))


def kernels(compiled) -> dict[str, int]:
    """How many compute layers run each kernel, e.g. {"brgconv_avx512_amx_bf16": 18, ...}."""
    return dict(Counter(kernel for _, _, kernel in compute_layers(compiled)))
