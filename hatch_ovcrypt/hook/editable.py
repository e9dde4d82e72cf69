"""Editable installs (`pip install -e`): how `<package>._ovcrypt` is found without touching the source tree.

An editable install puts the source folder on sys.path, so `<package>` is imported from the source
tree, where no `_ovcrypt` folder exists (and none is written: the tree stays clean). The editable
wheel instead installs the encrypted folder under a private name in site-packages, with a tiny
finder, loaded by a .pth file at start-up, that maps exactly `<package>._ovcrypt` to it. After the
models change, run `pip install -e .` again to re-encrypt them.
"""

from __future__ import annotations

from pathlib import Path

from .writer import GENERATED_HEADER

_FINDER = '''"""Editable install of {package}: imports `{module}` from the encrypted copy installed beside this file."""

import importlib.util
import os
import sys

_NAME = "{module}"
_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "{folder}")


class OvcryptEditableFinder:
    name = _NAME

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        if fullname != _NAME:
            return None
        init = os.path.join(_DIR, "__init__.py")
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[_DIR])


if not any(getattr(finder, "name", None) == _NAME for finder in sys.meta_path):
    sys.meta_path.insert(0, OvcryptEditableFinder())
'''


def private_folder(package: str) -> str:
    return f"_{package.replace('.', '_')}_ovcrypt"


def render_editable_loader(package: str, staging: Path) -> dict[str, str]:
    """Write the finder and its .pth into `staging`; return {source path: path in the wheel}."""
    folder = private_folder(package)
    finder = staging / f"{folder}_finder.py"
    finder.write_text(GENERATED_HEADER + _FINDER.format(package=package, module=f"{package}._ovcrypt", folder=folder))
    pth = staging / f"{folder}.pth"
    pth.write_text(f"import {folder}_finder\n")
    return {str(finder): finder.name, str(pth): pth.name}
