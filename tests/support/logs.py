"""The log records of one logger, kept while a block runs."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator


class Records(logging.Handler):
    """The records of one logger, kept while a run lasts."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def texts(self) -> list[str]:
        formatter = logging.Formatter()
        with self._lock_records:
            return [formatter.format(record) for record in self.records]


@contextlib.contextmanager
def captured(logger_name: str) -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
