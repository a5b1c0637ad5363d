"""Readers of CUHK-SYSU and PRW in their official layouts, and their registration."""

from __future__ import annotations

from .builtin import datasets_root, register_all, register_cuhk_sysu, register_prw
from .common import DatasetFormatError, DatasetNotFoundError

register_all()

__all__ = [
    "register_cuhk_sysu",
    "register_prw",
    "datasets_root",
    "DatasetFormatError",
    "DatasetNotFoundError",
]
