"""A stand-in for the Node.js worker that places calls through Asterisk.

`POST /dial` records each dial command and answers as the seed shows. It can be told to
misbehave, per phone number or for a fraction of requests: be slow, fail, hang past any client
timeout, answer 429/503/500, answer garbage, stream a huge body, or drop the connection.

Python: ``with WorkerStub() as stub: ...`` (a free port, a background thread).
Other processes: ``python -m loadtest.worker_stub --port 3000 --fail-rate 0.1`` and the
HTTP control endpoints ``POST /_control``, ``GET /_calls``, ``DELETE /_calls``, ``GET /_health``.
``GET /health`` is the worker's own simulated health (CPU, answer rate) for the adaptive pace.
``--carrier-limit`` puts a carrier behind it that refuses what is over its rolling window
(`carrier`), each refusal reported as the worker must (``HINCRBY <prefix>:adaptive refused 1``).
"""

from .behaviour import Behaviour, Outcome, Setting
from .calls import CallEnds
from .records import Call, StubHandle, StubHealth
from .remote import RemoteStub
from .server import WorkerStub

__all__ = [
    "Behaviour",
    "Call",
    "CallEnds",
    "Outcome",
    "RemoteStub",
    "Setting",
    "StubHandle",
    "StubHealth",
    "WorkerStub",
]
