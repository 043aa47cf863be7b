"""`make run`: Azurite on its default ports + the dev host serving function_app.py (outbox).

Prints a ready-to-paste curl and where the .eml files land. Ctrl-C stops everything it started.
An Azurite already listening on the default ports (yours, or VS Code's) is reused, not replaced.

When the transport is graph, smtp or relay and nothing real is configured, local stand-ins play
Microsoft Graph / Exchange on fixed ports, so their addresses stay the same from run to run: the
Graph stand-in on 7072 (``MAILGW_LOCAL_GRAPH_PORT``), the SMTP stand-in's admin API on 7073
(``MAILGW_LOCAL_SMTP_ADMIN_PORT``); a port that is taken gives way to a free one, with a note.
The dev host gets their addresses as ``MAILGW_LOCAL_GRAPH_STANDIN`` / ``MAILGW_LOCAL_SMTP_STANDIN``
(what was received: ``GET <address>/_standin/delivered`` / ``/_standin/received``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from devhost.azurite import Azurite  # noqa: E402
from mailgw.storage import AZURITE_DEFAULT_PORTS  # noqa: E402
from standins.processes import start_smtp_standin, start_standins  # noqa: E402

PORT = int(os.environ.get("MAILGW_LOCAL_PORT", "7071"))
GRAPH_PORT = int(os.environ.get("MAILGW_LOCAL_GRAPH_PORT", "7072"))
SMTP_ADMIN_PORT = int(os.environ.get("MAILGW_LOCAL_SMTP_ADMIN_PORT", "7073"))


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _local_settings() -> dict[str, str]:
    settings_file = ROOT / "local.settings.json"
    if not settings_file.exists():
        shutil.copyfile(ROOT / "local.settings.sample.json", settings_file)
        print("Created local.settings.json from local.settings.sample.json")
    values: dict[str, str] = json.loads(settings_file.read_text())["Values"]
    return {
        **values,
        **{
            k: v
            for k, v in os.environ.items()
            if k in values or k.startswith(("MAILGW_", "IDENTITY_", "AZURE_"))
        },
    }


class LocalStandIns(Protocol):
    port_notes: list[str]

    def gateway_env(self) -> dict[str, str]: ...
    def stop(self) -> None: ...


def _start_standins(
    values: dict[str, str],
) -> tuple[LocalStandIns, dict[str, str], str] | None:
    """A laptop has no managed identity, no Graph and no Exchange: when the transport needs them
    and nothing real is configured, local stand-ins play them, so the whole path still runs.
    Returns the stand-ins, their addresses for the dev host, and a line saying where to look."""
    transport = values.get("MAILGW_TRANSPORT")
    no_identity = values.get(
        "MAILGW_CREDENTIAL", "managed_identity"
    ) == "managed_identity" and not values.get("IDENTITY_ENDPOINT")
    real = "(To use your real tenant instead: MAILGW_CREDENTIAL=default after az login.)"
    if transport == "graph" and no_identity:
        graph = start_standins(graph_port=GRAPH_PORT)
        return (
            graph,
            {"MAILGW_LOCAL_GRAPH_STANDIN": graph.graph_url},
            (
                "No managed identity on this machine, so local stand-ins play Microsoft Graph\n"
                f"({graph.graph_url}) and the identity endpoint. See what Graph received:\n"
                f"  curl {graph.graph_url}/_standin/delivered\n{real}"
            ),
        )
    smtp_host = values.get("MAILGW_SMTP_HOST") or "smtp.office365.com"
    if transport == "smtp" and no_identity and smtp_host == "smtp.office365.com":
        smtp = start_smtp_standin("submission", admin_port=SMTP_ADMIN_PORT)
        return (
            smtp,
            {"MAILGW_LOCAL_SMTP_STANDIN": smtp.smtp.url},
            (
                "No managed identity or Exchange here, so a local SMTP server (STARTTLS, XOAUTH2)\n"
                "and identity stand-in play smtp.office365.com. See what it received:\n"
                f"  curl {smtp.info['adminUrl']}/_standin/received\n{real}"
            ),
        )
    if transport == "relay" and not values.get("MAILGW_RELAY_HOST"):
        senders = values.get("MAILGW_ALLOWED_SENDERS", "").split(",")
        domains = tuple({s.strip().rpartition("@")[2] for s in senders if "@" in s})
        relay = start_smtp_standin("relay", accepted_domains=domains, admin_port=SMTP_ADMIN_PORT)
        return (
            relay,
            {"MAILGW_LOCAL_SMTP_STANDIN": relay.smtp.url},
            (
                "No MAILGW_RELAY_HOST, so a local SMTP server (STARTTLS, no AUTH) plays your\n"
                "<domain>.mail.protection.outlook.com relay. See what it received:\n"
                f"  curl {relay.info['adminUrl']}/_standin/received"
            ),
        )
    return None


def _wait_ready(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{PORT}/admin/host/status"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the dev host exited with code {process.returncode}; see above")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if json.loads(response.read()).get("state") == "Running":
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the dev host did not become ready on port {PORT} in {timeout:.0f}s")


def _banner(values: dict[str, str], standin_note: str | None) -> str:
    sender = values.get("MAILGW_ALLOWED_SENDERS", "").split(",")[0].strip().replace("*", "noreply")
    body = json.dumps(
        {
            "from": sender or "noreply@contoso.com",
            "to": ["someone@example.com"],
            "subject": "Hello from mailgw",
            "text": "It works.",
        }
    )
    outbox = (ROOT / values.get("MAILGW_OUTBOX_DIR", "outbox")).resolve()
    where = f"The message lands as an .eml file in {outbox}/"
    if standin_note:
        where = standin_note
    elif values.get("MAILGW_TRANSPORT") != "outbox":
        where = f"Transport {values.get('MAILGW_TRANSPORT')}: the message goes out for real."
    return f"""
mailgw is running on http://127.0.0.1:{PORT} (transport: {values.get("MAILGW_TRANSPORT")})

Send a first mail:

  curl -i -X POST http://127.0.0.1:{PORT}/api/v1/messages \\
       -H 'Content-Type: application/json' \\
       -d '{body}'

or:  .venv/bin/mailgw send --from {sender} --to someone@example.com --subject Hi --text 'It works.'

{where}
Health: curl http://127.0.0.1:{PORT}/api/v1/health     Check the set-up: .venv/bin/mailgw doctor
Stop: Ctrl-C
"""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl-C and a supervisor's SIGTERM both stop everything (and SIGINT may arrive ignored when
    # started from a non-interactive shell, so install the handlers explicitly).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    values = _local_settings()
    azurite: Azurite | None = None
    if all(_listening(p) for p in AZURITE_DEFAULT_PORTS.values()):
        print("Azurite is already listening on 10000-10002: using it")
    else:
        azurite = Azurite(
            ports=dict(AZURITE_DEFAULT_PORTS),
            location=str(ROOT / ".azurite"),
            in_memory=False,
            project_dir=ROOT,
        ).start()
        print("Started Azurite on 127.0.0.1:10000-10002 (data in .azurite/)")
    if _listening(PORT):
        print(f"Port {PORT} is already in use: stop the other process or set MAILGW_LOCAL_PORT")
        if azurite:
            azurite.stop()
        return 1
    started = _start_standins(values)
    standins, addresses, note = started if started else (None, {}, None)
    for port_note in standins.port_notes if standins else []:
        print(f"Note: {port_note}")
    env = {**os.environ, **addresses, **(standins.gateway_env() if standins else {})}
    host = subprocess.Popen(
        [sys.executable, "-m", "devhost", "--app-dir", str(ROOT), "--port", str(PORT)],
        cwd=ROOT,
        env=env,
    )
    try:
        _wait_ready(host)
        print(_banner(values, note), flush=True)
        host.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if host.poll() is None:
            host.send_signal(signal.SIGINT)
            try:
                host.wait(timeout=30)
            except subprocess.TimeoutExpired:
                host.kill()
        if standins:
            standins.stop()
        if azurite:
            azurite.stop()
        print("\nStopped.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
