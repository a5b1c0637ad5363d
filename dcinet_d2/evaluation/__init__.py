"""Person-search evaluation: the community protocol (CUHK-SYSU, PRW), vectorised, as a Detectron2
evaluator (:class:`PersonSearchEvaluator`) and as a command (``python -m dcinet_d2.evaluation``).

- :mod:`.protocol`: the protocol as pure numpy functions (vectorised).
- ``tests/evaluation/reference.py`` (outside the package): the same protocol as plain loops
  (independent baseline for tests and benchmark).
- :mod:`.galleries`: what each query searches and where its targets are.
- :mod:`.cbgm`: optional CBGM re-scoring (SeqNet).
- :mod:`.predictions`: the predictions file format, validation, save and load.
- :mod:`.evaluator`: ``PersonSearchEvaluator`` and ``evaluate_person_search``.
"""

from __future__ import annotations

from .evaluator import PersonSearchEvaluator, evaluate_person_search, format_results_table
from .predictions import (
    PredictionsFormatError,
    load_predictions,
    save_predictions,
    validate_predictions,
)

__all__ = [
    "PersonSearchEvaluator",
    "evaluate_person_search",
    "format_results_table",
    "PredictionsFormatError",
    "load_predictions",
    "save_predictions",
    "validate_predictions",
]
