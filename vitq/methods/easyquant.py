"""EasyQuant (Wu et al., 2020): layer-wise alternating search of weight and activation scales that
maximises the cosine similarity of each layer's output with the float one (``vitq.baselines.easyquant``)."""
from vitq.methods.base import Method, lazy, register_method

register_method(Method("easyquant", "baseline: cosine-similarity scale search (EasyQuant)", calibration="minmax",
                       refine=lazy("vitq.baselines.easyquant:refine")))
