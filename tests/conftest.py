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
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip_wheel, "-w", str(out), str(src)], check=True, capture_output=True)
    yield out


# --- suite counts (issue 5: "the suite states its counts") ------------------------------------
# A test reports a count with the `suite_count` fixture: suite_count("tamper positions tried", 612).
# Counts travel in user_properties, so they survive pytest-xdist, and are summed at the end of the run.

from collections.abc import Callable  # noqa: E402 - appended section, kept self-contained
from typing import Any  # noqa: E402

_COUNT_PREFIX = "ovcrypt-count:"
_suite_counts: dict[str, int] = {}


@pytest.fixture
def suite_count(request: pytest.FixtureRequest) -> Callable[[str, int], None]:
    def record(label: str, n: int) -> None:
        request.node.user_properties.append((_COUNT_PREFIX + label, n))

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "teardown":  # the teardown report carries every property the test recorded
        return
    for name, value in report.user_properties:
        if isinstance(name, str) and name.startswith(_COUNT_PREFIX) and isinstance(value, int):
            label = name[len(_COUNT_PREFIX) :]
            _suite_counts[label] = _suite_counts.get(label, 0) + value


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _suite_counts:
        terminalreporter.section("hatch-ovcrypt suite counts")
        for label, n in sorted(_suite_counts.items()):
            terminalreporter.write_line(f"{label}: {n}")


# --- a spy on decryption ------------------------------------------------------------------------


@pytest.fixture
def segment_decryptions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The index of every segment decrypted while the test runs (the real decryption still happens): what a
    test checks to prove that an error came before anything was decrypted."""
    from ovcrypt_runtime._format.spec import SegmentCipher

    decrypted: list[int] = []
    original = SegmentCipher.decrypt_segment

    def spy(self: SegmentCipher, index: int, buf: memoryview, tag: bytes) -> None:
        decrypted.append(index)
        original(self, index, buf, tag)

    monkeypatch.setattr(SegmentCipher, "decrypt_segment", spy)
    return decrypted


# Key servers (issue 22): session fixtures openbao, softhsm, moto_kms, for every test file. Simulated platforms
# (issue 21; tests/platforms.py): a test that uses `simulated_platform` (a module's
# `pytestmark = pytest.mark.usefixtures("simulated_platform")`) runs once per platform: Linux as it is, macOS and
# Windows with what they lack hidden.
from tests.platforms import PLATFORMS, simulate  # noqa: E402
from tests.servers import moto_kms, openbao, softhsm  # noqa: E402, F401


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "simulated_platform" in metafunc.fixturenames:
        metafunc.parametrize("simulated_platform", PLATFORMS, indirect=True)


@pytest.fixture
def simulated_platform(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The platform this test runs as (sys.platform's value), simulated until the test ends."""
    platform: str = getattr(request, "param", sys.platform)
    simulate(platform, monkeypatch, tmp_path_factory.getbasetemp())
    return platform
