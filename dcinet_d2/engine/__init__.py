"""Training glue: the trainer, the CPU/GPU launcher and the command-line entry."""

from __future__ import annotations

from .launch import launch
from .trainer import PersonSearchTrainer

__all__ = ["launch", "PersonSearchTrainer"]
