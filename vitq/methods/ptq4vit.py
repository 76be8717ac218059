"""PTQ4ViT (Yuan et al., 2022): twin-uniform quantizers for softmax and GELU outputs and a
Hessian-guided scale search (``vitq.baselines.ptq4vit``)."""
from vitq.methods.base import Method, lazy, register_method

register_method(Method("ptq4vit", "baseline: twin-uniform softmax/GELU + Hessian-guided search (PTQ4ViT)",
                       calibration="minmax",
                       format_settings={"softmax_quantizer": "twin_uniform", "post_act_quantizer": "twin_uniform"},
                       refine=lazy("vitq.baselines.ptq4vit:refine")))
