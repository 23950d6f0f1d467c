"""``python -m loadtest.bench._hammer``: one of the client processes of the saturation figure.

It builds every contender of `_contenders` with a client of its own, on the keys the other
processes share, answers ``{"ready": true}``, then answers each ``{"run": NAME, "seconds": S}`` line
on stdin with one JSON line: how many decisions it took back to back in that time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence

from loadtest._probe import CHECK_EVERY

from ._contenders import decisions


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench._hammer")
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        contenders = decisions(args.url, args.prefix, stack)
        for decide in contenders.values():
            decide()  # loads its script, opens its connection
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            request = json.loads(line)
            decide = contenders[request["run"]]
            done = 0
            started = time.perf_counter()
            deadline = started + float(request["seconds"])
            now = started
            while now < deadline:
                for _ in range(CHECK_EVERY):
                    decide()
                done += CHECK_EVERY
                now = time.perf_counter()
            print(json.dumps({"decisions": done, "seconds": now - started}), flush=True)


if __name__ == "__main__":
    main()
