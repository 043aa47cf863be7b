"""The settings of a local run: ``local.settings.json`` ``Values`` under the environment.

``func start`` (and the dev host, and the ``mailgw`` command) put every ``Values`` entry into the
app's settings unless the environment has that name, so one run can override one setting.

One exception, so that the environment really wins: a storage connection is one setting in two
forms, a connection string ``X`` or identity-based ``X__queueServiceUri`` / ``X__accountName`` /
... (:class:`mailgw.storage.StorageConnection`), and the connection string is read first. Merged
name by name, the file's ``AzureWebJobsStorage=UseDevelopmentStorage=true`` would beat the
environment's ``AzureWebJobsStorage__accountName``: the environment's choice of a connection
must win as a whole. So when the environment sets any key of a connection, none of the file's
keys of that connection apply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SETTINGS_FILE = "local.settings.json"

#: The keys of an identity-based storage connection, as the Functions host reads them.
CONNECTION_KEYS = frozenset(
    {
        "serviceuri",
        "queueserviceuri",
        "blobserviceuri",
        "tableserviceuri",
        "accountname",
        "credential",
        "clientid",
    }
)
#: The connection the host and the app use when a binding names none.
DEFAULT_CONNECTION = "AzureWebJobsStorage"


class LocalSettingsError(ValueError):
    """local.settings.json cannot be used; the message names the file and the reason."""


def _as_setting(name: str, value: Any) -> str:
    """App settings are strings; JSON scalars are taken the way a developer means them."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return ""
    raise LocalSettingsError(
        f"{SETTINGS_FILE}: Values.{name} must be a string, not {type(value).__name__}"
    )


def read_json_object(path: Path, error: type[Exception]) -> dict[str, Any]:
    """The file's top-level object; ``error`` (naming the file) if it is not JSON or not an object
    (host.json and local.settings.json alike).

    ``utf-8-sig`` because editors on Windows like to add a BOM, which the Functions host accepts.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise error(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise error(f"{path}: expected a JSON object")
    return document


def read_local_settings(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """The file's ``Values`` (as strings) and ``Host`` section."""
    document = read_json_object(path, LocalSettingsError)
    if document.get("IsEncrypted"):
        raise LocalSettingsError(
            f"{path} is encrypted; decrypt it (`func settings decrypt`) or set the environment"
        )
    values = document.get("Values") or {}
    host = document.get("Host") or {}
    if not isinstance(values, dict) or not isinstance(host, dict):
        raise LocalSettingsError(f"{path}: Values and Host must be objects")
    return {name: _as_setting(name, value) for name, value in values.items()}, host


def connection_of(name: str) -> str | None:
    """``X`` for an identity-based key ``X__queueServiceUri`` (any case), else None."""
    base, separator, key = name.rpartition("__")
    return base if separator and base and key.lower() in CONNECTION_KEYS else None


def _connections(names: Mapping[str, str]) -> set[str]:
    """Connection names seen in identity-based keys, and the default one."""
    found = {DEFAULT_CONNECTION.lower()}
    found.update(base.lower() for name in names if (base := connection_of(name)))
    return found


def _group(name: str, connections: set[str]) -> str | None:
    """The connection a setting belongs to (either form), lower-cased, or None."""
    if name.lower() in connections:
        return name.lower()
    base = connection_of(name)
    return base.lower() if base and base.lower() in connections else None


def file_values_under(
    values: Mapping[str, str], environ: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """The file's values that apply under ``environ``, and the names the environment overrides
    (a name it sets, or any key of a connection it sets)."""
    connections = _connections(values) | _connections(environ)
    chosen = {group for name in environ if (group := _group(name, connections))}
    applied: dict[str, str] = {}
    overridden: list[str] = []
    for name, value in values.items():
        if name in environ or _group(name, connections) in chosen:
            overridden.append(name)
        else:
            applied[name] = value
    return applied, overridden


def merged_settings(
    environ: Mapping[str, str], directory: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """The settings a local command sees: the file in ``directory`` (if any) under ``environ``.

    Returns the merged settings and, for each name the file supplied, ``"local.settings.json"``
    (so a command can say where its storage setting came from)."""
    path = directory / SETTINGS_FILE
    applied: dict[str, str] = {}
    if path.is_file():
        values, _ = read_local_settings(path)
        applied, _ = file_values_under(values, environ)
    return {**applied, **environ}, dict.fromkeys(applied, SETTINGS_FILE)
