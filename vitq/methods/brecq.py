"""BRECQ (Li et al., 2021): block-wise reconstruction, one level of single blocks, all parameters jointly,
with as many iterations as PFCR spends over its levels."""
from vitq.methods.base import Method, register_method
from vitq.recon.schedules import Schedule

register_method(Method("brecq", "reconstruction: block-wise (BRECQ)", schedule=Schedule(progressive=False, granularity=1)))
