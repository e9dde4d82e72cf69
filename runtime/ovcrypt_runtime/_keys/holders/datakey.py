"""The wrapped data key file (`data-key = "keys/models.datakey"`): the ONE definition (docs/FORMAT.md §6).

JSON, UTF-8, sorted keys, committed in the product's repository:

    {"format": "hatch-ovcrypt-datakey/1", "key_id": "<32 hex>", "product": "<name>",
     "holders": [{"uri": "age1…", "stanza": {"age": "-----BEGIN AGE ENCRYPTED FILE-----…"}}, …]}

It holds the data key (DEK) only wrapped, once per holder; without a holder it is useless. `product` names
the product in the holders' contexts (AWS KMS's encryption context). Unknown fields are refused, like
the manifest's: a file this reader does not fully understand is never half-used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ..._errors import KeyFormatError, KeyMissingError
from ..._format.atomic import atomic_writer
from ..._format.manifest import HolderEntry, Invalid, UnknownHolderError, is_product_name, parse_holders
from ..._format.spec import KEY_ID_SIZE

FORMAT = "hatch-ovcrypt-datakey/1"
MAX_FILE_BYTES = 1 << 20
_FIELDS = frozenset({"format", "key_id", "product", "holders"})
_KEY_ID = re.compile(rf"[0-9a-f]{{{2 * KEY_ID_SIZE}}}\Z")


@dataclass(frozen=True)
class DataKey:
    """A wrapped data key: its key id (public), the product it is for, and one stanza per holder."""

    key_id: str
    product: str
    holders: tuple[HolderEntry, ...]

    def context(self) -> dict[str, str]:
        """What every holder binds the DEK to where it can (AWS KMS's encryption context)."""
        return {"product": self.product, "key_id": self.key_id}

    def uris(self) -> list[str]:
        return [holder.uri for holder in self.holders]

    def with_holder(self, entry: HolderEntry) -> DataKey:
        return replace(self, holders=(*self.holders, entry))

    def without_holder(self, uri: str) -> DataKey:
        return replace(self, holders=tuple(h for h in self.holders if h.uri != uri))

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "key_id": self.key_id,
            "product": self.product,
            "holders": [holder.to_json() for holder in self.holders],
        }
        return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def parse_datakey(data: bytes, where: str) -> DataKey:
    """Parse and validate a wrapped data key file's bytes; KeyFormatError (one line, naming `where`)."""
    if len(data) > MAX_FILE_BYTES:
        raise KeyFormatError(f"{where} is larger than {MAX_FILE_BYTES} bytes: it is not a wrapped data key file")
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise KeyFormatError(
            f"{where} is not valid JSON: it is not a wrapped data key file (make one with `hatch-ovcrypt datakey new`)"
        ) from None
    try:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise Invalid(f"`format` is not {FORMAT}")
        extra = sorted(set(doc) - _FIELDS)
        if extra:
            raise Invalid(f"unknown field {extra[0]!r}")
        if not (isinstance(doc.get("key_id"), str) and _KEY_ID.match(doc["key_id"])):
            raise Invalid(f"`key_id` must be {2 * KEY_ID_SIZE} lower-case hex characters")
        if not (isinstance(doc.get("product"), str) and is_product_name(doc["product"])):
            raise Invalid("`product` must be a project name (letters, digits, `.`, `_`, `-`)")
        holders = parse_holders(doc.get("holders"))
    except UnknownHolderError as exc:
        raise KeyFormatError(f"{where}: {exc}") from None
    except Invalid as exc:
        raise KeyFormatError(f"{where} is not a valid wrapped data key file: {exc}") from None
    return DataKey(doc["key_id"], doc["product"], holders)


def read_datakey(path: Path, where: str | None = None) -> DataKey:
    """Read and validate a wrapped data key file; KeyMissingError if it does not exist, KeyFormatError else."""
    where = where or f"wrapped data key file {path}"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyMissingError(f"{where} does not exist (make one with `hatch-ovcrypt datakey new`)") from None
    except IsADirectoryError:
        raise KeyFormatError(f"{where} is a directory, not a file") from None
    except OSError as exc:
        raise KeyFormatError(f"{where} cannot be read: {exc.strerror or type(exc).__name__}") from None
    return parse_datakey(data, where)


def write_datakey(path: Path, datakey: DataKey) -> None:
    """Write the file whole or not at all (atomic rename)."""
    data = datakey.to_json()
    parse_datakey(data, str(path))  # never write a file this reader would refuse
    with atomic_writer(path) as f:
        f.write(data)


def entry(uri: str, stanza: Mapping[str, str]) -> HolderEntry:
    return HolderEntry(uri, dict(stanza))
