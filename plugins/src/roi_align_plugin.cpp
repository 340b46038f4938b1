// TensorRT IPluginV3 plugin FrcnnMultilevelRoIAlign (contract: plugins/README.md).
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"
#include "plugin_common.h"

using namespace nvinfer1;

namespace frcnn {
namespace {

char const* const kName = "FrcnnMultilevelRoIAlign";
char const* const kVersion = "1";
char const* const kNamespace = "";

struct RoIAlignAttributes {
    int pooled_size;
    int sampling_ratio;
    int aligned;
    std::vector<float> spatial_scales;
    float canonical_scale;
    int canonical_level;
    int first_level;
};

RoIAlignAttributes read_attributes(PluginFieldCollection const* fields) {
    FieldReader read(fields, kName);
    RoIAlignAttributes a{read.get_int("pooled_size"),     read.get_int("sampling_ratio"),
                         read.get_int("aligned"),         read.get_floats("spatial_scales"),
                         read.get_float("canonical_scale"), read.get_int("canonical_level"),
                         read.get_int("first_level")};
    if (a.pooled_size < 1 || a.sampling_ratio < 1 || a.canonical_scale <= 0.f ||
        a.spatial_scales.size() > static_cast<size_t>(kMaxLevels)) {
        throw std::invalid_argument(std::string(kName) + ": need pooled_size >= 1, sampling_ratio >= 1, " +
                                    "canonical_scale > 0 and at most " + std::to_string(kMaxLevels) + " levels");
    }
    return a;
}

class MultilevelRoIAlignPlugin : public IPluginV3,
                                 public IPluginV3OneCore,
                                 public IPluginV3OneBuild,
                                 public IPluginV3OneRuntime {
public:
    explicit MultilevelRoIAlignPlugin(RoIAlignAttributes attributes) : a_(std::move(attributes)) {}

    // IPluginV3
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
        case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
        case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
        case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    IPluginV3* clone() noexcept override {
        try {
            return new MultilevelRoIAlignPlugin(a_);
        } catch (std::exception const& e) {
            report_error(e.what());
            return nullptr;
        }
    }

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override { return kName; }
    char const* getPluginVersion() const noexcept override { return kVersion; }
    char const* getPluginNamespace() const noexcept override { return kNamespace; }

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override { return 1; }

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                               int32_t nbInputs) const noexcept override {
        if (nbOutputs != 1 || nbInputs != num_inputs()) {
            return 1;
        }
        outputTypes[0] = inputTypes[1];  // the features' dtype: fp16 features give fp16 output
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
                            int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& exprBuilder) noexcept override {
        if (nbInputs != num_inputs() || nbOutputs != 1 || inputs[0].nbDims != 3 || inputs[1].nbDims != 4) {
            report_error(std::string(kName) + ": expects rois [B, R, 4] and " +
                         std::to_string(a_.spatial_scales.size()) + " feature maps [B, C, H, W]");
            return 1;
        }
        IDimensionExpr const* pooled = exprBuilder.constant(a_.pooled_size);
        outputs[0].nbDims = 5;
        outputs[0].d[0] = inputs[0].d[0];  // B
        outputs[0].d[1] = inputs[0].d[1];  // R
        outputs[0].d[2] = inputs[1].d[1];  // C
        outputs[0].d[3] = pooled;
        outputs[0].d[4] = pooled;
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != num_inputs() || nbOutputs != 1) {
            return false;
        }
        PluginTensorDesc const& desc = inOut[pos].desc;
        if (desc.format != TensorFormat::kLINEAR) {
            return false;
        }
        if (pos == 0) {
            return desc.type == DataType::kFLOAT;  // RoI coordinates stay fp32
        }
        if (pos == 1) {
            return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
        }
        return desc.type == inOut[1].desc.type;  // other levels and the output follow level 0
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* /*in*/, int32_t nbInputs,
                            DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override {
        return nbInputs == num_inputs() && nbOutputs == 1 ? 0 : 1;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(PluginTensorDesc const* /*in*/, int32_t nbInputs, PluginTensorDesc const* /*out*/,
                          int32_t nbOutputs) noexcept override {
        return nbInputs == num_inputs() && nbOutputs == 1 ? 0 : 1;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
                    void const* const* inputs, void* const* outputs, void* /*workspace*/,
                    cudaStream_t stream) noexcept override {
        RoIAlignParams p{};
        p.batch = static_cast<int>(inputDesc[0].dims.d[0]);
        p.num_rois = static_cast<int>(inputDesc[0].dims.d[1]);
        p.channels = static_cast<int>(inputDesc[1].dims.d[1]);
        p.num_levels = static_cast<int>(a_.spatial_scales.size());
        for (int l = 0; l < p.num_levels; ++l) {
            p.heights[l] = static_cast<int>(inputDesc[1 + l].dims.d[2]);
            p.widths[l] = static_cast<int>(inputDesc[1 + l].dims.d[3]);
            p.spatial_scales[l] = a_.spatial_scales[l];
        }
        p.pooled_size = a_.pooled_size;
        p.sampling_ratio = a_.sampling_ratio;
        p.aligned = a_.aligned;
        p.canonical_scale = a_.canonical_scale;
        p.canonical_level = a_.canonical_level;
        p.first_level = a_.first_level;
        FeatureType const type = inputDesc[1].type == DataType::kHALF ? FeatureType::kFloat16 : FeatureType::kFloat32;
        cudaError_t const status = launch_multilevel_roi_align(p, static_cast<float const*>(inputs[0]), inputs + 1,
                                                               type, outputs[0], stream);
        if (status != cudaSuccess) {
            report_error(std::string(kName) + ": " + cudaGetErrorString(status));
            return 1;
        }
        return 0;
    }

    IPluginV3* attachToContext(IPluginResourceContext* /*context*/) noexcept override { return clone(); }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override {
        serialized_ = FieldWriter();
        serialized_.add_int("pooled_size", a_.pooled_size);
        serialized_.add_int("sampling_ratio", a_.sampling_ratio);
        serialized_.add_int("aligned", a_.aligned);
        serialized_.add_floats("spatial_scales", a_.spatial_scales);
        serialized_.add_float("canonical_scale", a_.canonical_scale);
        serialized_.add_int("canonical_level", a_.canonical_level);
        serialized_.add_int("first_level", a_.first_level);
        return serialized_.collection();
    }

private:
    int32_t num_inputs() const { return 1 + static_cast<int32_t>(a_.spatial_scales.size()); }

    RoIAlignAttributes a_;
    FieldWriter serialized_;
};

class MultilevelRoIAlignCreator : public IPluginCreatorV3One {
public:
    MultilevelRoIAlignCreator() {
        fields_.declare("pooled_size", PluginFieldType::kINT32, 1);
        fields_.declare("sampling_ratio", PluginFieldType::kINT32, 1);
        fields_.declare("aligned", PluginFieldType::kINT32, 1);
        fields_.declare("spatial_scales", PluginFieldType::kFLOAT32, kMaxLevels);
        fields_.declare("canonical_scale", PluginFieldType::kFLOAT32, 1);
        fields_.declare("canonical_level", PluginFieldType::kINT32, 1);
        fields_.declare("first_level", PluginFieldType::kINT32, 1);
    }

    char const* getPluginName() const noexcept override { return kName; }
    char const* getPluginVersion() const noexcept override { return kVersion; }
    char const* getPluginNamespace() const noexcept override { return kNamespace; }
    PluginFieldCollection const* getFieldNames() noexcept override { return fields_.collection(); }

    // The same fields come from the ONNX node (build phase) and from getFieldsToSerialize
    // (runtime phase, when an engine is deserialized).
    IPluginV3* createPlugin(char const* /*name*/, PluginFieldCollection const* fc,
                            TensorRTPhase /*phase*/) noexcept override {
        try {
            return new MultilevelRoIAlignPlugin(read_attributes(fc));
        } catch (std::exception const& e) {
            report_error(e.what());
            return nullptr;
        }
    }

private:
    FieldWriter fields_;
};

}  // namespace

IPluginCreatorInterface* roi_align_plugin_creator() {
    static MultilevelRoIAlignCreator creator;
    return &creator;
}

}  // namespace frcnn
