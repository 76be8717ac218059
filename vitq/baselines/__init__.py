"""Published PTQ baselines on vitq's own wrapping, so comparisons with vitq's methods are fair.

The algorithms live here; each is declared as a method in ``vitq.methods`` (its calibration start,
the number-format settings it implies, and ``refine`` pointing at the function below), which
``vitq.pipeline.quantize`` runs after calibration and LayerNorm folding:

* ``easyquant``: layer-wise alternating scale search maximising output cosine similarity;
* ``fqvit``: power-of-two LayerNorm factors and log2 softmax (min-max otherwise);
* ``ptq4vit``: twin-uniform softmax/GELU quantizers and Hessian-guided scale search.

See docs/baselines.md for where each one deviates from its paper. Import from the submodules.
"""
