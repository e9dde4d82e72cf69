"""`datakey`: make and manage a wrapped data key file (issue 22) without re-encrypting any model.

    hatch-ovcrypt datakey new --holder URI [--holder URI …] --out FILE [--product NAME]
    hatch-ovcrypt datakey add-holder FILE URI        (needs one holder that can unwrap here, now)
    hatch-ovcrypt datakey remove-holder FILE URI
    hatch-ovcrypt datakey rewrap FILE                 (after a KEK rotation: transit rewrap; age: no change)
    hatch-ovcrypt datakey show FILE|WHEEL|FOLDER      (holders and key id, never the key)

The data key (DEK) exists only in this process's memory: nothing prints it, no file holds it unwrapped,
and no traceback of an error keeps it in a frame's locals (forget_keys). Every write is atomic.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import zipfile
from pathlib import Path

from ovcrypt_runtime._format.layout import MANIFEST_NAME
from ovcrypt_runtime._format.manifest import HolderEntry, holder_scheme, is_product_name, parse_manifest
from ovcrypt_runtime._format.spec import KEY_SIZE, forget_keys, key_id
from ovcrypt_runtime._keys.holders import display_uri, holder_for, unwrap_first
from ovcrypt_runtime._keys.holders.datakey import DataKey, entry, parse_datakey, read_datakey, write_datakey

from .common import DEFAULT_KEY_ENV, EXIT_OK, CheckFailed, UsageError, VerbFactory

if sys.version_info >= (3, 11):
    import tomllib
else:  # hatchling depends on tomli there
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

_KEY_ENV_HELP = (
    f"the product's key-env (default {DEFAULT_KEY_ENV}): an age identity is read from NAME_AGE_IDENTITY "
    "or the file NAME_AGE_IDENTITY_FILE names"
)


@forget_keys
def cmd_new(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists():
        raise UsageError(f"{out} exists; refusing to replace a wrapped data key (the models built under it need it)")
    uris = _unique(args.holder)
    product = args.product or _project_name(Path.cwd())
    if not is_product_name(product):
        raise UsageError(f"--product {product!r} is not a project name (letters, digits, `.`, `_`, `-`)")
    holders = [holder_for(uri, args.key_env) for uri in uris]  # every URI checked before a key exists
    dek = secrets.token_bytes(KEY_SIZE)
    kid = key_id(dek).hex()
    context = {"product": product, "key_id": kid}
    datakey = DataKey(kid, product, tuple(entry(h.uri, h.wrap(dek, context)) for h in holders))
    del dek
    write_datakey(out, datakey)
    print(f"wrote {out}: a new data key, key id {kid}, for {len(uris)} holder(s): {', '.join(map(display_uri, uris))}")
    return EXIT_OK


@forget_keys
def cmd_add_holder(args: argparse.Namespace) -> int:
    path = Path(args.file)
    datakey = read_datakey(path)
    if args.uri in datakey.uris():
        raise UsageError(f"{path} already has holder {display_uri(args.uri)}")
    holder = holder_for(args.uri, args.key_env)  # a bad URI fails before anything is unwrapped
    dek = unwrap_first(datakey.holders, datakey.context(), args.key_env, str(path))
    stanza = holder.wrap(dek, datakey.context())
    del dek
    write_datakey(path, datakey.with_holder(entry(holder.uri, stanza)))
    print(f"added holder {display_uri(holder.uri)} to {path} (key id {datakey.key_id})")
    return EXIT_OK


def cmd_remove_holder(args: argparse.Namespace) -> int:
    path = Path(args.file)
    datakey = read_datakey(path)
    if args.uri not in datakey.uris():
        raise UsageError(f"{path} has no holder {display_uri(args.uri)} (holders: {', '.join(datakey.uris())})")
    if len(datakey.holders) == 1:
        raise UsageError(f"{display_uri(args.uri)} is the only holder of {path}; without one the file is useless")
    write_datakey(path, datakey.without_holder(args.uri))
    print(
        f"removed holder {display_uri(args.uri)} from {path}; releases built before still carry it "
        "(the data key itself is unchanged: to cut a holder off for good, make a new data key)"
    )
    return EXIT_OK


def cmd_rewrap(args: argparse.Namespace) -> int:
    path = Path(args.file)
    datakey = read_datakey(path)
    holders = []
    for old in datakey.holders:  # all, then one write: a failure leaves the file as it was
        stanza = holder_for(old.uri, args.key_env).rewrap(old.stanza, datakey.context())
        holders.append(entry(old.uri, stanza))
    changed = [h.uri for h, old in zip(holders, datakey.holders, strict=True) if h.stanza != old.stanza]
    if changed:
        write_datakey(path, DataKey(datakey.key_id, datakey.product, tuple(holders)))
    print(f"rewrapped {path}: {len(changed)} of {len(holders)} holder(s) changed ({', '.join(changed) or 'none'})")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    where, key_id_hex, product, holders = _load_for_show(Path(args.path))
    print(f"{where}")
    print(f"  key id  {key_id_hex}")
    if product:
        print(f"  product {product}")
    if not holders:
        print("  holders none (the key comes from the key-env variable, its _FILE or the key provider)")
    for holder in holders:
        print(f"  holder  {holder_scheme(holder.uri):<8}{display_uri(holder.uri)}")
    return EXIT_OK


def _load_for_show(path: Path) -> tuple[str, str, str | None, tuple[HolderEntry, ...]]:
    if path.is_dir():
        for candidate in (path / MANIFEST_NAME, path / "_ovcrypt" / MANIFEST_NAME):
            if candidate.is_file():
                manifest = parse_manifest(candidate.read_bytes())
                return str(candidate), manifest.key_id, manifest.product, manifest.holders
        raise UsageError(f"{path} is a folder without {MANIFEST_NAME} (give a `_ovcrypt` folder or its package)")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as wheel:
            names = [n for n in wheel.namelist() if n.endswith(f"/_ovcrypt/{MANIFEST_NAME}")]
            if len(names) != 1:
                raise CheckFailed(f"{path} holds {len(names)} `_ovcrypt/{MANIFEST_NAME}` files, not one")
            manifest = parse_manifest(wheel.read(names[0]))
        return f"{path}:{names[0]}", manifest.key_id, manifest.product, manifest.holders
    if not path.is_file():
        raise UsageError(f"{path} does not exist")
    datakey = parse_datakey(path.read_bytes()[: 2 << 20], f"wrapped data key file {path}")
    return str(path), datakey.key_id, datakey.product, datakey.holders


def _unique(uris: list[str]) -> list[str]:
    repeated = sorted({uri for uri in uris if uris.count(uri) > 1})
    if repeated:
        raise UsageError(f"--holder {display_uri(repeated[0])} is given twice")
    return uris


def _project_name(folder: Path) -> str:
    """[project].name of ./pyproject.toml: the product's name in the holders' contexts."""
    try:
        name = tomllib.loads((folder / "pyproject.toml").read_text("utf-8"))["project"]["name"]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError):
        raise UsageError("pass --product NAME (no pyproject.toml with [project].name in this folder)") from None
    if not isinstance(name, str):
        raise UsageError("pass --product NAME ([project].name in pyproject.toml is not a string)")
    return name


def register(make: VerbFactory) -> None:
    parent = make("datakey", lambda _args: EXIT_OK, "make and manage a wrapped data key file and its key holders")
    actions = parent.add_subparsers(dest="action", required=True, metavar="ACTION",
                                    help="new, add-holder, remove-holder, rewrap or show")  # fmt: skip

    def action(name: str, func: object, text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=text, description=text, allow_abbrev=False)
        sub.set_defaults(func=func)
        return sub

    sub = action("new", cmd_new, "make a new data key, wrapped for each holder; prints nothing secret")
    sub.add_argument("--holder", action="append", required=True, metavar="URI",
                     help="age1… (an age recipient), transit:KEY, pkcs11:… or awskms:ARN; repeatable")  # fmt: skip
    sub.add_argument("--out", required=True, metavar="FILE", help="the wrapped data key file to write (new)")
    sub.add_argument("--product", metavar="NAME", help="the product's name (default: ./pyproject.toml's name)")
    sub.add_argument("--key-env", metavar="NAME", default=DEFAULT_KEY_ENV, help=_KEY_ENV_HELP)
    sub = action("add-holder", cmd_add_holder, "wrap the data key for one more holder (one holder must unwrap it here)")
    sub.add_argument("file", metavar="FILE", help="the wrapped data key file (changed in place, atomically)")
    sub.add_argument("uri", metavar="URI", help="the holder: age1…, transit:KEY, pkcs11:… or awskms:ARN")
    sub.add_argument("--key-env", metavar="NAME", default=DEFAULT_KEY_ENV, help=_KEY_ENV_HELP)
    sub = action("remove-holder", cmd_remove_holder, "remove one holder's wrapped copy of the data key")
    sub.add_argument("file", metavar="FILE", help="the wrapped data key file (changed in place, atomically)")
    sub.add_argument("uri", metavar="URI", help="the holder: age1…, transit:KEY, pkcs11:… or awskms:ARN")
    sub = action("rewrap", cmd_rewrap, "re-wrap under each holder's current key (after a KEK rotation)")
    sub.add_argument("file", metavar="FILE", help="the wrapped data key file (changed in place, atomically)")
    sub.add_argument("--key-env", metavar="NAME", default=DEFAULT_KEY_ENV, help=_KEY_ENV_HELP)
    sub = action("show", cmd_show, "list the holders and the key id of a wrapped data key file, a wheel or a folder")
    sub.add_argument("path", metavar="FILE|WHEEL|FOLDER", help="a data key file, a wheel or an `_ovcrypt` folder")
