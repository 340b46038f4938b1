// Entry points TensorRT looks up when it loads this library as a plugin library
// (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, builder "plugins to serialize").
#include "plugin_common.h"

extern "C" {

__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    frcnn::logger_finder = finder;
}

__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
    static nvinfer1::IPluginCreatorInterface* const creators[] = {frcnn::roi_align_plugin_creator(),
                                                                  frcnn::batched_nms_plugin_creator()};
    nbCreators = 2;
    return creators;
}

}  // extern "C"
