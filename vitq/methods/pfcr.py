"""PFCR: progressive fine-to-coarse reconstruction with the progressive optimization strategy (POS).

Levels 0 (``x + MHSA(LN1(x))`` and ``x + MLP(LN2(x))``), 1, 2, 4, ... blocks up to ``coarsest``, then
optionally the whole model against the float logits; each level starts from the previous one's
parameters and runs the POS stages (docs/reconstruction.md)."""
from vitq.methods.base import Method, register_method
from vitq.recon.schedules import Schedule

register_method(Method("pfcr", "reconstruction: progressive fine-to-coarse with POS (ViT/DeiT/Swin)",
                       schedule=Schedule(progressive=True)))
