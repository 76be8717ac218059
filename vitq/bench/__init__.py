"""onnxruntime benchmarks over ONNX files: targets (cpu, mobile, cuda, tensorrt), interleaved latency,
accuracy, op profiles and reports. Import from the submodules."""
