"""``python -m loadtest.worker_stub --port 3000 --fail-rate 0.1``; ``--help`` lists the rest."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
