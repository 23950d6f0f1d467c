"""Where the load test and the benchmark probes import their tasks from; see `loadtest.tasks`."""

from loadtest.tasks import BATCH, PHONE_DIGITS, SCENARIOS, SEED_TASK, TaskFactory

__all__ = ["BATCH", "PHONE_DIGITS", "SCENARIOS", "SEED_TASK", "TaskFactory"]
