"""FQ-ViT (Lin et al., 2022): power-of-two factors for LayerNorm inputs and a log2 softmax quantizer,
min-max otherwise (``vitq.baselines.fqvit``)."""
from vitq.methods.base import Method, lazy, register_method

register_method(Method("fqvit", "baseline: power-of-two LayerNorm factors + log2 softmax (FQ-ViT)", calibration="minmax",
                       format_settings={"softmax_quantizer": "log2", "ln_power_of_two": True},
                       refine=lazy("vitq.baselines.fqvit:refine")))
