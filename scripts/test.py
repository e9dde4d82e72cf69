"""Run every check of the project in its own virtual environment: ruff, mypy (strict), then pytest.

python3 scripts/test.py [pytest arguments]
"""

from __future__ import annotations

import subprocess
import sys

from _venv import REPO, ensure_venv


def main() -> int:
    python = str(ensure_venv(".venv-test", "test"))
    steps = [
        [python, "-m", "ruff", "check", "."],
        [python, "-m", "mypy"],
        [python, "-m", "pytest", "-n", "2", "-q", *sys.argv[1:]],
    ]
    for step in steps:
        print("+", " ".join(step[2:]), flush=True)
        code = subprocess.run(step, cwd=REPO, check=False).returncode
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
