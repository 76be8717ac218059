"""Calibration and evaluation data: loaders for image folders and CIFAR archives, model transforms,
deterministic non-overlapping splits."""
from calib.datasets import ImageDataset, Sample, open_split, scan
from calib.loaders import images_only, load_batches, load_splits
from calib.transforms import eval_transform

__all__ = ["ImageDataset", "Sample", "open_split", "scan", "eval_transform", "images_only", "load_batches", "load_splits"]
