"""Datasets (CUHK-SYSU, PRW, synthetic), paired Siamese loading and the person-search mapper."""

from __future__ import annotations

from . import datasets  # noqa: F401  (registers the built-in datasets)
from .build import (
    PairedDataset,
    build_paired_train_loader,
    check_test_images,
    flatten_pairs,
    training_dataset_dicts,
)
from .dataset_mapper import PersonSearchDatasetMapper, UnreadableImageError

__all__ = [
    "PairedDataset",
    "build_paired_train_loader",
    "flatten_pairs",
    "PersonSearchDatasetMapper",
    "UnreadableImageError",
    "training_dataset_dicts",
    "check_test_images",
]
