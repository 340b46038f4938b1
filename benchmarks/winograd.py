"""Winograd F(4x4, 3x3) in ONNX Runtime on the CPU: each convolution, then the whole model.

    flock /tmp/frcnn-cpu.lock python -m benchmarks.winograd --threads 2

Without --checkpoint, a randomly initialised R50-FPN with COCO's classes (800x1344) is saved to
--work-dir and exported to ONNX once; later runs reuse it.

1. Every distinct 3x3 convolution that runtimes.winograd can rewrite, whatever its size, as a
   one-node graph with the model's weights and input shape: direct and rewritten, in blocks of 3 calls
   alternating across rounds (benchmarks.timing); p50 of each, the speed-up, the largest output difference relative
   to the output's range, and whether the rewrite's thresholds (MIN_CHANNELS, MIN_TILES) pick it.
2. The whole model end to end (image in memory -> boxes in image pixels), batch 1, through the
   ONNX Runtime adapter with winograd=False and with the default rewrite, alternating; then the
   parity of the two on the same images (runtimes.parity, strict fp32 thresholds). With random
   weights, near-tied boxes make detection parity noisy between any two paths (torch vs
   torchvision eager matched 97.9% on R50), so judge the rewrite by step 1's errors or on a
   trained --checkpoint.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

from benchmarks import system, timing
from benchmarks.run import add_speed_args, check_speed_args, exported_onnx


def one_conv(node, w, bias, chw, rewritten: bool, threads: int):
    """An ONNX Runtime session computing just `node` (batch 1), direct or rewritten."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from runtimes.onnxruntime import session_options
    from runtimes.winograd import rewrite

    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(bias, "b")] if bias is not None else [])
    conv = helper.make_node("Conv", ["x", "w"] + (["b"] if bias is not None else []), ["y"], name="conv",
                            pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    graph = helper.make_graph([conv], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *chw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    if rewritten:
        assert rewrite(model, min_channels=1, min_tiles=1) == 1, node.name
    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])


def per_conv(onnx_path: Path, threads: int, warmup: int, rounds: int) -> list[dict]:
    import onnx

    from runtimes.winograd import MIN_CHANNELS, MIN_TILES, candidates

    model = onnx.load(str(onnx_path))
    picked = {n.output[0] for n, *_ in candidates(model)}
    rows, seen = [], set()
    for node, w, bias, chw in candidates(model, min_channels=1, min_tiles=1):
        key = (w.shape[0], *chw, bias is not None)
        if key in seen:
            continue
        seen.add(key)
        x = np.random.default_rng(0).standard_normal((1, *chw)).astype(np.float32)
        sessions = {kind: one_conv(node, w, bias, chw, kind == "winograd", threads) for kind in ("direct", "winograd")}
        outs = {kind: s.run(None, {"x": x})[0] for kind, s in sessions.items()}
        done = timing.blocks({k: (lambda s=s: s.run(None, {"x": x})) for k, s in sessions.items()},
                             timing.split(rounds * 3, rounds), warmup, desc=f"{chw[0]}x{chw[1]}x{chw[2]}")
        p50 = {k: timing.percentiles(timing.samples(done, k))["p50_ms"] for k in sessions}
        c, h, wd = chw
        rows.append(dict(cin=c, cout=int(w.shape[0]), h=h, w=wd, tiles=-(-h // 4) * -(-wd // 4),
                         direct_ms=p50["direct"], winograd_ms=p50["winograd"],
                         speedup=p50["direct"] / p50["winograd"],
                         rel_err=float(np.abs(outs["winograd"] - outs["direct"]).max() / np.abs(outs["direct"]).max()),
                         picked=node.output[0] in picked))
    print(f"\nper convolution (3x3, stride 1), {threads} threads, p50 of {rounds} blocks of 3 calls; "
          f"picked = at least {MIN_CHANNELS} channels and {MIN_TILES} tiles")
    print(f"  {'Cin->Cout':>10s} {'HxW':>9s} {'tiles':>6s} {'direct ms':>10s} {'winograd ms':>12s} "
          f"{'speed-up':>9s} {'rel err':>8s}  picked")
    for r in rows:
        print(f"  {r['cin']:>4d}->{r['cout']:<5d} {r['h']:>4d}x{r['w']:<4d} {r['tiles']:>6d} {r['direct_ms']:>10.1f} "
              f"{r['winograd_ms']:>12.1f} {r['speedup']:>8.2f}x {r['rel_err']:>8.1e}  {'yes' if r['picked'] else 'no'}")
    return rows


def whole_model(onnx_path: Path, images: list, threads: int, warmup: int, rounds: int) -> dict:
    from runtimes.onnxruntime import OnnxRuntimeDetector
    from runtimes.parity import compare

    detectors = {"direct": OnnxRuntimeDetector(onnx_path, threads=threads, winograd=False),
                 "winograd": OnnxRuntimeDetector(onnx_path, threads=threads)}
    print(f"\nwhole model end to end, batch 1, {threads} threads, {len(images)} images x {rounds} rounds:")
    stats = timing.end_to_end(detectors, images, warmup, rounds, desc="whole model")
    report = compare(detectors["direct"](images), detectors["winograd"](images))
    result = dict(end_to_end=stats, speedup=stats["direct"]["p50_ms"] / stats["winograd"]["p50_ms"],
                  convs_rewritten=detectors["winograd"].winograd_convs, parity=report.to_dict())
    print(f"  {result['convs_rewritten']} convolutions rewritten: {result['speedup']:.2f}x at p50")
    print(f"  parity winograd vs direct: {report.summary()}")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.winograd", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_speed_args(p, "frcnn-winograd")
    a = p.parse_args(argv)
    check_speed_args(p, a)

    import onnxruntime

    checkpoint, onnx_path = exported_onnx(a.work_dir, a.checkpoint)
    convs = per_conv(onnx_path, a.threads, a.warmup, a.rounds)
    whole = whole_model(onnx_path, timing.photos(a.images), a.threads, a.warmup, a.rounds)
    env = {"cpu": system.cpu_model(), "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
           "threads": a.threads, "checkpoint": str(checkpoint)}
    print(f"  {env['cpu']}, onnxruntime {env['onnxruntime']}")
    if a.json:
        a.json.write_text(json.dumps({"convolutions": convs, "whole_model": whole, "env": env}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
