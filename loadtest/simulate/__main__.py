"""``python -m loadtest.simulate`` (``make demo``); ``--help`` lists the options."""

from .run import main

if __name__ == "__main__":
    raise SystemExit(0 if main().ok else 1)
