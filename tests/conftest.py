from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO


@pytest.fixture
def key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def key_env(key: bytes) -> dict[str, str]:
    """The build's environment: the key in $OVCRYPT_KEY, nothing else."""
    return {"OVCRYPT_KEY": key.hex()}


@pytest.fixture(autouse=True)
def _no_ambient_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key left in the developer's environment must not make a test pass."""
    for name in list(os.environ):
        if name.startswith("OVCRYPT_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def plugin_wheel_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """hatch-ovcrypt built afresh as a wheel (pip caches file:// requirements, so never reuse one)."""
    out = tmp_path_factory.mktemp("plugin-wheel")
    src = tmp_path_factory.mktemp("plugin-src") / "hatch-ovcrypt"
    shutil.copytree(
        REPO,
        src,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".venv*", ".git", "dist", "build", "__pycache__", ".*_cache", ".demo", "example_project", "benchmarks"
        ),
    )
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
                   check=True, capture_output=True)  # fmt: skip
    yield out
