"""One adapter file per model family; importing this package registers them all.

A new family is one more file here (imported below) or a ``register_family`` call in the user's own
code before quantizing.
"""
from vitq.models.families import efficientformer, mobile_former, mobilevit, swin, vit  # noqa: F401  (registration)
from vitq.models.families.base import (
    FAMILIES,
    Family,
    FoldPairs,
    family_for,
    mlp_branches,
    partition_for,
    plain_transformer_families,
    register_family,
)

__all__ = ["FAMILIES", "Family", "FoldPairs", "family_for", "mlp_branches",
           "partition_for", "plain_transformer_families", "register_family"]
