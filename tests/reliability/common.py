"""Helpers of the fault-injection tests."""

from __future__ import annotations

import contextlib
import logging


class LogRecords(logging.Handler):
    """Collects the messages of the records it handles (``messages``, in order)."""

    def __init__(self, level: int):
        super().__init__(level=level)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def text(self) -> str:
        return "\n".join(self.messages)


@contextlib.contextmanager
def captured_log(name: str = "dcinet_d2", level: int = logging.INFO):
    """Messages of logger ``name`` and its children at ``level`` or above, whether or not it
    propagates to the root (Detectron2's ``setup_logger``, which training calls, turns
    propagation off, so pytest's ``caplog`` would miss them)."""
    logger = logging.getLogger(name)
    handler = LogRecords(level)
    old_level = logger.level
    logger.addHandler(handler)
    if old_level == logging.NOTSET or old_level > level:
        logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
