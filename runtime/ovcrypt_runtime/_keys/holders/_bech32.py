"""Bech32 (BIP-173), the encoding of age's recipients (`age1…`) and identities (`AGE-SECRET-KEY-1…`).

Our own 60 lines rather than a dependency: the runtime's dependencies stay openvino, cryptography and
numpy (issue 22), and the codec is small and fixed. Tested against BIP-173's vectors and `age-keygen`.
Plain bech32 (constant 1), not bech32m: age uses the original. Errors never echo the string (an age
identity is a secret key).
"""

from __future__ import annotations

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_VALUES = {ch: i for i, ch in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
MAX_LENGTH = 90  # BIP-173's limit; age's keys are 62 and 74 characters


class Bech32Error(ValueError):
    """Not a valid bech32 string; the message says why, never what the string was."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(ch) >> 5 for ch in hrp] + [0] + [ord(ch) & 31 for ch in hrp]


def _convert_bits(data: list[int] | bytes, from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc, bits, out, maxv = 0, 0, [], (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or (acc << (to_bits - bits)) & maxv:
        raise Bech32Error("has non-zero padding bits")
    return out


def decode_words(text: str) -> tuple[str, list[int]]:
    """(human-readable part in lower case, 5-bit data words without the checksum), or Bech32Error."""
    if len(text) > MAX_LENGTH:
        raise Bech32Error(f"is longer than {MAX_LENGTH} characters")
    if any(not 33 <= ord(ch) <= 126 for ch in text):
        raise Bech32Error("has a character outside ASCII 33..126")
    if text.lower() != text and text.upper() != text:
        raise Bech32Error("mixes upper and lower case")
    text = text.lower()
    sep = text.rfind("1")
    if sep < 1 or sep + 7 > len(text):
        raise Bech32Error("has no human-readable part, separator `1` and 6-character checksum")
    hrp, rest = text[:sep], text[sep + 1 :]
    if any(ch not in _VALUES for ch in rest):
        raise Bech32Error("has a character that bech32 does not use after the separator")
    words = [_VALUES[ch] for ch in rest]
    if _polymod(_hrp_expand(hrp) + words) != 1:
        raise Bech32Error("has a wrong checksum (mistyped or truncated)")
    return hrp, words[:-6]


def decode(text: str, hrp: str) -> bytes:
    """The bytes a bech32 string with human-readable part `hrp` (any case) encodes, or Bech32Error."""
    found, words = decode_words(text)
    if found != hrp.lower():
        raise Bech32Error(f"does not start with {hrp}1")
    return bytes(_convert_bits(words, 5, 8, pad=False))


def encode(hrp: str, data: bytes) -> str:
    """Bech32 of `data` under `hrp`, in lower case (callers upper-case identities, as age does)."""
    hrp = hrp.lower()
    words = _convert_bits(data, 8, 5, pad=True)
    check = _polymod(_hrp_expand(hrp) + words + [0] * 6) ^ 1
    words += [(check >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[w] for w in words)
