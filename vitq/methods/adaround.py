"""AdaRound (Nagel et al., 2020): layer-wise rounding reconstruction; a layer feeding an activation
fits ``act(W x)``, as the paper does."""
from vitq.methods.base import Method, register_method
from vitq.recon.schedules import LAYER, Schedule

register_method(Method("adaround", "reconstruction: layer-wise (AdaRound)", schedule=Schedule(progressive=False, granularity=LAYER)))
