"""Create (or reuse) a project virtual environment and install this repository into it."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def ensure_venv(name: str, extras: str = "") -> Path:
    """Path of the venv's python, after `pip install -e .[extras]` into it."""
    root = REPO / name
    python = root / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    if not python.exists():
        print(f"creating virtual environment {root}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
    spec = f"{REPO}[{extras}]" if extras else str(REPO)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", spec], check=True)
    return python
