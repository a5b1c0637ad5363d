"""Small utilities of dcinet_d2 that depend on nothing but torch."""

from __future__ import annotations

from .distributed import all_gather_rows, get_rank, get_world_size, is_distributed

__all__ = ["all_gather_rows", "get_rank", "get_world_size", "is_distributed"]
