"""App settings as ``func start`` gives them: local.settings.json ``Values`` under the environment.

``func start`` puts every ``Values`` entry into the worker's environment unless the environment
already has that name, so a developer (or a test) can override one setting for one run. Binding
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

from devhost.jsonfile import read_json_object

log = logging.getLogger("devhost.settings")

SETTINGS_FILE = "local.settings.json"
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


def _as_setting(name: str, value: Any) -> str:
    """App settings are strings; accept JSON scalars the way a developer would mean them."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if value is None:
        return ""
    raise SettingsError(
        f"{SETTINGS_FILE}: Values.{name} must be a string, not {type(value).__name__}"
    )


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
    document = read_json_object(path, SettingsError)
    if document.get("IsEncrypted"):
        raise SettingsError(
            f"{path} is encrypted; the dev host reads plain settings only "
            "(decrypt it with `func settings decrypt` or recreate it from the sample)"
        )
    values = document.get("Values") or {}
    host = document.get("Host") or {}
    if not isinstance(values, dict) or not isinstance(host, dict):
        raise SettingsError(f"{path}: Values and Host must be objects")
    return LocalSettings(
        path=path,
        values={name: _as_setting(name, value) for name, value in values.items()},
        host=host,
        created_from_sample=created,
    )


def apply_settings(values: Mapping[str, str], environ: MutableMapping[str, str]) -> list[str]:
    """Put settings into ``environ`` unless already set there; return the names kept out."""
    overridden = []
    for name, value in values.items():
        if name in environ:
            overridden.append(name)
        else:
            environ[name] = value
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
