#include "plugin_common.h"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace frcnn {

nvinfer1::ILoggerFinder* logger_finder = nullptr;

void report_error(std::string const& message) noexcept {
    nvinfer1::ILogger* logger = logger_finder != nullptr ? logger_finder->findLogger() : nullptr;
    if (logger != nullptr) {
        logger->log(nvinfer1::ILogger::Severity::kERROR, message.c_str());
    } else {
        std::fprintf(stderr, "%s\n", message.c_str());
    }
}

FieldReader::FieldReader(nvinfer1::PluginFieldCollection const* fields, std::string plugin)
    : fields_(fields), plugin_(std::move(plugin)) {}

nvinfer1::PluginField const* FieldReader::find(char const* name) const {
    for (int32_t i = 0; fields_ != nullptr && i < fields_->nbFields; ++i) {
        nvinfer1::PluginField const& field = fields_->fields[i];
        if (field.name != nullptr && std::strcmp(field.name, name) == 0 && field.data != nullptr && field.length > 0) {
            return &field;
        }
    }
    throw std::invalid_argument(plugin_ + ": attribute '" + name + "' is missing");
}

std::vector<float> FieldReader::get_floats(char const* name) const {
    nvinfer1::PluginField const* field = find(name);
    std::vector<float> values(field->length);
    for (int32_t i = 0; i < field->length; ++i) {
        switch (field->type) {
        case nvinfer1::PluginFieldType::kFLOAT32: values[i] = static_cast<float const*>(field->data)[i]; break;
        case nvinfer1::PluginFieldType::kFLOAT64:
            values[i] = static_cast<float>(static_cast<double const*>(field->data)[i]);
            break;
        default: throw std::invalid_argument(plugin_ + ": attribute '" + name + "' must be float");
        }
    }
    return values;
}

float FieldReader::get_float(char const* name) const { return get_floats(name).front(); }

int FieldReader::get_int(char const* name) const {
    nvinfer1::PluginField const* field = find(name);
    switch (field->type) {
    case nvinfer1::PluginFieldType::kINT32: return static_cast<int32_t const*>(field->data)[0];
    case nvinfer1::PluginFieldType::kINT64: return static_cast<int>(static_cast<int64_t const*>(field->data)[0]);
    default: throw std::invalid_argument(plugin_ + ": attribute '" + name + "' must be an integer");
    }
}

void FieldWriter::add_int(char const* name, int value) {
    storage_.emplace_back(reinterpret_cast<char const*>(&value), reinterpret_cast<char const*>(&value + 1));
    fields_.emplace_back(name, nullptr, nvinfer1::PluginFieldType::kINT32, 1);
}

void FieldWriter::add_float(char const* name, float value) { add_floats(name, {value}); }

void FieldWriter::add_floats(char const* name, std::vector<float> values) {
    char const* bytes = reinterpret_cast<char const*>(values.data());
    storage_.emplace_back(bytes, bytes + values.size() * sizeof(float));
    fields_.emplace_back(name, nullptr, nvinfer1::PluginFieldType::kFLOAT32, static_cast<int32_t>(values.size()));
}

void FieldWriter::declare(char const* name, nvinfer1::PluginFieldType type, int length) {
    storage_.emplace_back();
    fields_.emplace_back(name, nullptr, type, length);
}

nvinfer1::PluginFieldCollection const* FieldWriter::collection() {
    // Data pointers are set here, once storage_ has stopped growing.
    for (size_t i = 0; i < fields_.size(); ++i) {
        fields_[i].data = storage_[i].empty() ? nullptr : storage_[i].data();
    }
    collection_.nbFields = static_cast<int32_t>(fields_.size());
    collection_.fields = fields_.data();
    return &collection_;
}

}  // namespace frcnn
