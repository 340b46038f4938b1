// A host-only driver of libfrcnn_trt_plugins.so that does what TensorRT does with a plugin library
// at build time, without libnvinfer or a GPU: dlopen, getCreators, then the creators' fields, the
// plugins' output types and shapes, supported formats, and the getFieldsToSerialize -> createPlugin
// round trip. Compiled against TensorRT's real headers (tests/test_plugin_library.py, both versions).
//
//   plugin_driver LIB                       list the creators and the fields they declare
//   plugin_driver --on-load LIB             dlopen only, then list what registered itself with the
//                                           registry of a loaded libnvinfer (registry_probe.cpp)
//   plugin_driver LIB NAME FIELD... -- IN...
//     FIELD  name=TYPE:v1,v2,...  TYPE as TensorRT's ONNX parser makes it: i32, f32, char (or i64, f64)
//     IN     TYPE:d1,d2,...       TYPE float, half, int32, ...; a d that is a letter is a symbolic dimension
//
// Output: one "key value..." line per fact, for the test to parse.
#include <dlfcn.h>

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <NvInferRuntime.h>

using namespace nvinfer1;

namespace {

// ---------------------------------------------------------------- symbolic dimensions
// IExprBuilder and IDimensionExpr wrap implementation classes (apiv::V*); these are small host ones:
// an expression is a constant or a text such as "B" or "(B*100)".
class Expr;

class ExprImpl : public apiv::VDimensionExpr {
public:
    ExprImpl(bool constant, int64_t value, std::string text) : constant_(constant), value_(value), text_(std::move(text)) {}
    bool isConstant() const override { return constant_; }
    int64_t getConstantValue() const override { return constant_ ? value_ : INT64_MIN; }
    bool isSizeTensor() const override { return false; }
    std::string text() const { return constant_ ? std::to_string(value_) : text_; }

private:
    bool constant_;
    int64_t value_;
    std::string text_;
};

class Expr : public IDimensionExpr {
public:
    Expr(bool constant, int64_t value, std::string text) : impl_(constant, value, std::move(text)) { mImpl = &impl_; }
    ~Expr() noexcept override = default;
    ExprImpl const& impl() const { return impl_; }

private:
    ExprImpl impl_;
};

std::string text_of(IDimensionExpr const* e) {
    return e == nullptr ? "null" : static_cast<Expr const*>(e)->impl().text();
}

class ExprBuilderImpl : public apiv::VExprBuilder {
public:
    IDimensionExpr const* constant(int64_t value) override { return make(true, value, ""); }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override {
        if (a.isConstant() && b.isConstant()) {
            int64_t x = a.getConstantValue(), y = b.getConstantValue(), r = 0;
            switch (op) {
            case DimensionOperation::kSUM: r = x + y; break;
            case DimensionOperation::kPROD: r = x * y; break;
            case DimensionOperation::kMAX: r = x > y ? x : y; break;
            case DimensionOperation::kMIN: r = x < y ? x : y; break;
            case DimensionOperation::kSUB: r = x - y; break;
            case DimensionOperation::kEQUAL: r = x == y; break;
            case DimensionOperation::kLESS: r = x < y; break;
            case DimensionOperation::kFLOOR_DIV: r = x / y; break;
            case DimensionOperation::kCEIL_DIV: r = (x + y - 1) / y; break;
            }
            return make(true, r, "");
        }
        static char const* const names[] = {"+", "*", "max", "min", "-", "==", "<", "//", "ceildiv"};
        return make(false, 0, "(" + text_of(&a) + names[static_cast<int>(op)] + text_of(&b) + ")");
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override {
        return nullptr;  // the frcnn plugins have no size tensors
    }
    IDimensionExpr const* make(bool constant, int64_t value, std::string text) {
        exprs_.push_back(std::make_unique<Expr>(constant, value, std::move(text)));
        return exprs_.back().get();
    }

private:
    std::vector<std::unique_ptr<Expr>> exprs_;
};

class ExprBuilder : public IExprBuilder {
public:
    ExprBuilder() { mImpl = &impl_; }
    ~ExprBuilder() noexcept override = default;
    ExprBuilderImpl& impl() { return impl_; }

private:
    ExprBuilderImpl impl_;
};

// ---------------------------------------------------------------- names
struct TypeName {
    DataType type;
    char const* name;
};
TypeName const kTypes[] = {{DataType::kFLOAT, "float"}, {DataType::kHALF, "half"},   {DataType::kINT8, "int8"},
                           {DataType::kINT32, "int32"}, {DataType::kBOOL, "bool"},   {DataType::kUINT8, "uint8"},
                           {DataType::kFP8, "fp8"},     {DataType::kBF16, "bf16"},   {DataType::kINT64, "int64"},
                           {DataType::kINT4, "int4"}};

char const* type_name(DataType t) {
    for (auto const& tn : kTypes) {
        if (tn.type == t) return tn.name;
    }
    return "?";
}

bool parse_type(std::string const& s, DataType& out) {
    for (auto const& tn : kTypes) {
        if (s == tn.name) {
            out = tn.type;
            return true;
        }
    }
    return false;
}

char const* field_type_name(PluginFieldType t) {
    switch (t) {
    case PluginFieldType::kFLOAT16: return "kFLOAT16";
    case PluginFieldType::kFLOAT32: return "kFLOAT32";
    case PluginFieldType::kFLOAT64: return "kFLOAT64";
    case PluginFieldType::kINT8: return "kINT8";
    case PluginFieldType::kINT16: return "kINT16";
    case PluginFieldType::kINT32: return "kINT32";
    case PluginFieldType::kCHAR: return "kCHAR";
    case PluginFieldType::kDIMS: return "kDIMS";
    case PluginFieldType::kUNKNOWN: return "kUNKNOWN";
    case PluginFieldType::kBF16: return "kBF16";
    case PluginFieldType::kINT64: return "kINT64";
    case PluginFieldType::kFP8: return "kFP8";
    case PluginFieldType::kINT4: return "kINT4";
    case PluginFieldType::kFP4: return "kFP4";
    }
    return "?";
}

std::string field_values(PluginField const& f) {
    std::ostringstream out;
    for (int32_t i = 0; f.data != nullptr && i < f.length; ++i) {
        if (f.type == PluginFieldType::kCHAR) {
            out << static_cast<char const*>(f.data)[i];
            continue;
        }
        if (i) out << ",";
        if (f.type == PluginFieldType::kFLOAT32) out << static_cast<float const*>(f.data)[i];
        else if (f.type == PluginFieldType::kINT32) out << static_cast<int32_t const*>(f.data)[i];
        else if (f.type == PluginFieldType::kINT64) out << static_cast<int64_t const*>(f.data)[i];
        else if (f.type == PluginFieldType::kFLOAT64) out << static_cast<double const*>(f.data)[i];
        else out << "?";
    }
    return out.str();
}

void print_fields(char const* key, PluginFieldCollection const* fc) {
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        std::printf("%s %s %s %d %s\n", key, f.name, field_type_name(f.type), f.length, field_values(f).c_str());
    }
}

// ---------------------------------------------------------------- arguments
struct Field {
    std::string name;
    PluginFieldType type;
    std::vector<char> bytes;  // values as the parser lays them out
    int32_t length;
};

std::vector<std::string> split(std::string const& s, char sep) {
    std::vector<std::string> parts;
    std::stringstream in(s);
    std::string part;
    while (std::getline(in, part, sep)) parts.push_back(part);
    return parts;
}

template <typename T>
void append(std::vector<char>& bytes, T value) {
    char const* p = reinterpret_cast<char const*>(&value);
    bytes.insert(bytes.end(), p, p + sizeof(T));
}

bool parse_field(std::string const& spec, Field& f) {
    size_t eq = spec.find('='), colon = spec.find(':');
    if (eq == std::string::npos || colon == std::string::npos || colon < eq) return false;
    f.name = spec.substr(0, eq);
    std::string type = spec.substr(eq + 1, colon - eq - 1), values = spec.substr(colon + 1);
    if (type == "char") {  // NUL-terminated, as the parser copies a STRING attribute
        f.type = PluginFieldType::kCHAR;
        f.bytes.assign(values.begin(), values.end());
        f.bytes.push_back('\0');
        f.length = static_cast<int32_t>(f.bytes.size());
        return true;
    }
    std::vector<std::string> items = split(values, ',');
    f.length = static_cast<int32_t>(items.size());
    for (auto const& v : items) {
        if (type == "i32") append<int32_t>(f.bytes, static_cast<int32_t>(std::stol(v)));
        else if (type == "i64") append<int64_t>(f.bytes, std::stoll(v));
        else if (type == "f32") append<float>(f.bytes, std::stof(v));
        else if (type == "f64") append<double>(f.bytes, std::stod(v));
        else return false;
    }
    f.type = type == "i32" ? PluginFieldType::kINT32 : type == "i64" ? PluginFieldType::kINT64
           : type == "f32" ? PluginFieldType::kFLOAT32 : PluginFieldType::kFLOAT64;
    return true;
}

struct Input {
    DataType type;
    std::vector<std::string> dims;  // numbers or symbols
};

bool parse_input(std::string const& spec, Input& in) {
    size_t colon = spec.find(':');
    if (colon == std::string::npos || !parse_type(spec.substr(0, colon), in.type)) return false;
    in.dims = split(spec.substr(colon + 1), ',');
    return !in.dims.empty() && in.dims.size() <= static_cast<size_t>(Dims::MAX_DIMS);
}

// A concrete value for each dimension (symbols: 2), for descriptors that need numbers.
Dims concrete(Input const& in) {
    Dims d{};
    d.nbDims = static_cast<int32_t>(in.dims.size());
    for (int32_t i = 0; i < d.nbDims; ++i) {
        bool symbol = std::isalpha(static_cast<unsigned char>(in.dims[i][0])) != 0;
        d.d[i] = symbol ? 2 : std::stoll(in.dims[i]);
    }
    return d;
}

IPluginCreatorV3One* find_creator(IPluginCreatorInterface* const* creators, int32_t n, char const* name) {
    for (int32_t i = 0; i < n; ++i) {
        if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0) continue;
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(c->getPluginName(), name) == 0) return c;
    }
    return nullptr;
}

int run_plugin(IPluginCreatorV3One* creator, std::vector<Field>& fields, std::vector<Input> const& inputs) {
    std::vector<PluginField> pf;
    for (auto& f : fields) pf.emplace_back(f.name.c_str(), f.bytes.data(), f.type, f.length);
    PluginFieldCollection fc{static_cast<int32_t>(pf.size()), pf.data()};
    std::unique_ptr<IPluginV3> plugin(creator->createPlugin("driver", &fc, TensorRTPhase::kBUILD));
    if (!plugin) {
        std::printf("create failed\n");
        return 0;
    }
    std::printf("create ok\n");
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    if (!core || !build || !runtime) {
        std::printf("capabilities missing\n");
        return 1;
    }
    std::printf("core %s %s %s\n", core->getPluginName(), core->getPluginVersion(), core->getPluginNamespace());
    int32_t const nin = static_cast<int32_t>(inputs.size()), nout = build->getNbOutputs();
    std::printf("outputs %d\n", nout);

    std::vector<DataType> in_types, out_types(nout, DataType::kFLOAT);
    for (auto const& in : inputs) in_types.push_back(in.type);
    if (build->getOutputDataTypes(out_types.data(), nout, in_types.data(), nin) != 0) {
        std::printf("output_types failed\n");
    } else {
        std::printf("output_types");
        for (DataType t : out_types) std::printf(" %s", type_name(t));
        std::printf("\n");
    }

    ExprBuilder builder;
    std::vector<DimsExprs> in_dims(nin), out_dims(nout);
    for (int32_t i = 0; i < nin; ++i) {
        in_dims[i].nbDims = static_cast<int32_t>(inputs[i].dims.size());
        for (int32_t k = 0; k < in_dims[i].nbDims; ++k) {
            std::string const& d = inputs[i].dims[k];
            bool symbol = std::isalpha(static_cast<unsigned char>(d[0])) != 0;
            in_dims[i].d[k] = builder.impl().make(!symbol, symbol ? 0 : std::stoll(d), d);
        }
    }
    if (build->getOutputShapes(in_dims.data(), nin, nullptr, 0, out_dims.data(), nout, builder) != 0) {
        std::printf("output_shapes failed\n");
    } else {
        std::printf("output_shapes");
        for (auto const& d : out_dims) {
            std::printf(" [");
            for (int32_t k = 0; k < d.nbDims; ++k) std::printf("%s%s", k ? "," : "", text_of(d.d[k]).c_str());
            std::printf("]");
        }
        std::printf("\n");
    }

    // Formats as TensorRT asks: position `pos` varies while the earlier ones hold the given/declared types.
    std::vector<DynamicPluginTensorDesc> io(nin + nout);
    for (int32_t i = 0; i < nin + nout; ++i) {
        io[i].desc.type = i < nin ? in_types[i] : out_types[i - nin];
        io[i].desc.format = TensorFormat::kLINEAR;
        io[i].desc.dims = i < nin ? concrete(inputs[i]) : Dims{};
        io[i].min = io[i].max = io[i].opt = io[i].desc.dims;
    }
    for (int32_t pos = 0; pos < nin + nout; ++pos) {
        std::printf("supports %d", pos);
        DynamicPluginTensorDesc const keep = io[pos];
        for (auto const& tn : kTypes) {
            io[pos].desc.type = tn.type;
            if (build->supportsFormatCombination(pos, io.data(), nin, nout)) std::printf(" %s", tn.name);
        }
        io[pos] = keep;
        io[pos].desc.format = TensorFormat::kCHW32;
        std::printf(" | chw32 %s\n", build->supportsFormatCombination(pos, io.data(), nin, nout) ? "yes" : "no");
        io[pos] = keep;
    }
    std::printf("configure %d\n", build->configurePlugin(io.data(), nin, io.data() + nin, nout));
    std::printf("workspace %zu\n", build->getWorkspaceSize(io.data(), nin, io.data() + nin, nout));

    // Serialisation round trip: what an engine stores, read back as TensorRT does at deserialisation.
    PluginFieldCollection const* stored = runtime->getFieldsToSerialize();
    print_fields("serialized", stored);
    std::unique_ptr<IPluginV3> again(creator->createPlugin("driver", stored, TensorRTPhase::kRUNTIME));
    if (!again) {
        std::printf("roundtrip failed\n");
        return 0;
    }
    auto* again_runtime =
        static_cast<IPluginV3OneRuntime*>(again->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    print_fields("reserialized", again_runtime->getFieldsToSerialize());
    std::unique_ptr<IPluginV3> cloned(plugin->clone());
    std::printf("clone %s\n", cloned ? "ok" : "failed");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: plugin_driver LIB [NAME FIELD... -- INPUT...]\n");
        return 2;
    }
    if (std::strcmp(argv[1], "--on-load") == 0 && argc == 3) {  // what Triton's backend does: dlopen, nothing else
        if (dlopen(argv[2], RTLD_NOW | RTLD_LOCAL) == nullptr) {
            std::printf("dlopen failed %s\n", dlerror());
            return 1;
        }
        auto probe = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "frcnn_probe_registrations"));
        if (probe == nullptr) {
            std::printf("no registry loaded\n");
            return 0;
        }
        probe();
        return 0;
    }
    void* lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
        std::printf("dlopen failed %s\n", dlerror());
        return 1;
    }
    using GetCreators = IPluginCreatorInterface* const* (*)(int32_t&);
    auto get_creators = reinterpret_cast<GetCreators>(dlsym(lib, "getCreators"));
    void* set_logger_finder = dlsym(lib, "setLoggerFinder");
    std::printf("symbols getCreators=%s setLoggerFinder=%s\n", get_creators ? "yes" : "no",
                set_logger_finder ? "yes" : "no");
    if (!get_creators) return 1;
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = get_creators(n);
    if (argc == 2) {
        for (int32_t i = 0; i < n; ++i) {
            InterfaceInfo info = creators[i]->getInterfaceInfo();
            if (std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") != 0) {
                std::printf("creator ? %s\n", info.kind);
                continue;
            }
            auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
            std::printf("creator %s %s \"%s\" %s %d.%d\n", c->getPluginName(), c->getPluginVersion(),
                        c->getPluginNamespace(), info.kind, info.major, info.minor);
            print_fields("field", c->getFieldNames());
        }
        return 0;
    }
    IPluginCreatorV3One* creator = find_creator(creators, n, argv[2]);
    if (creator == nullptr) {
        std::printf("no creator %s\n", argv[2]);
        return 1;
    }
    std::vector<Field> fields;
    std::vector<Input> inputs;
    bool after = false;
    for (int i = 3; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--") {
            after = true;
            continue;
        }
        bool ok = true;
        if (after) {
            Input in;
            ok = parse_input(arg, in);
            inputs.push_back(in);
        } else {
            Field f;
            ok = parse_field(arg, f);
            fields.push_back(f);
        }
        if (!ok) {
            std::fprintf(stderr, "bad argument %s\n", arg.c_str());
            return 2;
        }
    }
    return run_plugin(creator, fields, inputs);
}
