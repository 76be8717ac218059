"""ONNX QDQ export of quantized models, onnxruntime parity checks and ORT-format conversion.

    exported = export_onnx(qmodel, "model.onnx")            # learned scales -> QuantizeLinear/DequantizeLinear
    check_parity(exported.path, export_reference(qmodel), batches)  # raises ParityError naming the first diverging node
"""
from vitq.export.markers import export_reference
from vitq.export.onnx_export import ExportedModel, ExportOptions, export_float, export_onnx
from vitq.export.parity import ParityError, ParityReport, check_parity, compare

__all__ = ["ExportOptions", "ExportedModel", "ParityError", "ParityReport", "check_parity", "compare", "export_float",
           "export_onnx", "export_reference"]
