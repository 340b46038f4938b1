// A stand-in for libnvinfer.so.<major> that only has a plugin registry: getPluginRegistry() (extern "C",
// as NvInferRuntime.h declares it) returns an IPluginRegistry written against the real headers that
// records what is registered; frcnn_probe_registrations() lists it. tests/test_plugin_library.py puts
// it first on LD_LIBRARY_PATH to check the plugin library's opt-in registration at load time
// (FRCNN_TRT_REGISTER_ON_LOAD=1). It proves the calls and their ABI, not TensorRT's own behaviour.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <NvInferRuntime.h>

using namespace nvinfer1;

namespace {

class RecordingRegistry : public IPluginRegistry {
public:
    struct Entry {
        IPluginCreatorInterface* creator;
        std::string text;
    };
    std::vector<Entry> entries;

    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const space) noexcept override {
        auto& c = static_cast<IPluginCreatorV3One&>(creator);
        if (getCreator(c.getPluginName(), c.getPluginVersion(), space) != nullptr) {
            return false;  // as TensorRT: one creator per name, version and namespace
        }
        entries.push_back({&creator, std::string(c.getPluginName()) + " " + c.getPluginVersion() + " \"" + space +
                                         "\" " + creator.getInterfaceInfo().kind});
        return true;
    }
    IPluginCreatorInterface* getCreator(AsciiChar const* const name, AsciiChar const* const version,
                                        AsciiChar const* const space) noexcept override {
        for (auto const& e : entries) {
            auto* c = static_cast<IPluginCreatorV3One*>(e.creator);
            if (!std::strcmp(c->getPluginName(), name) && !std::strcmp(c->getPluginVersion(), version) &&
                !std::strcmp(c->getPluginNamespace(), space)) {
                return e.creator;
            }
        }
        return nullptr;
    }
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    bool isParentSearchEnabled() const override { return true; }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override { return nullptr; }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    IPluginCreatorInterface* const* getAllCreators(int32_t* const count) const noexcept override {
        *count = 0;
        return nullptr;
    }
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override { return false; }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override { return nullptr; }
    int32_t releasePluginResource(AsciiChar const*) noexcept override { return 0; }
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const count) noexcept override {
        *count = 0;
        return nullptr;
    }
#if NV_TENSORRT_MAJOR < 11  // the deprecated IPluginCreator (V2) members that 11 removed: still pure virtual in 10
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override { return false; }
    IPluginCreator* const* getPluginCreatorList(int32_t* const count) const noexcept override {
        *count = 0;
        return nullptr;
    }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const,
                                     AsciiChar const* const) noexcept override {
        return nullptr;
    }
    bool deregisterCreator(IPluginCreator const&) noexcept override { return false; }
#pragma GCC diagnostic pop
#endif
};

RecordingRegistry registry;

}  // namespace

extern "C" {

__attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept { return &registry; }

__attribute__((visibility("default"))) void frcnn_probe_registrations() {
    for (auto const& e : registry.entries) {
        std::printf("registered %s\n", e.text.c_str());
    }
    std::fflush(stdout);
}

}  // extern "C"
