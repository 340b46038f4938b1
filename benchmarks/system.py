"""What a result was measured on: hardware, software versions."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD features that decide CPU inference speed (AVX-512, VNNI, AMX, bf16)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx_vnni", "avx2")))
    except OSError:
        pass
    return []


def reduced_precision() -> dict:
    """What this CPU offers reduced-precision inference: bf16 (AVX-512 BF16 vector dot products,
    AMX-BF16 matrix tiles), fp16 (AVX-512 FP16), INT8 dot products (AVX-512 / AVX VNNI, AMX-INT8),
    and what OpenVINO's CPU plugin makes of them (its OPTIMIZATION_CAPABILITIES; BF16 there is
    what runtimes.openvino needs to keep a bf16 IR in bf16)."""
    flags = set(cpu_flags())
    out = dict(avx512_bf16="avx512_bf16" in flags, amx_bf16="amx_bf16" in flags, avx512_fp16="avx512_fp16" in flags,
               amx_int8="amx_int8" in flags, vnni=sorted(flags & {"avx512_vnni", "avx_vnni"}), openvino_cpu=None)
    try:
        from runtimes.openvino import core

        out["openvino_cpu"] = list(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # openvino missing or its CPU plugin unusable: the flags still say what the CPU has
        pass
    return out


def gpus() -> list[dict]:
    """NVIDIA GPUs seen by nvidia-smi (name, driver, memory); empty without one."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = [[c.strip() for c in line.split(",")] for line in out.strip().splitlines() if line.strip()]
    return [dict(name=r[0], driver=r[1], memory=r[2]) for r in rows if len(r) == 3]


def versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for dist in ("frcnn-deploy", "torch", "torchvision", "onnx", "onnxruntime", "openvino", "tensorrt", "numpy",
                 "opencv-python-headless", "pycocotools"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def describe() -> dict:
    return dict(cpu=cpu_model(), cores=os.cpu_count(), cpu_flags=cpu_flags(), reduced_precision=reduced_precision(),
                gpus=gpus(),
                os=platform.platform(), hostname=platform.node(), versions=versions())
