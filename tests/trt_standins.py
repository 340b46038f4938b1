"""Stand-ins for the `tensorrt` module that expose only what the real bindings of one version have.

TensorRT cannot be installed here, so exporters.trt and runtimes.tensorrt are tested against
stand-ins. A stand-in written freely proves only that our code agrees with itself; these are held
to the real Python bindings instead. tests/trt_bindings.json lists, for TensorRT 10.16 and 11.1,
every name the bindings define (module functions and attributes, class members, enum values with
their header values), extracted from NVIDIA/TensorRT's python/src/**/*.cpp (pybind11) and
python/packaging/bindings_wheel/tensorrt/__init__.py at tags v10.16 and v11.1, and from the
headers in ../shared/third_party. `strict_module` builds a module from implementations of the
calls a test needs and refuses any name that version lacks, so a call to e.g.
`BuilderFlag.FP16` on 11.1 fails (AttributeError) as it would on the real thing.

Regenerate the facts (needs git and a clone of NVIDIA/TensorRT with those tags):

    python -m tests.trt_standins --extract /path/to/NVIDIA/TensorRT
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
THIRD_PARTY = ROOT.parent / "shared" / "third_party"
FACTS = Path(__file__).with_name("trt_bindings.json")
VERSIONS = {"10.16": "v10.16", "11.1": "v11.1"}  # facts version -> NVIDIA/TensorRT tag


# ------------------------------------------------------------------ extraction from the sources
def _code(text: str, start: int):
    """(index, character) of `text` from `start` on, string literals skipped."""
    quote, i = False, start
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == '"':
                quote = False
        elif c == '"':
            quote = True
        else:
            yield i, c
        i += 1


def _skip_balanced(text: str, start: int, open_: str, close: str) -> int:
    """Index just past the bracket that closes the one at `start`."""
    depth = 0
    for i, c in _code(text, start):
        depth += (c == open_) - (c == close)
        if c == close and depth == 0:
            return i + 1
    raise ValueError(f"unbalanced {open_} at {start}")


def _statement_end(text: str, start: int) -> int:
    """Index of the ';' ending the statement that starts at `start`, outside brackets."""
    depth = 0
    for i, c in _code(text, start):
        depth += (c in "([{") - (c in ")]}")
        if c == ";" and depth <= 0:
            return i
    return len(text)


def strip_comments(text: str) -> str:
    """C++ source without // and /* */ comments (an apostrophe in "doesn't" would read as a char literal)."""
    return re.sub(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', lambda m: m.group(0) if m.group(0)[0] == '"' else " ",
                  text, flags=re.S)


MEMBER = re.compile(r"\.(def|def_static|def_property|def_property_readonly|def_readwrite|def_readonly|value)\(\s*"
                    r"\"(\w+)\"(?:\s*,\s*([\w:]+))?")
DECLARATION = re.compile(r"py::(class_|enum_)<")


def _members(chain: str) -> tuple[list[str], dict[str, str]]:
    names, enumerators = [], {}
    for kind, name, cpp in MEMBER.findall(chain):
        names.append(name)
        if kind == "value" and cpp:
            enumerators[name] = cpp
    return names, enumerators


def extract_bindings(sources: dict[str, str]) -> dict:
    """{'module': [...], 'classes': {name: {'names': [...], 'bases': [cpp types], 'cpp': type}},
    'enums': {name: {NAME: 'Enum::kNAME'}}} from pybind11 binding sources (file name -> text)."""
    module, classes, enums, variables = set(), {}, {}, {}
    for text in map(strip_comments, sources.values()):
        for m in re.finditer(r"\bm\.(?:def|attr)\(\s*\"(\w+)\"", text):
            module.add(m.group(1))
        for m in DECLARATION.finditer(text):
            kind = m.group(1)
            close = _skip_balanced(text, m.end() - 1, "<", ">")
            template = [t.strip() for t in re.split(r",(?![^<]*>)", text[m.end(): close - 1])]
            rest = re.match(r"\s*(\w+)?\s*[({]\s*(\w+)\s*,\s*\"(\w+)\"", text[close:])
            if not rest:
                continue
            variable, parent, name = rest.groups()
            qualified = f"{classes[variables[parent]]['python']}.{name}" if parent in variables else name
            end = _statement_end(text, close)
            names, enumerators = _members(text[close:end])
            if kind == "enum_":
                enums[qualified] = enumerators
            else:
                entry = classes.setdefault(template[0], {"python": qualified, "names": [], "bases": []})
                entry["names"] += names
                entry["bases"] = [t for t in template[1:] if not t.startswith(("std::", "py::"))]
                if variable:
                    variables[variable] = template[0]
        for variable, cpp in variables.items():  # members added later through a variable: var.def(...)
            for m in re.finditer(rf"\b{variable}\s*\.\s*def", text):
                classes[cpp]["names"] += _members(text[m.start() + len(variable): _statement_end(text, m.start())])[0]
    python_of = {cpp: c["python"] for cpp, c in classes.items()}

    def inherited(cpp: str, seen=()) -> set[str]:
        c = classes[cpp]
        names = set(c["names"])
        for base in c["bases"]:
            if base in classes and base not in seen:
                names |= inherited(base, (*seen, cpp))
        return names

    return {"module": sorted(module | set(python_of.values()) | {e for e in enums if "." not in e}),
            "classes": {python_of[cpp]: sorted(inherited(cpp)) for cpp in classes},
            "enums": enums}


def header_enum_values(include: Path) -> dict[str, int]:
    """'Enum::kNAME' -> value, from `enum class Enum : T { ... };` in TensorRT's headers (implicit values count on)."""
    values = {}
    for header in sorted(include.glob("Nv*.h")):
        text = re.sub(r"//[^\n]*|/\*.*?\*/", "", header.read_text(errors="replace"), flags=re.S)
        for m in re.finditer(r"enum\s+class\s+(\w+)\s*(?::\s*[\w:]+)?\s*\{(.*?)\}", text, flags=re.S):
            enum, body, nxt = m.group(1), m.group(2), 0
            for item in (x.strip() for x in body.split(",")):
                e = re.match(r"(k\w+)(?:\s+TRT_DEPRECATED_ENUM)?\s*(?:=\s*([^,]+))?$", item)
                if not e:
                    continue
                if e.group(2) is not None:
                    expr = e.group(2).strip()
                    try:
                        nxt = int(eval(expr, {}, {k.split("::")[1]: v for k, v in values.items()
                                                  if k.startswith(enum + "::")}))
                    except Exception:
                        continue
                values[f"{enum}::{e.group(1)}"] = nxt
                nxt += 1
    return values


def python_package_names(init_text: str) -> list[str]:
    """Public names tensorrt/__init__.py adds to the bindings (top-level functions and assignments)."""
    names = re.findall(r"^def\s+(\w+)", init_text, flags=re.M) + re.findall(r"^(\w+)\s*=", init_text, flags=re.M)
    return sorted({n for n in names if not n.startswith("_")} | {"__version__"})


def extract(repo: Path) -> dict:
    def show(tag, path):
        return subprocess.run(["git", "-C", str(repo), "show", f"{tag}:{path}"], capture_output=True, text=True,
                              check=True).stdout

    out = {"source": "NVIDIA/TensorRT python/src/**/*.cpp (pybind11) and python/packaging/bindings_wheel/tensorrt/"
                     "__init__.py; enum values from that version's headers in ../shared/third_party",
           "regenerate": "python -m tests.trt_standins --extract /path/to/NVIDIA/TensorRT", "versions": {}}
    for version, tag in VERSIONS.items():
        files = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "--name-only", tag, "python/src"],
                               capture_output=True, text=True, check=True).stdout.split()
        sources = {f: show(tag, f) for f in files if f.endswith(".cpp")}
        bindings = extract_bindings(sources)
        values = header_enum_values(THIRD_PARTY / f"tensorrt-{version}" / "include")
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", tag], capture_output=True, text=True,
                                check=True).stdout.strip()
        out["versions"][version] = {
            "tag": tag, "commit": commit,
            "module": sorted(set(bindings["module"]) |
                             set(python_package_names(show(tag, "python/packaging/bindings_wheel/tensorrt/__init__.py")))),
            "classes": bindings["classes"],
            # ILogger::Severity::kERROR is Severity::kERROR in the header's own scope
            "enums": {name: {value: values.get("::".join(cpp.split("::")[-2:])) for value, cpp in members.items()}
                      for name, members in bindings["enums"].items()},
        }
    return out


# ------------------------------------------------------------------ the strict stand-in
def facts(version: str) -> dict:
    return json.loads(FACTS.read_text())["versions"][version]


class NotInBindings(AssertionError):
    """A stand-in defined a name the real bindings of its version do not have."""


class _Enum:
    """An enum's values, exactly those of the bindings; members are ints (pybind11 arithmetic enums)."""

    def __init__(self, name: str, values: dict[str, int | None]):
        self._name = name
        for i, (member, value) in enumerate(values.items()):
            setattr(self, member, _EnumValue(f"{name}.{member}", i if value is None else value))

    def __repr__(self):
        return f"<stand-in enum {self._name}>"


class _EnumValue(int):
    def __new__(cls, name: str, value: int):
        obj = super().__new__(cls, value)
        obj.name = name
        return obj

    def __repr__(self):
        return self.name


def strict_class(version: str, name: str, impl: type) -> type:
    """`impl` (a class implementing some members of binding class `name`) checked against the facts:
    every public member it defines must exist in the bindings of `version`."""
    real = set(facts(version)["classes"][name])
    own = {k for k in vars(impl) if not k.startswith("_")}
    extra = own - real
    if extra:
        raise NotInBindings(f"TensorRT {version}'s {name} has no {', '.join(sorted(extra))}")

    def __setattr__(self, key, value):  # public instance attributes too; a Python subclass may add its own
        if not key.startswith("_") and type(self) is impl and key not in real:
            raise NotInBindings(f"TensorRT {version}'s {name} has no {key}")
        object.__setattr__(self, key, value)

    impl.__setattr__ = __setattr__
    return impl


def strict_module(version: str, full_version: str, **members) -> types.ModuleType:
    """A `tensorrt` module for `version`: every enum of the bindings with its real values; classes and
    functions from `members` (an implementation for each name a test needs), each name checked against
    the facts. Anything else is absent, as a name the version lacks is absent from the real module."""
    known = facts(version)
    module = types.ModuleType("tensorrt")
    module.__version__ = full_version
    for name, value in members.items():
        if name not in known["module"]:
            raise NotInBindings(f"TensorRT {version} has no tensorrt.{name}")
        if isinstance(value, type) and name in known["classes"]:
            value = strict_class(version, name, value)
        setattr(module, name, value)
    for name, values in known["enums"].items():
        owner, _, leaf = name.rpartition(".")
        target = getattr(module, owner, None) if owner else module
        if target is not None:
            setattr(target, leaf, _Enum(name, values))
    return module


# ------------------------------------------------------------------ stand-ins for one engine
class Memory:
    """'Device' memory of the pycuda stand-in: allocations are host arrays keyed by address."""

    def __init__(self):
        self.blocks: dict[int, np.ndarray] = {}

    def alloc(self, nbytes: int):
        address = 4096 * (len(self.blocks) + 1)
        self.blocks[address] = np.zeros(nbytes, np.uint8)
        return type("Allocation", (), {"__int__": lambda self: address})()

    def write(self, address: int, array: np.ndarray) -> None:
        self.blocks[int(address)][: array.nbytes] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)

    def read(self, address: int, dtype, shape) -> np.ndarray:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self.blocks[int(address)][:n].view(dtype).reshape(shape)


def tensorrt_module(version: str, onnx_path, memory: Memory, profile=(1, 2, 4)) -> types.ModuleType:
    """A `tensorrt` for `version` ("10.16" or "11.1") with the calls exporters.trt and runtimes.tensorrt
    make, each a member of the real bindings of that version (strict_module). The 'engine' is the
    ONNX at `onnx_path`, run by ONNX Runtime on `memory`. Test-visible state is private (_name):
    _builders (each with _config, _network), _parsed (files handed to the parser), _loaded (plugin
    libraries), so that no name outside the bindings is public."""
    import onnxruntime as ort

    from runtimes.meta import read_onnx_meta

    meta = read_onnx_meta(onnx_path)
    (h, w), k = meta.canvas, meta.detections_per_img
    state = types.SimpleNamespace(builders=[], parsed=[], loaded=[], sessions=[])
    data_types = facts(version)["enums"]["DataType"]
    numpy_of = {data_types["FLOAT"]: np.float32, data_types["HALF"]: np.float16, data_types["INT8"]: np.int8,
                data_types["INT32"]: np.int32, data_types["INT64"]: np.int64, data_types["BOOL"]: np.bool_,
                data_types["UINT8"]: np.uint8}
    names = ("images", "num_detections", "boxes", "scores", "labels")
    io_types = dict(zip(names, ("UINT8", "INT32", "FLOAT", "FLOAT", "INT32")))

    def shapes(n):
        return dict(images=(n, h, w, 3), num_detections=(n,), boxes=(n, k, 4), scores=(n, k), labels=(n, k))

    def C(name):  # the binding class `name`, with only the members `impl` defines, each checked
        return lambda impl: strict_class(version, name, impl)

    @C("IExecutionContext")
    class IExecutionContext:
        def __init__(self):
            self._batch, self._addresses = None, {}

        def set_input_shape(self, name, shape):
            assert name == "images" and tuple(shape[1:]) == (h, w, 3)
            self._batch = shape[0]
            return profile[0] <= shape[0] <= profile[2]

        def get_tensor_shape(self, name):
            return shapes(self._batch)[name]

        def set_tensor_address(self, name, address):
            self._addresses[name] = address

        def execute_async_v3(self, stream_handle):
            assert stream_handle == 7
            images = memory.read(self._addresses["images"], np.uint8, shapes(self._batch)["images"])
            if not state.sessions:
                state.sessions.append(ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]))
            for name, value in zip(names[1:], state.sessions[0].run(list(names[1:]), {"images": images})):
                assert value.shape == shapes(self._batch)[name]
                memory.write(self._addresses[name], value.astype(np.dtype(numpy_of[data_types[io_types[name]]])))
            return True

    @C("ICudaEngine")
    class ICudaEngine:
        num_io_tensors = len(names)

        def get_tensor_name(self, index):
            return names[index]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "images" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return getattr(trt.DataType, io_types[name])

        def get_tensor_shape(self, name):
            return (-1, h, w, 3) if name == "images" else shapes(-1)[name]

        def get_tensor_profile_shape(self, name, profile_index):
            return [(n, h, w, 3) for n in profile]

        def create_execution_context(self):
            return IExecutionContext()

    @C("ILogger")
    class ILogger:
        def __init__(self):
            pass

    @C("ITensor")
    class ITensor:
        def __init__(self, name, shape):
            self._name, self._shape = name, shape

        name = property(lambda self: self._name)
        shape = property(lambda self: self._shape)

    @C("INetworkDefinition")
    class INetworkDefinition:
        num_inputs = 1

        def __init__(self, flags):
            self._flags = flags

        def get_input(self, index):
            return ITensor("images", (-1, h, w, 3))

    @C("IOptimizationProfile")
    class IOptimizationProfile:
        def set_shape(self, input, min, opt, max):  # noqa: A002 - the bindings' argument names
            self._shapes = (input, tuple(min), tuple(opt), tuple(max))

    @C("ITimingCache")
    class ITimingCache:
        def __init__(self, data):
            self._data = data

        def serialize(self):
            return b"timings:" + bytes(self._data)

    @C("IBuilderConfig")
    class IBuilderConfig:
        def __init__(self):
            self._set, self._cleared, self._pools, self._profiles, self._cache = set(), set(), {}, [], None

        def set_flag(self, flag):
            self._set.add(flag.name.split(".")[-1])

        def clear_flag(self, flag):
            self._cleared.add(flag.name.split(".")[-1])

        def set_memory_pool_limit(self, pool, pool_size):
            self._pools[pool.name.split(".")[-1]] = pool_size

        def add_optimization_profile(self, profile):
            self._profiles.append(profile._shapes)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            return ITimingCache(serialized_timing_cache)

        def set_timing_cache(self, cache, ignore_mismatch):
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

    @C("Builder")
    class Builder:
        def __init__(self, logger):
            state.builders.append(self)

        def create_network(self, flags=0):
            self._network = INetworkDefinition(flags)
            return self._network

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def create_builder_config(self):
            self._config = IBuilderConfig()
            return self._config

        def build_serialized_network(self, network, config):
            return Path(network._parsed).read_bytes()  # the stand-ins' "engine" is the ONNX itself

    @C("OnnxParser")
    class OnnxParser:
        def __init__(self, network, logger):
            self._network = network

        def parse_from_file(self, model):
            state.parsed.append(model)
            self._network._parsed = model
            return True

    @C("Runtime")
    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, serialized_engine):
            return ICudaEngine() if serialized_engine == Path(onnx_path).read_bytes() else None

    @C("IPluginRegistry")
    class IPluginRegistry:
        def load_library(self, plugin_path):
            state.loaded.append(plugin_path)
            return object()

    registry = IPluginRegistry()
    trt = strict_module(
        version, {"10.16": "10.16.0", "11.1": "11.1.0"}[version], ILogger=ILogger, Builder=Builder,
        OnnxParser=OnnxParser, Runtime=Runtime, IBuilderConfig=IBuilderConfig, INetworkDefinition=INetworkDefinition,
        ICudaEngine=ICudaEngine, IExecutionContext=IExecutionContext, ITensor=ITensor, ITimingCache=ITimingCache,
        IOptimizationProfile=IOptimizationProfile, IPluginRegistry=IPluginRegistry,
        nptype=lambda trt_type: numpy_of[int(trt_type)],
        init_libnvinfer_plugins=lambda logger, namespace: state.loaded.append("libnvinfer_plugin") or True,
        get_plugin_registry=lambda: registry)
    trt._memory, trt._builders, trt._parsed, trt._loaded = memory, state.builders, state.parsed, state.loaded
    return trt


def pycuda_modules(memory: Memory):
    """(pycuda, pycuda.driver, primary context class) with the calls runtimes.tensorrt makes; free-written:
    pycuda is not what the issue holds to its sources."""
    class PrimaryContext:
        depth, detached = 0, False

        def push(self):
            PrimaryContext.depth += 1

        def pop(self):
            PrimaryContext.depth -= 1

        def detach(self):
            PrimaryContext.detached = True

    cuda = types.ModuleType("pycuda.driver")
    cuda.Error = RuntimeError
    cuda.init = lambda: None
    cuda.Device = type("Device", (), {"count": staticmethod(lambda: 1), "__init__": lambda self, i: None,
                                      "retain_primary_context": lambda self: PrimaryContext()})
    cuda.Stream = lambda: types.SimpleNamespace(handle=7, synchronize=lambda: None)
    cuda.pagelocked_empty = lambda shape, dtype: np.empty(shape, dtype)
    cuda.mem_alloc = memory.alloc
    cuda.memcpy_htod_async = lambda dst, src, stream: memory.write(int(dst), src)
    cuda.memcpy_dtoh_async = lambda dst, src, stream: np.copyto(dst, memory.read(int(src), dst.dtype, dst.shape))
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    return pycuda, cuda, PrimaryContext


def install(monkeypatch, version: str, onnx_path, profile=(1, 2, 4)):
    """Put the stand-ins of TensorRT `version` and pycuda in sys.modules for one test; returns (trt, primary
    context class)."""
    import sys

    from runtimes import tensorrt as trt_runtime

    memory = Memory()
    trt = tensorrt_module(version, onnx_path, memory, profile)
    pycuda, cuda, primary = pycuda_modules(memory)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setattr(trt_runtime, "_loaded_libraries", {})
    monkeypatch.delenv(trt_runtime.PLUGIN_LIBRARY_ENV, raising=False)
    return trt, primary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.trt_standins", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--extract", type=Path, required=True, metavar="REPO",
                   help="a git clone of NVIDIA/TensorRT with the tags " + ", ".join(VERSIONS.values()))
    a = p.parse_args(argv)
    FACTS.write_text(json.dumps(extract(a.extract), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FACTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
