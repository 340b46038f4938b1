"""Our TensorRT plugins (src/), their build, host tests and ONNX Runtime reference ops.

The node contract (README.md) that the exporter writes, the plugins register and the
runtimes look for:"""
PLUGIN_DOMAIN = "frcnn.trt"
NMS_PLUGIN = "FrcnnBatchedNMS"
ROI_ALIGN_PLUGIN = "FrcnnMultilevelRoIAlign"
PLUGIN_VERSION = "1"
