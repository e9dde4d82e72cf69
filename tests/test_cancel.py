"""Issue 18, item 6: a build cancelled with SIGTERM (what a CI cancel sends) removes its staging folder.

The staging folder in the temporary folder holds the ciphertext being written (3 GiB for a 3 GiB model).
SIGINT unwinds and atexit removes it; SIGTERM's default action ends the process without running atexit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import make_ir, run, write_product
from tests.platforms import NEEDS_PROCESS_GROUPS

STAGING = "hatch-ovcrypt-*"


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@NEEDS_PROCESS_GROUPS
@pytest.mark.slow
def test_sigterm_mid_encryption_leaves_no_staging_folder(tmp_path: Path, key_env: dict[str, str]) -> None:
    project = write_product(tmp_path / "p", {"big": "models/big.xml"})
    make_ir(project / "models/big.xml", 384 << 20, width=2048)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", str(project), "--outdir", str(tmp_path / "d")]
    # Its own process group: a CI cancel signals the whole tree (build and the backend process it runs).
    proc = subprocess.Popen(cmd, env={**os.environ, **key_env, "TMPDIR": str(tmp)}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        # Mid-way: the first encrypted file is being written in the staging folder.
        wait_for(lambda: any(tmp.glob(f"{STAGING}/_ovcrypt/models/*")), 300, "the encryption to start")
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        wait_for(lambda: not group_alive(proc.pid), 60, "the backend to exit")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGTERM
    assert not list((tmp_path / "d").glob("*.whl")) if (tmp_path / "d").exists() else True
    assert not list(tmp.glob(STAGING)), f"staging left in the temporary folder: {list(tmp.rglob('*'))}"


CHAINED = """
import os, signal, sys, threading, time
from pathlib import Path
from hatchling.builders.wheel import WheelBuilder

tmp = Path(os.environ["TMPDIR"])
calls = []
def previous(signum, frame):  # the product's own handler: it runs after the staging folder is gone
    calls.append((signum, [p.name for p in tmp.glob("hatch-ovcrypt-*")]))
signal.signal(signal.SIGTERM, previous)

list(WheelBuilder(sys.argv[1]).build(directory=sys.argv[2]))  # an ordinary build puts the handler back
assert signal.getsignal(signal.SIGTERM) is previous, signal.getsignal(signal.SIGTERM)
assert not list(tmp.glob("hatch-ovcrypt-*"))

def cancel():
    while not list(tmp.glob("hatch-ovcrypt-*/_ovcrypt/models/*")):
        time.sleep(0.002)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=cancel, daemon=True).start()
try:
    list(WheelBuilder(sys.argv[1]).build(directory=sys.argv[3]))
except SystemExit:
    pass  # the build fails once its staging folder is gone: the previous handler did not end the process
assert calls == [(signal.SIGTERM, [])], calls
assert signal.getsignal(signal.SIGTERM) is previous
assert not list(tmp.glob("hatch-ovcrypt-*"))
print("chained")
"""


@pytest.mark.slow
def test_sigterm_chains_to_the_previous_handler_and_finalize_restores_it(
    tmp_path: Path, key_env: dict[str, str]
) -> None:
    project = write_product(tmp_path / "p", {"big": "models/big.xml"})
    make_ir(project / "models/big.xml", 256 << 20, width=2048)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = run([sys.executable, "-c", CHAINED, str(project), str(tmp_path / "d1"), str(tmp_path / "d2")],
              env={**key_env, "TMPDIR": str(tmp)})  # fmt: skip
    assert "chained" in out.stdout
