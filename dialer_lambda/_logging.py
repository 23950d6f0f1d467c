"""JSON log lines on stdout, with every phone number masked wherever it appears.

Lambda ships stdout to CloudWatch Logs line by line, so one JSON object per line is what makes the
logs queryable (Logs Insights parses the fields). Masking is done in the formatter, not at each
call site, so a phone number that slips into a message, an exception or an ``extra`` field is
still masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

LOGGER_NAME = "dialer_lambda"
_LOGGER = logging.getLogger(LOGGER_NAME)

# The shared decision: keep the country-code prefix and the last two digits. A fixed run of stars
# (not one per hidden digit) also hides how long the number is.
MASK_KEEP_PREFIX = 3
MASK_KEEP_SUFFIX = 2
MASK_FILL = "*******"
MIN_MASKABLE_LENGTH = MASK_KEEP_PREFIX + MASK_KEEP_SUFFIX + 1

# What looks like a phone number in free text: a "+" and 7 or more digits (separators allowed),
# or a bare run of 9 to 15 digits. The look-arounds keep identifiers such as the epoch
# milliseconds at the end of a callId ("...-1705318245000") and decimals ("0.123456789") intact.
_PLUS_NUMBER = r"\+\d(?:[\s().-]{0,2}\d){6,16}"
_BARE_NUMBER = r"(?<![\w.:+-])\d(?:[()-]?\d){8,16}(?![\w:])"
PHONE_PATTERN = re.compile(f"{_PLUS_NUMBER}|{_BARE_NUMBER}")

# Fields that are never phone numbers but may look like one: Lambda's request id is a UUID whose
# first groups can be all digits ("54512345-1273-..."), and masking it breaks finding an
# invocation's lines.
_NOT_PHONES = frozenset({"requestId"})

# One lock for everything written to stdout (log records and EMF lines), so that lines from
# concurrent invocations never interleave.
_STDOUT_LOCK = threading.RLock()

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged.
_RESERVED = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None)).keys() | {"message", "asctime"}
)


def mask_phone(phone: str) -> str:
    """Mask a phone number for logs: ``"+972501234567"`` becomes ``"+97*******67"``."""
    if len(phone) < MIN_MASKABLE_LENGTH:
        return MASK_FILL
    return f"{phone[:MASK_KEEP_PREFIX]}{MASK_FILL}{phone[-MASK_KEEP_SUFFIX:]}"


def mask_text(text: str) -> str:
    """Mask every phone-number-like run in free text."""
    return PHONE_PATTERN.sub(lambda match: mask_phone(match.group(0)), text)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {str(key): _masked(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return mask_text(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        masked = {k: v if k in _NOT_PHONES else _masked(v) for k, v in entry.items()}
        # default=str: an unexpected extra must never make a log call raise.
        return json.dumps(masked, default=str, separators=(",", ":"))


class StdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stdout`` is at the time of the record.

    A handler bound to the stream object of import time would keep writing to a stream that test
    capture (or a runtime) has since replaced.
    """

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def createLock(self) -> None:
        self.lock = _STDOUT_LOCK

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        """Ignore assignment: the stream is always the current ``sys.stdout``."""


def write_line(text: str) -> None:
    """Write one line to stdout as it is (for EMF records, which must not be wrapped)."""
    with _STDOUT_LOCK:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def log_event(
    level: int, event: str, message: str, *, exc_info: bool = False, **fields: Any
) -> None:
    """One line on the package's logger: ``event`` names it for queries, ``fields`` go with it."""
    _LOGGER.log(level, message, exc_info=exc_info, extra={"event": event, **fields})


def setup_logging(level: str, *, extra_loggers: Iterable[str] = ()) -> None:
    """Route the package's logger (and ``extra_loggers``) to JSON lines on stdout, once.

    ``propagate`` is turned off for these loggers so that the Lambda runtime's plain-text handler
    on the root logger does not print every record a second time.
    """
    for name in (LOGGER_NAME, *extra_loggers):
        logger = logging.getLogger(name)
        if not any(isinstance(handler, StdoutHandler) for handler in logger.handlers):
            handler = StdoutHandler()
            handler.setFormatter(JsonFormatter())
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
