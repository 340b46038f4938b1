// TensorRT IPluginV3 plugin FrcnnBatchedNMS (contract: plugins/README.md).
#include <exception>
#include <stdexcept>
#include <string>

#include "kernels.h"
#include "plugin_common.h"

using namespace nvinfer1;

namespace frcnn {
namespace {

char const* const kName = "FrcnnBatchedNMS";
char const* const kVersion = "1";
char const* const kNamespace = "";

struct NmsAttributes {
    float iou_threshold;
    float score_threshold;
    int max_output_boxes;
};

NmsAttributes read_attributes(PluginFieldCollection const* fields) {
    FieldReader read(fields, kName);
    NmsAttributes a{read.get_float("iou_threshold"), read.get_float("score_threshold"),
                    read.get_int("max_output_boxes")};
    if (a.max_output_boxes < 1) {
        throw std::invalid_argument(std::string(kName) + ": max_output_boxes must be >= 1");
    }
    return a;
}

class BatchedNmsPlugin : public IPluginV3,
                         public IPluginV3OneCore,
                         public IPluginV3OneBuild,
                         public IPluginV3OneRuntime {
public:
    explicit BatchedNmsPlugin(NmsAttributes attributes) : a_(attributes) {}

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
            return new BatchedNmsPlugin(a_);
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
    int32_t getNbOutputs() const noexcept override { return 2; }

    int32_t getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* /*inputTypes*/,
                               int32_t nbInputs) const noexcept override {
        if (nbOutputs != 2 || nbInputs != 3) {
            return 1;
        }
        outputTypes[0] = DataType::kINT32;  // count
        outputTypes[1] = DataType::kINT32;  // indices
        return 0;
    }

    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
                            int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
                            IExprBuilder& exprBuilder) noexcept override {
        if (nbInputs != 3 || nbOutputs != 2 || inputs[0].nbDims != 3 || inputs[1].nbDims != 2 ||
            inputs[2].nbDims != 2) {
            report_error(std::string(kName) + ": expects boxes [B, N, 4], scores [B, N] and classes [B, N]");
            return 1;
        }
        outputs[0].nbDims = 1;
        outputs[0].d[0] = inputs[0].d[0];
        outputs[1].nbDims = 2;
        outputs[1].d[0] = inputs[0].d[0];
        outputs[1].d[1] = exprBuilder.constant(a_.max_output_boxes);
        return 0;
    }

    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                   int32_t nbOutputs) noexcept override {
        if (nbInputs != 3 || nbOutputs != 2 || inOut[pos].desc.format != TensorFormat::kLINEAR) {
            return false;
        }
        // boxes and scores float32; classes, count and indices int32
        return inOut[pos].desc.type == (pos < 2 ? DataType::kFLOAT : DataType::kINT32);
    }

    int32_t configurePlugin(DynamicPluginTensorDesc const* /*in*/, int32_t nbInputs,
                            DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept override {
        return nbInputs == 3 && nbOutputs == 2 ? 0 : 1;
    }

    // Scratch for the largest shapes of the profile; smaller shapes need less.
    size_t getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t /*nbInputs*/,
                            DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept override {
        return batched_nms_workspace_size(static_cast<int>(inputs[0].max.d[0]), static_cast<int>(inputs[0].max.d[1]));
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(PluginTensorDesc const* /*in*/, int32_t nbInputs, PluginTensorDesc const* /*out*/,
                          int32_t nbOutputs) noexcept override {
        return nbInputs == 3 && nbOutputs == 2 ? 0 : 1;
    }

    int32_t enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
                    void const* const* inputs, void* const* outputs, void* workspace,
                    cudaStream_t stream) noexcept override {
        NmsParams p{};
        p.batch = static_cast<int>(inputDesc[0].dims.d[0]);
        p.num_boxes = static_cast<int>(inputDesc[0].dims.d[1]);
        p.iou_threshold = a_.iou_threshold;
        p.score_threshold = a_.score_threshold;
        p.max_output_boxes = a_.max_output_boxes;
        cudaError_t const status =
            launch_batched_nms(p, static_cast<float const*>(inputs[0]), static_cast<float const*>(inputs[1]),
                               static_cast<int const*>(inputs[2]), static_cast<int*>(outputs[0]),
                               static_cast<int*>(outputs[1]), workspace, stream);
        if (status != cudaSuccess) {
            report_error(std::string(kName) + ": " + cudaGetErrorString(status));
            return 1;
        }
        return 0;
    }

    IPluginV3* attachToContext(IPluginResourceContext* /*context*/) noexcept override { return clone(); }

    PluginFieldCollection const* getFieldsToSerialize() noexcept override {
        serialized_ = FieldWriter();
        serialized_.add_float("iou_threshold", a_.iou_threshold);
        serialized_.add_float("score_threshold", a_.score_threshold);
        serialized_.add_int("max_output_boxes", a_.max_output_boxes);
        return serialized_.collection();
    }

private:
    NmsAttributes a_;
    FieldWriter serialized_;
};

class BatchedNmsCreator : public IPluginCreatorV3One {
public:
    BatchedNmsCreator() {
        fields_.declare("iou_threshold", PluginFieldType::kFLOAT32, 1);
        fields_.declare("score_threshold", PluginFieldType::kFLOAT32, 1);
        fields_.declare("max_output_boxes", PluginFieldType::kINT32, 1);
    }

    char const* getPluginName() const noexcept override { return kName; }
    char const* getPluginVersion() const noexcept override { return kVersion; }
    char const* getPluginNamespace() const noexcept override { return kNamespace; }
    PluginFieldCollection const* getFieldNames() noexcept override { return fields_.collection(); }

    IPluginV3* createPlugin(char const* /*name*/, PluginFieldCollection const* fc,
                            TensorRTPhase /*phase*/) noexcept override {
        try {
            return new BatchedNmsPlugin(read_attributes(fc));
        } catch (std::exception const& e) {
            report_error(e.what());
            return nullptr;
        }
    }

private:
    FieldWriter fields_;
};

}  // namespace

IPluginCreatorInterface* batched_nms_plugin_creator() {
    static BatchedNmsCreator creator;
    return &creator;
}

}  // namespace frcnn
