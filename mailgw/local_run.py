"""What ``make run`` runs, recorded so that ``mailgw doctor --running`` checks that, not the files.

``scripts/run_local.py`` writes ``.mailgw/running.json`` in the checkout once the gateway is up and
removes it when it stops: the dev host's URL, its effective settings (``local.settings.json``
under the environment, plus what the local stand-ins set, such as ``MAILGW_GRAPH_ENDPOINT``) and
the stand-ins' addresses. Secrets are not written, only their names; the doctor reads them where
``make run`` did (the environment or ``local.settings.json``). The local stand-ins' own
``IDENTITY_HEADER`` is written: a random value that only the identity stand-in of that run, on
127.0.0.1, accepts, and without which the transport cannot be checked.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailgw.storage import AZURITE_KEY

RUNNING_FILE = Path(".mailgw") / "running.json"
#: the names of app settings (and of the settings the Functions host reads), not of a shell
SETTING_PREFIXES = (
    "MAILGW_",
    "AZURE_",
    "IDENTITY_",
    "AzureWebJobs",
    "AzureFunctionsJobHost",
    "FUNCTIONS_",
)
_SECRET_NAME = re.compile(
    r"SECRET|PASSWORD|(^|_)KEY$|TOKEN$|CLIENT_CERT$|CONNECTION_?STRING$", re.IGNORECASE
)
_SECRET_VALUE = re.compile(r"(AccountKey|SharedAccessSignature|SharedAccessKey)=|[?&]sig=", re.I)


class RunningError(Exception):
    """No usable record of a running gateway; the message says why and what to do."""


def is_secret(name: str, value: str) -> bool:
    """A key, token, password or certificate by its name, or a value carrying an account key or
    a SAS signature (Azurite's published development key is no secret)."""
    if not value:
        return False
    if _SECRET_NAME.search(name):
        return True
    return bool(_SECRET_VALUE.search(value)) and AZURITE_KEY not in value


@dataclass(frozen=True)
class RunningGateway:
    url: str
    pid: int
    started_at: str
    settings: dict[str, str]
    #: names of secret settings the gateway has, not written here
    secrets: list[str] = field(default_factory=list)
    #: what plays Graph, SMTP or the identity endpoint locally: name -> URL
    standins: dict[str, str] = field(default_factory=dict)
    mail_viewer: str = ""

    @classmethod
    def of(
        cls,
        url: str,
        settings: Mapping[str, str],
        *,
        standins: Mapping[str, str] | None = None,
        mail_viewer: str = "",
    ) -> RunningGateway:
        """The record of this process's gateway: the app's settings only, secrets by name."""
        own = {k: v for k, v in settings.items() if k.startswith(SETTING_PREFIXES)}
        return cls(
            url=url,
            pid=os.getpid(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            settings={k: v for k, v in sorted(own.items()) if not is_secret(k, v)},
            secrets=sorted(k for k, v in own.items() if is_secret(k, v)),
            standins=dict(standins or {}),
            mail_viewer=mail_viewer,
        )

    def environment(self, here: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
        """The settings to check: the recorded ones, with the secrets taken from ``here``;
        also the secret names ``here`` lacks."""
        missing = [name for name in self.secrets if name not in here]
        found = {name: here[name] for name in self.secrets if name in here}
        return {**self.settings, **found}, missing

    def write(self, directory: Path) -> Path:
        """Atomically, readable by its owner only."""
        target = directory / RUNNING_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        (target.parent / ".gitignore").write_text("*\n")
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".running.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle, indent=2)
        os.replace(temporary, target)
        return target


def read_running(directory: Path) -> RunningGateway:
    """The gateway ``make run`` is running from ``directory``, or :class:`RunningError`."""
    path = directory / RUNNING_FILE
    try:
        document: Any = json.loads(path.read_text(encoding="utf-8"))
        running = RunningGateway(**document)
    except FileNotFoundError:
        raise RunningError(
            f"no gateway is running from {directory} ({RUNNING_FILE} is missing): start it with "
            "`make run`, or run this in the checkout that runs it"
        ) from None
    except (ValueError, TypeError) as error:
        raise RunningError(f"{path} is unreadable ({error}); restart `make run`") from None
    if not _alive(running.pid):
        raise RunningError(
            f"{path} is left over from a `make run` that is gone (process {running.pid}); "
            "start it again with `make run`"
        )
    return running


def discard_running(directory: Path) -> None:
    (directory / RUNNING_FILE).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
