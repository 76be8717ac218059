"""ONNX QDQ export of quantized models (``onnx_export``, ``qdq``, ``markers``), onnxruntime parity checks
(``parity``) and ORT-format conversion (``ort_format``); choices as data in ``options``.

    exported = export_onnx(qmodel, "model.onnx")            # learned scales -> QuantizeLinear/DequantizeLinear
    check_parity(exported.path, export_reference(qmodel), batches)  # raises ParityError naming the first diverging node

Export reads quantizer state only: it imports nothing from models, recon, baselines or the pipeline.
Import from the submodules.
"""
