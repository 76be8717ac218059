"""Q-HyViT (Lee et al.): bridge-block reconstruction for hybrid ViTs with a per-layer choice of
activation scheme and granularity by reconstruction loss. Measured from min-max calibration
(benchmarks/hybrid_table.py), so that is where it starts unless the recipe says otherwise."""
from vitq.methods.base import Method, register_method
from vitq.recon.schedules import BRIDGE, Schedule

register_method(Method("qhyvit", "reconstruction: bridge blocks + scheme/granularity search (hybrid ViTs)",
                       calibration="minmax", schedule=Schedule(progressive=False, granularity=BRIDGE, select_layouts=True)))
