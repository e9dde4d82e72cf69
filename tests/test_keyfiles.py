"""Key files as editors and shells write them on every OS: read, or refused with a message that says what is wrong."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from ovcrypt_runtime._errors import KeyFormatError, KeyMissingError
from ovcrypt_runtime._keys.sources import MAX_KEY_FILE_BYTES, keys_from_environment, parse_key, read_key_file

KEY = bytes(range(32))
HEX = KEY.hex()
OTHER = bytes(range(100, 132))
SOURCE = "environment variable OVCRYPT_KEY_FILE"


def key_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "ovcrypt.key"
    path.write_bytes(data)
    return path


def refusal(tmp_path: Path, data: bytes) -> str:
    path = key_file(tmp_path, data)
    with pytest.raises(KeyFormatError) as info:
        read_key_file(path, SOURCE)
    message = str(info.value)
    assert message.startswith(f"{SOURCE}"), message
    assert str(path) in message, message
    for secret in (HEX, HEX.upper(), OTHER.hex()):
        assert not any(secret[i : i + 8] in message for i in range(0, 57, 8)), "the message shows key material"
    return message


ACCEPTED = {
    "hex and a newline (keygen --out, echo >)": f"{HEX}\n".encode(),
    "no newline (printf, editors)": HEX.encode(),
    "CRLF (Windows editors)": f"{HEX}\r\n".encode(),
    "CR (classic Mac)": f"{HEX}\r".encode(),
    "UTF-8 with BOM (Notepad)": f"\ufeff{HEX}\r\n".encode(),
    "UTF-16 LE with BOM (Windows PowerShell 5 `>` / Out-File)": f"\ufeff{HEX}\r\n".encode("utf-16-le"),
    "UTF-16 BE with BOM": f"\ufeff{HEX}\n".encode("utf-16-be"),
    "UTF-32 LE with BOM": f"\ufeff{HEX}\n".encode("utf-32-le"),
    "upper-case hex": f"{HEX.upper()}\n".encode(),
    "spaces, tabs and blank lines around": f"\n\n  \t{HEX} \t \n\n\n".encode(),
    "a no-break space pasted from a web page": f"{HEX}\u00a0\n".encode(),
    "a comment line": f"# acme-vision model key, 2026\n{HEX}\n".encode(),
}


@pytest.mark.parametrize("data", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_key_files_as_written_are_read(tmp_path: Path, data: bytes) -> None:
    assert read_key_file(key_file(tmp_path, data), SOURCE) == [KEY]


def test_several_keys_during_a_rotation(tmp_path: Path) -> None:
    for data in (f"{HEX}\n{OTHER.hex()}\n", f"{HEX},{OTHER.hex()}\r\n", f"# new\r\n{HEX}\r\n# old\r\n{OTHER.hex()}"):
        assert read_key_file(key_file(tmp_path, data.encode()), SOURCE) == [KEY, OTHER]


REFUSED = {
    "empty": (b"", "is empty; it must hold a 64-hex-character key"),
    "only blank lines": (b"\r\n \n\t\n", "is empty"),
    "only a BOM": (b"\xef\xbb\xbf", "is empty"),
    "only a comment": (b"# the key goes here\n", "is empty"),
    "a binary key (openssl rand 32 > key)": (b"\xff" + secrets.token_bytes(31), "holds 32 bytes of binary data, not"),
    "a binary key and a newline": (b"\x00\xff" + secrets.token_bytes(30) + b"\n", "holds 33 bytes of binary data"),
    "UTF-16 without a BOM": (f"{HEX}\r\n".encode("utf-16-le"), "holds NUL bytes: it is binary, or UTF-16 without"),
    "Latin-1 text": (f"{HEX} clé\n".encode("latin-1"), "is not text: the byte at offset 67 is not UTF-8"),
    "a dotenv line": (f"OVCRYPT_KEY={HEX}\n".encode(), "ovcrypt.key is a variable assignment (NAME=value)"),
    "a shell export": (f"export OVCRYPT_KEY='{HEX}'\n".encode(), "is a variable assignment (NAME=value)"),
    "a PowerShell assignment": (f'$env:OVCRYPT_KEY = "{HEX}"\r\n'.encode(), "is a variable assignment"),
    "double quotes": (f'"{HEX}"\n'.encode(), "is in quotes; write the 64 hex characters without them"),
    "typographic quotes": (f"\u201c{HEX}\u201d\n".encode(), "is in quotes"),
    "a 0x prefix": (f"0x{HEX}\n".encode(), "starts with 0x; write the 64 hex characters without it"),
    "a 128-bit key (the OpenSSL recipe's -K)": (f"{HEX[:32]}\n".encode(), "got 32 characters (a 128-bit key"),
    "one character short": (f"{HEX[:-1]}\n".encode(), "is not a key: expected 64 hex characters (32 bytes), got 63"),
    "a zero-width space inside": (
        f"{HEX[:20]}\u200b{HEX[20:]}\n".encode(),
        "got 65 characters including non-hex ones; the first is character 21 (U+200B ZERO WIDTH SPACE)",
    ),
    "base64 instead of hex": (b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", "got 44 characters including non-hex"),
    "a bad second key": (f"{HEX}\n{OTHER.hex()[:-2]}zz\n".encode(), "line 2, is not a key"),
    "a control character": (f"{HEX}\x1b[0m\n".encode(), "holds a control character (U+001B)"),
    "a huge file": (b"0" * (MAX_KEY_FILE_BYTES + 1), f"is larger than {MAX_KEY_FILE_BYTES} bytes"),
}


@pytest.mark.parametrize(("data", "expected"), REFUSED.values(), ids=REFUSED.keys())
def test_bad_key_files_are_refused_with_what_is_wrong(tmp_path: Path, data: bytes, expected: str) -> None:
    message = refusal(tmp_path, data)
    assert expected in message, message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyMissingError, match=r"key file .*/nope does not exist"):
        read_key_file(tmp_path / "nope", SOURCE)
    with pytest.raises(KeyFormatError, match="is a directory, not a file"):
        read_key_file(tmp_path, SOURCE)


def test_key_file_through_the_environment(tmp_path: Path) -> None:
    path = key_file(tmp_path, f"\ufeff{HEX}\r\n".encode("utf-16-le"))
    assert list(keys_from_environment("OVCRYPT_KEY", {"OVCRYPT_KEY_FILE": str(path)})) == [KEY]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{HEX}\r", None),  # $(cat key) of a CRLF file in Git Bash keeps the CR
        (f" {HEX},{OTHER.hex()} ", None),
        (f'"{HEX}"', "environment variable OVCRYPT_KEY is in quotes"),  # docker --env-file keeps quotes
        ("", "environment variable OVCRYPT_KEY is empty"),
        ("zz" * 32, "environment variable OVCRYPT_KEY is not a key: expected 64 hex characters"),
    ],
)
def test_environment_values(value: str, expected: str | None) -> None:
    if expected is None:
        assert next(iter(keys_from_environment("OVCRYPT_KEY", {"OVCRYPT_KEY": value}))) == KEY
        return
    with pytest.raises(KeyFormatError) as info:
        list(keys_from_environment("OVCRYPT_KEY", {"OVCRYPT_KEY": value}))
    assert expected in str(info.value) and HEX not in str(info.value)


def test_set_key_takes_exactly_one_key() -> None:
    assert parse_key(HEX, "set_key()") == parse_key(KEY, "set_key()") == KEY
    with pytest.raises(KeyFormatError, match=r"set_key\(\) holds 2 keys; one key is expected here"):
        parse_key(f"{HEX},{OTHER.hex()}", "set_key()")
