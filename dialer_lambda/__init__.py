"""dialer_lambda: the Lambda that paces every dial through cps_limiter.

The entry point is `dialer_lambda.handler.handler`; importing this package does not build any
client (``dialer_lambda.handler`` does, at its import). Elsewhere, ``Dialer.from_settings``
builds a dialer of one's own.
"""

from ._calendar import CallingSchedule, CallingWindow
from ._config import Settings
from ._dialer import Dialer, strategy_for
from ._logging import mask_phone
from ._metrics import BatchMetrics
from ._report import BatchResult
from ._tasks import DialTask, InvalidTask, parse_task
from ._version import __version__
from ._worker import DialOutcome, DialStatus, WorkerClient

__all__ = [
    "BatchMetrics",
    "BatchResult",
    "CallingSchedule",
    "CallingWindow",
    "DialOutcome",
    "DialStatus",
    "DialTask",
    "Dialer",
    "InvalidTask",
    "Settings",
    "WorkerClient",
    "__version__",
    "mask_phone",
    "parse_task",
    "strategy_for",
]
