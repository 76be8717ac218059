"""Calibration and evaluation data: loaders for image folders and CIFAR archives (``datasets``), batching
and splits (``loaders``), model transforms (``transforms``), the data error (``errors``).

Import from the submodules: this package imports nothing itself, so ``calib.errors`` loads without torch.
"""
