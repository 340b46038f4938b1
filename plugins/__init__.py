"""Our TensorRT plugins (src/), their build, host tests and ONNX Runtime reference ops.

The node contract (README.md) that the exporter writes, the plugins register and the
runtimes look for:"""
PLUGIN_DOMAIN = "frcnn.trt"
NMS_PLUGIN = "FrcnnBatchedNMS"
ROI_ALIGN_PLUGIN = "FrcnnMultilevelRoIAlign"
PLUGIN_VERSION = "1"

# What each creator declares in getFieldNames(), written as the ONNX attribute type a node must use:
# TensorRT's ONNX parser makes a PluginField from an attribute by the attribute's ONNX type (INT -> kINT32,
# FLOAT and FLOATS -> kFLOAT32, STRING -> kCHAR), not by the type the creator declares.
PLUGIN_FIELDS = {
    NMS_PLUGIN: {"iou_threshold": "FLOAT", "score_threshold": "FLOAT", "max_output_boxes": "INT"},
    ROI_ALIGN_PLUGIN: {"pooled_size": "INT", "sampling_ratio": "INT", "aligned": "INT", "spatial_scales": "FLOATS",
                       "canonical_scale": "FLOAT", "canonical_level": "INT", "first_level": "INT"},
}
# Attributes the parser itself reads to find the creator (plugin_version default "1", plugin_namespace "").
PARSER_ATTRIBUTES = {"plugin_version": "STRING", "plugin_namespace": "STRING"}
# Input types each plugin accepts (supportsFormatCombination); the last entry repeats (RoIAlign's feature maps,
# 1 to 8 of them, all of one type).
PLUGIN_INPUTS = {NMS_PLUGIN: ("FP32", "FP32", "INT32"), ROI_ALIGN_PLUGIN: ("FP32", "FP32 FP16")}
