"""A minimal edge app: an exported detector on a camera or a video file, no PyTorch needed.

    python edge_app.py --model model.onnx --source 0 --show           # camera 0, in a window
    python edge_app.py --model model.xml --source clip.mp4 --out drawn.mp4

Needs numpy, OpenCV, onnxruntime (for .onnx) or openvino (for .xml), and this toolkit's
`runtimes` package. Copy it and change what you need.
"""
import argparse
import os
import sys
import time

import cv2

import runtimes
from runtimes.draw import draw_detections


def can_show() -> bool:
    """Whether cv2.imshow can open a window here (not with opencv-python-headless or without a display)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("edge app")
        return True
    except cv2.error:
        return False


def main():
    p = argparse.ArgumentParser(description="Run an exported detector on a camera or a video file.")
    p.add_argument("--model", required=True, help="exported model: .onnx or OpenVINO .xml")
    p.add_argument("--source", default="0", help="camera index (0, 1, ...) or video file / stream URL (default 0)")
    p.add_argument("--threshold", type=float, default=0.5, help="least score to draw (default 0.5)")
    p.add_argument("--out", help="write the drawn video here (.mp4)")
    p.add_argument("--show", action="store_true", help="show the drawn frames in a window (q or Esc quits)")
    p.add_argument("--device", default="cpu", help="cpu, or an accelerator the runtime knows (cuda, GPU, NPU)")
    args = p.parse_args()

    try:
        detector = runtimes.load(args.model, device=args.device)
    except runtimes.ModelLoadError as e:
        sys.exit(f"error: {e}")
    # a number is a camera index; anything else a file or a stream URL
    capture = cv2.VideoCapture(int(args.source) if args.source.isdigit() else args.source)
    if not capture.isOpened():
        sys.exit(f"error: cannot open video source {args.source}")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps_in = capture.get(cv2.CAP_PROP_FPS) or 30.0  # cameras may report 0

    writer = None
    if args.out:
        writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (width, height))
        if not writer.isOpened():
            sys.exit(f"error: cannot write {args.out}")
    show = args.show and can_show()
    if args.show and not show:
        print("--show: this OpenCV cannot open a window here (headless build or no display); continuing")
    print(f"{detector.runtime} model {args.model}: canvas {detector.canvas}, "
          f"classes {detector.meta.class_names[1:]}; source {args.source} {width}x{height} @ {fps_in:.0f} fps")

    frames, failed, start, last_report = 0, 0, time.perf_counter(), time.perf_counter()
    try:
        # read() returns False at the end, when a camera drops out, and on a frame it cannot
        # decode; a few failures in a row mean the end, a single one is skipped.
        while failed < 10:
            ok, frame = capture.read()
            if not ok:
                failed += 1
                continue
            failed = 0
            # OpenCV frames are BGR, detectors take RGB; boxes come back in frame pixels
            detections = detector(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), threshold=args.threshold)
            draw_detections(frame, detections)
            frames += 1
            if writer is not None:
                writer.write(frame)
            if show:
                cv2.imshow("edge app", frame)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            now = time.perf_counter()
            if now - last_report >= 2.0:
                print(f"{frames} frames, {frames / (now - start):.1f} fps, {len(detections)} objects in the last")
                last_report = now
    except KeyboardInterrupt:
        pass  # Ctrl+C: stop and still finish the output file
    finally:
        seconds = time.perf_counter() - start
        capture.release()
        if writer is not None:
            writer.release()
        if show:
            cv2.destroyAllWindows()
    print(f"done: {frames} frames in {seconds:.1f} s, {frames / max(seconds, 1e-9):.1f} fps"
          + (f"; wrote {args.out}" if args.out else ""))


if __name__ == "__main__":
    main()
