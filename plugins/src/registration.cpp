// Entry points TensorRT looks up when it loads this library as a plugin library
// (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, builder "plugins to serialize"),
// and the opt-in registration at load time for hosts that only dlopen it.
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "plugin_common.h"

namespace {

nvinfer1::IPluginCreatorInterface* const* creators(int32_t& count) {
    static nvinfer1::IPluginCreatorInterface* const all[] = {frcnn::roi_align_plugin_creator(),
                                                             frcnn::batched_nms_plugin_creator()};
    count = 2;
    return all;
}

// Triton's TensorRT backend (--backend-config=tensorrt,plugins=...), LD_PRELOAD and trtexec
// --staticPlugins only dlopen a plugin library and expect it to register its creators while it
// loads, as TensorRT's REGISTER_TENSORRT_PLUGIN does (which links libnvinfer). loadLibrary instead
// registers what getCreators returns, so registering at load as well would register every creator
// twice: hence opt-in, FRCNN_TRT_REGISTER_ON_LOAD=1. Then getPluginRegistry (extern "C" in
// libnvinfer, NvInferRuntime.h) is looked up at run time, loading libnvinfer.so.<major> when it is
// not loaded yet (LD_PRELOAD runs before it), so the library still links nothing from TensorRT.
void register_on_load() {
    char const* flag = std::getenv("FRCNN_TRT_REGISTER_ON_LOAD");
    if (flag == nullptr || std::strcmp(flag, "1") != 0) {
        return;
    }
    std::string const library = "libnvinfer.so." + std::to_string(NV_TENSORRT_MAJOR);
    void* nvinfer = dlopen(library.c_str(), RTLD_NOW | RTLD_GLOBAL);
    using GetRegistry = nvinfer1::IPluginRegistry* (*)();
    auto get_registry = nvinfer != nullptr ? reinterpret_cast<GetRegistry>(dlsym(nvinfer, "getPluginRegistry")) : nullptr;
    nvinfer1::IPluginRegistry* registry = get_registry != nullptr ? get_registry() : nullptr;
    if (registry == nullptr) {
        frcnn::report_error("frcnn plugins: FRCNN_TRT_REGISTER_ON_LOAD=1 but " + library +
                            " has no plugin registry here (" + (nvinfer ? "no getPluginRegistry" : dlerror()) + ")");
        return;
    }
    int32_t count = 0;
    nvinfer1::IPluginCreatorInterface* const* all = creators(count);
    for (int32_t i = 0; i < count; ++i) {
        auto* creator = static_cast<nvinfer1::IPluginCreatorV3One*>(all[i]);
        char const* name = creator->getPluginName();
        char const* version = creator->getPluginVersion();
        char const* space = creator->getPluginNamespace();
        if (registry->getCreator(name, version, space) == nullptr && !registry->registerCreator(*all[i], space)) {
            frcnn::report_error(std::string("frcnn plugins: TensorRT refused to register ") + name);
        }
    }
}

struct RegisterOnLoad {
    RegisterOnLoad() { register_on_load(); }
};
RegisterOnLoad const kRegisterOnLoad;

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    frcnn::logger_finder = finder;
}

__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    return creators(nbCreators);
}

}  // extern "C"
