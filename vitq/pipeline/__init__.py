"""The flow, top of the stack: quantize (wrap -> calibrate -> refine -> reconstruct), save / load,
quantize-and-evaluate runs, and the ONNX variants a benchmark compares.

Everything below it (quant, models, recon, baselines, export, bench) knows nothing of this package.
Import from the submodules.
"""
