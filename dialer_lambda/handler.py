"""The Lambda entry point: ``dialer_lambda.handler.handler(event, context)``.

The dialer is built here once per container, at import (the Lambda init phase), and reused by
every warm invocation: a Redis connection pool, the limiter's registered scripts, a pooled HTTP
client and a thread pool for concurrent dials. A bad setting fails the import, with a message
naming the variable.
"""

from __future__ import annotations

import os
from typing import Any, Final

from ._config import Settings
from ._dialer import Dialer
from ._logging import setup_logging
from ._report import BatchResult

# Inside Lambda the runtime's root handler would print the limiter's records as plain text;
# route them through the JSON handler too.
_LAMBDA_ENV: Final = "AWS_LAMBDA_FUNCTION_NAME"

_SETTINGS: Final = Settings.from_env(os.environ)
setup_logging(
    _SETTINGS.log_level, extra_loggers=("cps_limiter",) if _LAMBDA_ENV in os.environ else ()
)
DIALER: Final = Dialer.from_settings(_SETTINGS)


def handler(event: Any, context: Any = None) -> BatchResult:
    """Process one batch from the pipe; see `dialer_lambda._batch`."""
    return DIALER.process(event, context)
