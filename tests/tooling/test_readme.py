"""The README's examples run as written."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def opening_commands() -> list[str]:
    """The commands of the README's first shell block, without their comments."""
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert first_block is not None
    lines = (line.split("#")[0].strip() for line in first_block.group(1).splitlines())
    return [line for line in lines if line]


@pytest.mark.parametrize("command", opening_commands())
def test_each_opening_command_is_a_make_target_that_exists(command: str) -> None:
    program, *targets = shlex.split(command)
    assert (program, len(targets)) == ("make", 1)
    # -n only prints what the target would run: nothing is installed or started.
    planned = subprocess.run(
        ["make", "-n", *targets], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert planned.returncode == 0, planned.stderr


def test_usage_example_runs() -> None:
    (example, *_) = python_blocks()
    exec(compile(example, str(README), "exec"), {})
