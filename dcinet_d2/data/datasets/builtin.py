"""Registration of CUHK-SYSU and PRW (real and synthetic) in Detectron2's catalogs.

Built-in names, rooted at ``$DETECTRON2_DATASETS`` (default ``datasets/``, relative to the working
directory as in Detectron2):

- ``cuhk_sysu_train``, ``cuhk_sysu_test``: ``$DETECTRON2_DATASETS/CUHK-SYSU``
- ``prw_train``, ``prw_test``: ``$DETECTRON2_DATASETS/PRW``
- ``synthetic_cuhk_sysu_{train,test}``, ``synthetic_prw_{train,test}``: the same under ``synthetic/``
- ``synthetic_pretrain_cuhk_sysu_{train,test}``: ``synthetic_pretrain/CUHK-SYSU``, a synthetic
  CUHK-SYSU drawn with another seed (identities disjoint from ``synthetic/``), on which
  ``tools/pretrain_backbone.py`` pre-trains the small configs' ResNet
- ``synthetic_alt_cuhk_sysu_{train,test}``: ``synthetic_alt/CUHK-SYSU``, rendered differently

Registration touches no file: dicts are read on ``DatasetCatalog.get``, and the metadata entry
``num_train_ids`` (C) is computed on first access.
"""
from __future__ import annotations

import os
from typing import Callable

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.catalog import Metadata

from . import cuhk_sysu, prw

__all__ = ["register_cuhk_sysu", "register_prw", "register_all", "datasets_root"]


class _LazyMetadata(Metadata):
    """Metadata whose ``num_train_ids`` is computed from the files on first access."""

    def __getattr__(self, key):
        compute = _LAZY.get((self.name, key))
        if compute is not None:
            value = compute()
            self.__dict__[key] = value  # not setattr: Metadata.__setattr__ reads the old value first
            return value
        return super().__getattr__(key)


_LAZY: dict[tuple[str, str], Callable[[], object]] = {}


def _register(name: str, loader: Callable[[], list], **metadata) -> None:
    lazy = {k: v for k, v in metadata.items() if callable(v)}
    plain = {k: v for k, v in metadata.items() if not callable(v)}
    DatasetCatalog.register(name, loader)
    if name not in MetadataCatalog:
        MetadataCatalog[name] = _LazyMetadata(name=name)
    MetadataCatalog.get(name).set(
        evaluator_type="person_search", thing_classes=["person"], **plain
    )
    for key, compute in lazy.items():
        _LAZY[(name, key)] = compute


def register_cuhk_sysu(name_prefix: str, root: str) -> None:
    """Register ``<name_prefix>_train`` and ``<name_prefix>_test`` for a CUHK-SYSU folder."""
    _register(f"{name_prefix}_train", lambda: cuhk_sysu.load_cuhk_sysu(root, "train"),
              protocol="cuhk_sysu", root=root, split="train",
              num_train_ids=lambda: cuhk_sysu.num_train_identities(root))
    _register(f"{name_prefix}_test", lambda: cuhk_sysu.load_cuhk_sysu(root, "test"),
              protocol="cuhk_sysu", root=root, split="test")


def register_prw(name_prefix: str, root: str) -> None:
    """Register ``<name_prefix>_train`` and ``<name_prefix>_test`` for a PRW folder."""
    _register(f"{name_prefix}_train", lambda: prw.load_prw(root, "train"),
              protocol="prw", root=root, split="train",
              num_train_ids=lambda: prw.num_train_identities(root))
    _register(f"{name_prefix}_test", lambda: prw.load_prw(root, "test"),
              protocol="prw", root=root, split="test")


def datasets_root() -> str:
    return os.environ.get("DETECTRON2_DATASETS", "datasets")


def register_all(root: str | None = None) -> None:
    root = datasets_root() if root is None else root
    register_cuhk_sysu("cuhk_sysu", os.path.join(root, "CUHK-SYSU"))
    register_prw("prw", os.path.join(root, "PRW"))
    register_cuhk_sysu("synthetic_cuhk_sysu", os.path.join(root, "synthetic", "CUHK-SYSU"))
    register_prw("synthetic_prw", os.path.join(root, "synthetic", "PRW"))
    register_cuhk_sysu(
        "synthetic_pretrain_cuhk_sysu", os.path.join(root, "synthetic_pretrain", "CUHK-SYSU")
    )
    register_cuhk_sysu(
        "synthetic_alt_cuhk_sysu", os.path.join(root, "synthetic_alt", "CUHK-SYSU"))
