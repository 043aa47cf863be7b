"""`make run`: Azurite on its default ports + the dev host serving function_app.py (outbox).

Prints a ready-to-paste curl, the local mail viewer's address and where mail lands. Ctrl-C stops
everything it started. An Azurite already listening on the default ports (yours, or VS Code's) is
reused, not replaced. While the gateway runs, .mailgw/running.json records what it runs
(mailgw/local_run.py) for `mailgw doctor --running`.

When the transport is graph, smtp or relay and nothing real is configured, local stand-ins play
Microsoft Graph / Exchange on fixed ports, so their addresses stay the same from run to run: the
Graph stand-in on 7072 (``MAILGW_LOCAL_GRAPH_PORT``), the SMTP stand-in's admin API on 7073
(``MAILGW_LOCAL_SMTP_ADMIN_PORT``); a port that is taken gives way to a free one, with a note.

The SMTP intake (``mailgw-smtp``) runs beside it on 127.0.0.1:2587 (STARTTLS required before
AUTH; ``MAILGW_LOCAL_SMTP_PORT``) and 127.0.0.1:2465 (implicit TLS; ``MAILGW_LOCAL_SMTPS_PORT``)
with a self-signed certificate made for this machine (.mailgw/smtp-intake/localhost.pem) and a
demo client whose password is kept in .mailgw/smtp-intake/demo-client.json (local only).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from devhost.azurite import Azurite  # noqa: E402
from devhost.mail_sources import GRAPH_ADMIN_SETTING, SMTP_ADMIN_SETTING  # noqa: E402
from devhost.mail_viewer import ROOT as MAIL_VIEWER_PATH  # noqa: E402
from mailgw.local_run import RunningGateway, discard_running  # noqa: E402
from mailgw.local_settings import merged_settings  # noqa: E402
from mailgw.settings import Settings  # noqa: E402
from mailgw.smtp_intake.clients import ClientStore  # noqa: E402
from mailgw.smtp_intake.devcert import ensure_dev_certificate  # noqa: E402
from mailgw.smtp_intake.devclient import ensure_demo_client  # noqa: E402
from mailgw.storage import (  # noqa: E402
    AZURITE_DEFAULT_PORTS,
    StorageConfigError,
    StorageConnection,
    azurite_connection_string,
)
from mailgw.telemetry import destinations  # noqa: E402
from standins.processes import start_smtp_standin, start_standins  # noqa: E402

PORT = int(os.environ.get("MAILGW_LOCAL_PORT", "7071"))
#: Outcome events go to this queue under `make run` unless the settings name another (or "").
EVENTS_QUEUE = "mail-events"
GRAPH_PORT = int(os.environ.get("MAILGW_LOCAL_GRAPH_PORT", "7072"))
SMTP_ADMIN_PORT = int(os.environ.get("MAILGW_LOCAL_SMTP_ADMIN_PORT", "7073"))
SMTP_INTAKE_PORT = int(os.environ.get("MAILGW_LOCAL_SMTP_PORT", "2587"))
SMTP_INTAKE_TLS_PORT = int(os.environ.get("MAILGW_LOCAL_SMTPS_PORT", "2465"))
SMTP_INTAKE_DIR = Path(".mailgw") / "smtp-intake"


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _local_settings(environ: dict[str, str]) -> dict[str, str]:
    """local.settings.json under ``environ``, merged as the dev host will merge them."""
    settings_file = ROOT / "local.settings.json"
    if not settings_file.exists():
        shutil.copyfile(ROOT / "local.settings.sample.json", settings_file)
        print("Created local.settings.json from local.settings.sample.json")
    return merged_settings(environ, ROOT)[0]


class LocalStandIns(Protocol):
    port_notes: list[str]

    def gateway_env(self) -> dict[str, str]: ...
    def stop(self) -> None: ...


@dataclass
class StandIns:
    """Stand-ins started for this run: what they play (name -> URL), the settings that point the
    gateway and its mail viewer at them, and a note for the banner."""

    processes: LocalStandIns
    playing: dict[str, str]
    env: dict[str, str]
    note: str


def _start_standins(values: dict[str, str]) -> StandIns | None:
    """A laptop has no managed identity, no Graph and no Exchange: when the transport needs them
    and nothing real is configured, local stand-ins play them, so the whole path still runs."""
    transport = values.get("MAILGW_TRANSPORT")
    no_identity = values.get(
        "MAILGW_CREDENTIAL", "managed_identity"
    ) == "managed_identity" and not values.get("IDENTITY_ENDPOINT")
    real = "(To use your real tenant instead: MAILGW_CREDENTIAL=default after az login.)"
    if transport == "graph" and no_identity:
        graph = start_standins(graph_port=GRAPH_PORT)
        env = {**graph.gateway_env(), GRAPH_ADMIN_SETTING: graph.graph_url}
        return StandIns(
            graph,
            {"Microsoft Graph": graph.graph_url, "the identity endpoint": env["IDENTITY_ENDPOINT"]},
            env,
            "No managed identity on this machine, so local stand-ins play Microsoft Graph\n"
            f"({graph.graph_url}) and the identity endpoint. What Graph received, as JSON:\n"
            f"  curl {graph.graph_url}/_standin/delivered\n{real}",
        )
    smtp_host = values.get("MAILGW_SMTP_HOST") or "smtp.office365.com"
    if transport == "smtp" and no_identity and smtp_host == "smtp.office365.com":
        smtp = start_smtp_standin("submission", admin_port=SMTP_ADMIN_PORT)
        env = {**smtp.gateway_env(), SMTP_ADMIN_SETTING: smtp.info["adminUrl"]}
        return StandIns(
            smtp,
            {
                "smtp.office365.com": smtp.info["adminUrl"],
                "the identity endpoint": env["IDENTITY_ENDPOINT"],
            },
            env,
            "No managed identity or Exchange here, so a local SMTP server (STARTTLS, XOAUTH2)\n"
            "and identity stand-in play smtp.office365.com. What it received, as JSON:\n"
            f"  curl {smtp.info['adminUrl']}/_standin/received\n{real}",
        )
    if transport == "relay" and not values.get("MAILGW_RELAY_HOST"):
        senders = values.get("MAILGW_ALLOWED_SENDERS", "").split(",")
        domains = tuple({s.strip().rpartition("@")[2] for s in senders if "@" in s})
        relay = start_smtp_standin("relay", accepted_domains=domains, admin_port=SMTP_ADMIN_PORT)
        return StandIns(
            relay,
            {"the relay connector": f"{relay.info['host']}:{relay.info['port']}"},
            {**relay.gateway_env(), SMTP_ADMIN_SETTING: relay.info["adminUrl"]},
            "No MAILGW_RELAY_HOST, so a local SMTP server (STARTTLS, no AUTH) plays your\n"
            "<domain>.mail.protection.outlook.com relay. What it received, as JSON:\n"
            f"  curl {relay.info['adminUrl']}/_standin/received",
        )
    return None


@dataclass
class SmtpIntakeRun:
    """The SMTP intake started for this run: its process, ports, certificate, demo client."""

    process: subprocess.Popen[bytes]
    port: int
    tls_port: int
    cert: Path
    username: str
    password: str
    notes: list[str]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_smtp_intake(env: dict[str, str]) -> SmtpIntakeRun:
    """``mailgw-smtp`` on 127.0.0.1 with a self-signed certificate and a demo client."""
    notes = []
    ports = []
    for wanted, setting in (
        (SMTP_INTAKE_PORT, "MAILGW_LOCAL_SMTP_PORT"),
        (SMTP_INTAKE_TLS_PORT, "MAILGW_LOCAL_SMTPS_PORT"),
    ):
        port = wanted
        if _listening(wanted):
            port = _free_port()
            notes.append(f"port {wanted} is taken: the SMTP intake uses {port} ({setting})")
        ports.append(port)
    cert = ensure_dev_certificate(ROOT / SMTP_INTAKE_DIR / "localhost.pem")
    smtp_env = {
        **env,
        "MAILGW_SMTP_INTAKE_HOST": "127.0.0.1",
        "MAILGW_SMTP_INTAKE_PORT": str(ports[0]),
        "MAILGW_SMTP_INTAKE_TLS_PORT": str(ports[1]),
        "MAILGW_SMTP_INTAKE_CERT_FILE": str(cert),
        "MAILGW_SMTP_INTAKE_KEY_FILE": "",
    }
    settings = Settings.from_env(smtp_env)

    async def demo() -> tuple[str, str]:
        store = ClientStore(settings.storage(), settings.smtp_intake.clients_table)
        try:
            saved = ROOT / SMTP_INTAKE_DIR / "demo-client.json"
            return await ensure_demo_client(store, saved, list(settings.allowed_senders))
        finally:
            await store.close()

    username, password = asyncio.run(demo())
    process = subprocess.Popen([sys.executable, "-m", "mailgw.smtp_intake"], cwd=ROOT, env=smtp_env)
    deadline = time.monotonic() + 60
    while not all(_listening(p) for p in ports):
        if process.poll() is not None:
            raise SystemExit(f"the SMTP intake exited with code {process.returncode}; see above")
        if time.monotonic() > deadline:
            raise SystemExit("the SMTP intake did not start listening in 60s")
        time.sleep(0.1)
    return SmtpIntakeRun(process, ports[0], ports[1], cert, username, password, notes)


def _smtp_banner(run: SmtpIntakeRun, sender: str) -> str:
    return f"""
SMTP intake, for apps and devices that speak SMTP:
  127.0.0.1:{run.port} (STARTTLS required before AUTH), 127.0.0.1:{run.tls_port} (implicit TLS)
  certificate (self-signed, this machine only): {run.cert}
  demo client: {run.username} / {run.password}
  more clients: .venv/bin/mailgw smtp-clients add NAME --allow-sender ADDRESS_OR_*@DOMAIN

Send a first mail with swaks:

  swaks --server 127.0.0.1:{run.port} --tls --auth PLAIN \\
        --auth-user {run.username} --auth-password '{run.password}' \\
        --from {sender} --to someone@example.com --header 'Subject: Hello from swaks'
"""


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


def _sender(values: dict[str, str]) -> str:
    """An address the policy allows, for the examples."""
    first = values.get("MAILGW_ALLOWED_SENDERS", "").split(",")[0].strip().replace("*", "noreply")
    return first or "noreply@contoso.com"


def _banner(values: dict[str, str], standin_note: str | None) -> str:
    sender = _sender(values)
    body = json.dumps(
        {
            "from": sender,
            "to": ["someone@example.com"],
            "subject": "Hello from mailgw",
            "text": "It works.",
        }
    )
    outbox = (ROOT / values.get("MAILGW_OUTBOX_DIR", "outbox")).resolve()
    where = f"It also lands as an .eml file in {outbox}/"
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

See what was sent (refreshes as mail arrives): http://127.0.0.1:{PORT}{MAIL_VIEWER_PATH}
{where}
Its outcome events (accepted, sent, ...), as they arrive: .venv/bin/mailgw events tail
Health: curl http://127.0.0.1:{PORT}/api/v1/health
Queues, rates, failures: .venv/bin/mailgw top
Telemetry: {_telemetry(values)}
Check what is running (stand-ins included): .venv/bin/mailgw doctor --running
Stop: Ctrl-C
"""


def _telemetry(values: dict[str, str]) -> str:
    where = destinations(values)
    if not where:
        return "off (MAILGW_TELEMETRY=console prints it here; OTEL_EXPORTER_OTLP_ENDPOINT sends it)"
    return "to " + " and ".join(where)


def _record_running(env: dict[str, str], standins: StandIns | None) -> None:
    """What the dev host runs, for `mailgw doctor --running` (no secrets: mailgw/local_run.py)."""
    settings = _local_settings(env)
    outbox = settings.get("MAILGW_OUTBOX_DIR")
    if outbox:  # the dev host runs in ROOT; the doctor may not
        settings["MAILGW_OUTBOX_DIR"] = str((ROOT / outbox).resolve())
    url = f"http://127.0.0.1:{PORT}"
    RunningGateway.of(
        url,
        settings,
        standins=standins.playing if standins else {},
        mail_viewer=url + MAIL_VIEWER_PATH,
    ).write(ROOT)


def _run_defaults(values: dict[str, str]) -> dict[str, str]:
    """What `make run` adds to the settings: outcome events to mail-events (an older
    local.settings.json lacks the setting), and the host name the Functions host gives an app,
    so that events name this gateway's URL as their source (docs/events.md)."""
    defaults = {"WEBSITE_HOSTNAME": f"127.0.0.1:{PORT}"}
    if "MAILGW_EVENTS_QUEUE" not in values:
        defaults["MAILGW_EVENTS_QUEUE"] = EVENTS_QUEUE
    return {name: value for name, value in defaults.items() if name not in os.environ}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    # Ctrl-C and a supervisor's SIGTERM both stop everything (and SIGINT may arrive ignored when
    # started from a non-interactive shell, so install the handlers explicitly).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    values = _local_settings(dict(os.environ))
    azurite: Azurite | None = None
    try:
        storage = StorageConnection.from_settings(env=values)
    except StorageConfigError as error:
        print(f"Storage is not configured: {error}")
        return 1
    if storage.connection_string != azurite_connection_string():
        print(f"Storage: {storage.describe()} (AzureWebJobsStorage): not starting Azurite")
    elif all(_listening(p) for p in AZURITE_DEFAULT_PORTS.values()):
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
    standins = _start_standins(values)
    for port_note in standins.processes.port_notes if standins else []:
        print(f"Note: {port_note}")
    env = {**os.environ, **(standins.env if standins else {}), **_run_defaults(values)}
    smtp_intake: SmtpIntakeRun | None = None
    host = subprocess.Popen(
        [sys.executable, "-m", "devhost", "--app-dir", str(ROOT), "--port", str(PORT)],
        cwd=ROOT,
        env=env,
    )
    try:
        _wait_ready(host)
        smtp_intake = _start_smtp_intake({**values, **env})
        for smtp_note in smtp_intake.notes:
            print(f"Note: {smtp_note}")
        _record_running(env, standins)
        sender = _sender(values)
        banner = _banner(values, standins.note if standins else None)
        print(_smtp_banner(smtp_intake, sender) + banner, flush=True)
        host.wait()
    except KeyboardInterrupt:
        pass
    finally:
        discard_running(ROOT)
        if smtp_intake is not None and smtp_intake.process.poll() is None:
            smtp_intake.process.send_signal(signal.SIGTERM)
            try:
                smtp_intake.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                smtp_intake.process.kill()
        if host.poll() is None:
            host.send_signal(signal.SIGINT)
            try:
                host.wait(timeout=30)
            except subprocess.TimeoutExpired:
                host.kill()
        if standins:
            standins.processes.stop()
        if azurite:
            azurite.stop()
        print("\nStopped.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
