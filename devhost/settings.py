"""App settings as ``func start`` gives them: local.settings.json ``Values`` under the environment.

``func start`` puts every ``Values`` entry into the worker's environment unless the environment
already has that name, so a developer (or a test) can override one setting for one run (a storage
connection as a whole: see :mod:`mailgw.local_settings`). Binding
expressions such as ``%MAILGW_QUEUE%`` are then resolved from those settings, as the host does.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailgw.local_settings import (
    SETTINGS_FILE,
    LocalSettingsError,
    file_values_under,
    read_local_settings,
)

log = logging.getLogger("devhost.settings")

SAMPLE_FILE = "local.settings.sample.json"

_EXPRESSION = re.compile(r"%([^%]+)%")


class SettingsError(ValueError):
    """local.settings.json is unusable, or a binding expression names a missing setting."""


@dataclass(frozen=True)
class LocalSettings:
    """What local.settings.json holds, and whether this run created it from the sample."""

    path: Path
    values: Mapping[str, str] = field(default_factory=dict)
    host: Mapping[str, Any] = field(default_factory=dict)
    created_from_sample: bool = False


def load_local_settings(app_dir: Path) -> LocalSettings:
    """Read ``<app_dir>/local.settings.json``, first copying it from the sample if it is missing.

    The real file is git-ignored (it may hold secrets), so a fresh clone only has the sample;
    copying it lets ``make run`` work out of the box and leaves the copy for the developer to edit.
    """
    path = app_dir / SETTINGS_FILE
    created = False
    if not path.exists():
        sample = app_dir / SAMPLE_FILE
        if not sample.exists():
            return LocalSettings(path=path)
        shutil.copyfile(sample, path)
        created = True
    try:
        values, host = read_local_settings(path)
    except LocalSettingsError as error:
        raise SettingsError(str(error)) from None
    return LocalSettings(path=path, values=values, host=host, created_from_sample=created)


def apply_settings(values: Mapping[str, str], environ: MutableMapping[str, str]) -> list[str]:
    """Put settings into ``environ`` unless the environment overrides them (a storage connection
    as a whole: :func:`mailgw.local_settings.file_values_under`); return the names kept out."""
    applied, overridden = file_values_under(values, environ)
    environ.update(applied)
    return overridden


def lookup_setting(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """An app setting by name; exact first, then case-insensitively like .NET configuration."""
    environ = os.environ if environ is None else environ
    if name in environ:
        return environ[name]
    lowered = name.lower()
    return next((v for k, v in environ.items() if k.lower() == lowered), None)


def resolve_expressions(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace each ``%NAME%`` in a binding property with the app setting ``NAME``.

    An unresolvable name is an error, as the host fails to index such a function rather than
    listening on a queue literally called ``%NAME%``.
    """

    def replace(match: re.Match[str]) -> str:
        value = lookup_setting(match.group(1), environ)
        if value is None:
            raise SettingsError(f"'%{match.group(1)}%' does not resolve to a value")
        return value

    return _EXPRESSION.sub(replace, text)


def is_function_disabled(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """``AzureWebJobs.<name>.Disabled`` (or ``AzureWebJobs__<name>__Disabled``) true disables it."""
    for setting in (f"AzureWebJobs.{name}.Disabled", f"AzureWebJobs__{name}__Disabled"):
        value = lookup_setting(setting, environ)
        if value is not None and value.strip().lower() in ("true", "1"):
            return True
    return False
