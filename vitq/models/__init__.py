"""Float model loading, family rules and fake-quant wrapping."""
from vitq.models import mobile_former  # noqa: F401  (registers mobile_former_* with timm)
from vitq.models.families import FAMILIES, Family, family_for
from vitq.models.loading import check_model_name, create_float_model, read_state_dict
from vitq.models.wrap import float_layers_left, iter_quantizers, wrap_model

__all__ = [
    "FAMILIES", "Family", "family_for", "check_model_name", "create_float_model", "read_state_dict",
    "float_layers_left", "iter_quantizers", "wrap_model",
]
