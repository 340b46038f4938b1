"""Build the plugin libraries into plugins/build/.

  python -m plugins.build            TensorRT plugin library libfrcnn_trt_plugins.so
                                     (needs nvcc and the TensorRT 10/11 headers; --tensorrt-include DIR
                                     picks a header folder, --werror makes warnings errors)
  python -m plugins.build --host     host reference library libfrcnn_host.so (needs g++ only)
  python -m plugins.build --kernels  CUDA kernels with a C launcher, libfrcnn_kernels.so, for the
                                     GPU tests and plugins/bench_kernels.py (needs nvcc only)
"""

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

SOURCE_DIR = Path(__file__).resolve().parent / "src"
BUILD_DIR = Path(__file__).resolve().parent / "build"
HOST_LIBRARY = BUILD_DIR / "libfrcnn_host.so"
KERNEL_LIBRARY = BUILD_DIR / "libfrcnn_kernels.so"
PLUGIN_LIBRARY = BUILD_DIR / "libfrcnn_trt_plugins.so"

# CUDA 13 supports sm_75 and newer; 87 is Jetson Orin. PTX for 90 lets newer GPUs JIT-compile.
DEFAULT_ARCHS = "75;80;86;87;89;90"
HEADERS = ["hostdevice.h", "roi_align.h", "nms.h", "kernels.h", "plugin_common.h"]  # any may touch any source
HOST_SOURCES = ["host_reference.cpp"]
KERNEL_SOURCES = ["kernels.cu"]
LAUNCHER_SOURCES = ["cuda_launcher.cu"]
PLUGIN_SOURCES = ["plugin_common.cpp", "roi_align_plugin.cpp", "nms_plugin.cpp", "registration.cpp"]
DRIVER_SOURCE = "plugin_driver.cpp"  # host-only driver of the plugin library (tests/test_plugin_library.py)
REGISTRY_PROBE_SOURCE = "registry_probe.cpp"  # a libnvinfer stand-in with only a recording plugin registry
WARNINGS = ["-Xcompiler", "-Wall,-Wextra"]  # our sources; the TensorRT headers come in as -isystem


class BuildError(RuntimeError):
    """A missing tool or a failed compile; the message says what and how to get it."""


def find_cxx() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise BuildError("no C++ compiler found: install g++ (e.g. apt-get install g++) or set CXX")
    return cxx


def find_nvcc() -> Path:
    candidates = [Path(os.environ[var]) / "bin" / "nvcc" for var in ("CUDA_HOME", "CUDA_PATH") if var in os.environ]
    if shutil.which("nvcc"):
        candidates.append(Path(shutil.which("nvcc")))
    candidates.append(Path("/usr/local/cuda/bin/nvcc"))
    for nvcc in candidates:
        if nvcc.is_file():
            return nvcc
    raise BuildError("nvcc not found: install the CUDA toolkit and set CUDA_HOME or put nvcc on PATH")


def find_tensorrt_include() -> Path:
    """The folder holding NvInferRuntime.h. The plugin library calls nothing in libnvinfer
    (TensorRT calls its getCreators/setLoggerFinder), so only the headers are needed."""
    roots = [Path(os.environ[var]) for var in ("TENSORRT_ROOT", "TRT_ROOT") if var in os.environ]
    candidates = [root / "include" for root in roots]
    for package in ("tensorrt", "tensorrt_libs"):  # pip wheels, in case one ships headers
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            candidates += [Path(location) / "include" for location in spec.submodule_search_locations]
    candidates += [Path("/usr/include/x86_64-linux-gnu"), Path("/usr/include/aarch64-linux-gnu"),
                   Path("/usr/include"), Path("/usr/local/TensorRT/include"), Path("/usr/local/tensorrt/include")]
    for include in candidates:
        if (include / "NvInferRuntime.h").is_file():
            return include
    raise BuildError("TensorRT headers (NvInferRuntime.h) not found: install TensorRT 10 or 11 "
                     "(the libnvinfer-dev package or the TensorRT tar archive) and set TENSORRT_ROOT")


def arch_flags(archs: str) -> list[str]:
    """'75;80;90' -> -gencode flags (plus PTX of the newest); 'native' -> -arch=native."""
    if archs.strip() == "native":
        return ["-arch=native"]
    numbers = sorted({int(a.strip().removeprefix("sm_")) for a in archs.replace(",", ";").split(";") if a.strip()})
    if not numbers:
        raise BuildError(f"no CUDA architecture in {archs!r}: pass e.g. --arch '80;90'")
    flags = [f"-gencode=arch=compute_{n},code=sm_{n}" for n in numbers]
    return flags + [f"-gencode=arch=compute_{numbers[-1]},code=compute_{numbers[-1]}"]


def _run(command: list[str]) -> None:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{Path(command[0]).name} failed:\n{result.stderr[-4000:] or result.stdout[-4000:]}")
    if result.stderr.strip():  # warnings: show them, a clean build prints nothing
        print(result.stderr.strip(), file=sys.stderr)


def warning_flags(werror: bool) -> list[str]:
    return WARNINGS + (["-Xcompiler", "-Werror", "-Werror", "all-warnings"] if werror else [])


def _is_stale(library: Path, sources: list[str]) -> bool:
    if not library.is_file():
        return True
    built = library.stat().st_mtime
    return any((SOURCE_DIR / name).stat().st_mtime > built for name in sources + HEADERS)


def _link_atomically(library: Path, link) -> Path:
    """link(path) writes the library at path; it appears at `library` only once complete, so a
    concurrent process never loads a half-written file."""
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        partial = Path(scratch) / library.name
        link(partial)
        os.replace(partial, library)
    return library


def build_host_library(force: bool = False) -> Path:
    """Plain g++ build of the host reference; seconds. Skipped when up to date."""
    if not force and not _is_stale(HOST_LIBRARY, HOST_SOURCES):
        return HOST_LIBRARY
    cxx = find_cxx()
    sources = [SOURCE_DIR / name for name in HOST_SOURCES]
    return _link_atomically(HOST_LIBRARY, lambda out: _run(
        [cxx, "-std=c++17", "-O2", "-Wall", "-Wextra", "-shared", "-fPIC", "-o", out, *sources]))


def compile_kernels_object(output: Path, archs: str = "80") -> Path:
    """nvcc -c of the kernels alone: proves they compile without TensorRT or a GPU."""
    _run([find_nvcc(), "-std=c++17", "-O2", "-c", *arch_flags(archs), "-Xcompiler", "-fPIC",
          "-o", output, SOURCE_DIR / KERNEL_SOURCES[0]])
    return output


def _build_cuda_library(library: Path, sources: list[str], archs: str, extra_flags: list[str],
                        force: bool = True) -> Path:
    """nvcc build; with force=False skipped when the library is newer than its sources and was
    built for the same `archs` (recorded beside it)."""
    stamp = library.with_name(library.name + ".archs")
    if not force and not _is_stale(library, sources) and stamp.is_file() and stamp.read_text() == archs:
        return library
    nvcc = find_nvcc()
    flags = ["-std=c++17", "-O2", "-Xcompiler", "-fPIC,-fvisibility=hidden", *extra_flags]
    with tempfile.TemporaryDirectory() as scratch:
        objects = []
        for name in tqdm(sources, desc=f"building {library.name}", unit="file"):
            obj = Path(scratch) / (name + ".o")
            cuda = name.endswith(".cu")
            _run([nvcc, *flags, *(arch_flags(archs) if cuda else []), "-c", "-o", obj, SOURCE_DIR / name])
            objects.append(obj)
        _link_atomically(library, lambda out: _run([nvcc, "-shared", *arch_flags(archs), "-o", out, *objects, "-ldl"]))
    stamp.write_text(archs)
    return library


def build_kernel_library(archs: str = DEFAULT_ARCHS, force: bool = True) -> Path:
    return _build_cuda_library(KERNEL_LIBRARY, KERNEL_SOURCES + LAUNCHER_SOURCES, archs, [], force)


def build_plugin_library(archs: str = DEFAULT_ARCHS, include: Path | None = None, out: Path = PLUGIN_LIBRARY,
                         werror: bool = False) -> Path:
    """The TensorRT plugin library at `out`, against the headers in `include` (default: find_tensorrt_include)."""
    include = Path(include) if include else find_tensorrt_include()
    if not (include / "NvInferRuntime.h").is_file():
        raise BuildError(f"{include}: no NvInferRuntime.h there (give the include/ folder of TensorRT 10 or 11)")
    return _build_cuda_library(Path(out), KERNEL_SOURCES + PLUGIN_SOURCES, archs,
                               ["-isystem", str(include), *warning_flags(werror)])


def build_plugin_driver(include: Path, out: Path, werror: bool = True) -> Path:
    """plugin_driver: dlopens a plugin library and runs its creators and plugins' build-time methods as TensorRT
    would (host code only, against the headers in `include`; no libnvinfer, no GPU)."""
    return _link_atomically(Path(out), lambda path: _run(
        [find_nvcc(), "-std=c++17", "-O1", "-isystem", include, *warning_flags(werror), "-o", path,
         SOURCE_DIR / DRIVER_SOURCE, "-ldl"]))


def build_registry_probe(include: Path, out: Path, werror: bool = True) -> Path:
    """A stand-in libnvinfer.so.<major> (name it so) whose getPluginRegistry records registrations, for the
    test of the plugin library's registration at load time (FRCNN_TRT_REGISTER_ON_LOAD=1)."""
    return _link_atomically(Path(out), lambda path: _run(
        [find_nvcc(), "-std=c++17", "-O1", "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden", "-isystem", include,
         *warning_flags(werror), "-o", path, SOURCE_DIR / REGISTRY_PROBE_SOURCE]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugins.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--host", action="store_true", help="build only the host reference library (g++)")
    target.add_argument("--kernels", action="store_true", help="build the CUDA kernels with the C test launcher")
    parser.add_argument("--arch", default=os.environ.get("FRCNN_CUDA_ARCHS", DEFAULT_ARCHS),
                        help="CUDA architectures, e.g. '80;90' or 'native' (default: $FRCNN_CUDA_ARCHS or "
                             f"{DEFAULT_ARCHS})")
    parser.add_argument("--tensorrt-include", type=Path, metavar="DIR",
                        help="TensorRT's include/ folder (default: $TENSORRT_ROOT/include, then the usual places)")
    parser.add_argument("--werror", action="store_true", help="treat compiler warnings as errors")
    args = parser.parse_args(argv)
    try:
        if args.host:
            library = build_host_library(force=True)
        elif args.kernels:
            library = build_kernel_library(args.arch)
        else:
            library = build_plugin_library(args.arch, args.tensorrt_include, werror=args.werror)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(library)
    return 0


if __name__ == "__main__":
    sys.exit(main())
