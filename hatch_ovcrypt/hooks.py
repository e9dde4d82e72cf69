"""Registers the `ovcrypt` build hook. Pluggy imports this for every hatch build, so it stays light."""

from __future__ import annotations

from hatchling.plugin import hookimpl

from .hook.plugin import OvcryptBuildHook


@hookimpl
def hatch_register_build_hook() -> type[OvcryptBuildHook]:
    return OvcryptBuildHook
