"""Datasets (CUHK-SYSU, PRW, synthetic), paired Siamese loading and the person-search mapper."""
from . import datasets  # noqa: F401  (registers the built-in datasets)
from .build import PairedDataset, build_paired_train_loader, flatten_pairs
from .dataset_mapper import PersonSearchDatasetMapper

__all__ = ["PairedDataset", "build_paired_train_loader", "flatten_pairs", "PersonSearchDatasetMapper"]
