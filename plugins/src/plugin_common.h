// What the two plugin classes share: attribute reading and writing (PluginFieldCollection),
// error reporting, and the creator factories registration.cpp hands to TensorRT.
// Needs the TensorRT headers.
#pragma once

#include <string>
#include <vector>

#include <NvInferRuntime.h>

#if NV_TENSORRT_MAJOR < 10
#error "the frcnn plugins implement IPluginV3, which needs TensorRT 10 or newer"
#endif

namespace frcnn {

nvinfer1::IPluginCreatorInterface* roi_align_plugin_creator();    // roi_align_plugin.cpp
nvinfer1::IPluginCreatorInterface* batched_nms_plugin_creator();  // nms_plugin.cpp

// Set by setLoggerFinder (registration.cpp) when TensorRT loads the library.
extern nvinfer1::ILoggerFinder* logger_finder;

// Logs through TensorRT's logger once TensorRT has handed one over (setLoggerFinder),
// to stderr before that.
void report_error(std::string const& message) noexcept;

// Attribute values by name. TensorRT's ONNX parser does not convert node attributes to the types
// the creator declares in getFieldNames(): it passes each declared field the node has, typed by
// the attribute's ONNX type (INT -> kINT32, FLOAT and FLOATS -> kFLOAT32, STRING -> kCHAR;
// onnx-tensorrt loadFields). So the exporter writes every attribute with the ONNX type whose
// field type is read here (plugins.PLUGIN_FIELDS), and the readiness check holds nodes to it.
// int64/double are accepted too, for callers that build a PluginFieldCollection by hand.
class FieldReader {
public:
    FieldReader(nvinfer1::PluginFieldCollection const* fields, std::string plugin);
    int get_int(char const* name) const;                  // throws std::invalid_argument if missing
    float get_float(char const* name) const;              // same
    std::vector<float> get_floats(char const* name) const;  // same

private:
    nvinfer1::PluginField const* find(char const* name) const;
    nvinfer1::PluginFieldCollection const* fields_;
    std::string plugin_;
};

// Owns the values behind a PluginFieldCollection (getFieldsToSerialize, getFieldNames).
class FieldWriter {
public:
    void add_int(char const* name, int value);
    void add_float(char const* name, float value);
    void add_floats(char const* name, std::vector<float> values);
    // Declaration only (getFieldNames): name and type, no data.
    void declare(char const* name, nvinfer1::PluginFieldType type, int length);
    nvinfer1::PluginFieldCollection const* collection();

private:
    std::vector<std::vector<char>> storage_;
    std::vector<nvinfer1::PluginField> fields_;
    nvinfer1::PluginFieldCollection collection_{};
};

}  // namespace frcnn
