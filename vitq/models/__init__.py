"""Float model loading (``loading``), one adapter per model family (``families``), the units each family
declares (``units``) and fake-quant wrapping (``wrap``). Import from the submodules."""
