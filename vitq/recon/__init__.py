"""Reconstruction: one engine (``engine.py``) that consumes the unit partition a model family
declares (``vitq.models.units``), schedules as data (``schedules.py``; methods that use them are
declared in ``vitq.methods``), settings and presets as data (``config.py``; torch-free).

Import from the submodules: this package imports nothing itself.
"""
