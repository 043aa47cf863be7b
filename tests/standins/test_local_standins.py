"""What ``make run`` and the dev host's mail viewer rely on: the stand-ins on fixed ports that give
way to a free one when taken, and admin items that say enough to show a message without guessing.
"""

from __future__ import annotations

import base64
import datetime as dt
import smtplib
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from urllib.parse import urlsplit

import httpx

from standins.graph import GraphStandIn, RemoteGraphStandIn
from standins.identity import GRAPH_RESOURCE, issue_token
from standins.processes import start_smtp_standin, start_standins
from standins.smtp import RemoteSmtpStandIn, SmtpStandIn, xoauth2_initial_response
from support import free_port

SENDER = "noreply@contoso.com"


@contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def parsed_utc(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    return dt.datetime.fromisoformat(text.removesuffix("Z") + "+00:00")


def recipient(address: str) -> dict[str, dict[str, str]]:
    return {"emailAddress": {"address": address}}


def test_the_graph_stand_in_takes_the_fixed_port_it_is_given() -> None:
    wanted = free_port()
    with start_standins(graph_port=wanted) as standins:
        assert port_of(standins.graph_url) == wanted
        assert standins.port_notes == []
        assert standins.gateway_env()["MAILGW_GRAPH_ENDPOINT"] == standins.graph_url


def test_a_taken_port_gives_way_to_a_free_one_with_a_note() -> None:
    with taken_port() as taken, start_standins(graph_port=taken) as standins:
        assert port_of(standins.graph_url) != taken
        assert standins.port_notes == [
            f"port {taken} was taken, so the Graph stand-in listens on {standins.graph_url}"
        ]
        # the gateway's tokens are for Graph's audience, wherever the stand-in landed
        token = issue_token("mi", "app", GRAPH_RESOURCE, int(time.time()) + 600, 1)
        response = httpx.post(
            f"{standins.graph_url}/v1.0/users/{SENDER}/sendMail",
            headers={"Authorization": f"Bearer {token}"},
            json={"message": {"subject": "s", "toRecipients": [recipient("a@example.com")]}},
        )
        assert response.status_code == 202
        assert standins.graph.wait_delivered(1)[0]["subject"] == "s"


def test_the_smtp_admin_port_gives_way_too() -> None:
    with taken_port() as taken, start_smtp_standin("relay", admin_port=taken) as standin:
        assert port_of(standin.smtp.url) != taken
        assert standin.port_notes == [
            f"port {taken} was taken, so the SMTP stand-in's admin API listens on "
            f"{standin.smtp.url}"
        ]
        assert standin.smtp.stats()["received"] == 0


def test_graph_delivered_items_say_when_who_and_what() -> None:
    mime = EmailMessage()
    mime["From"], mime["To"], mime["Subject"] = "alerts@contoso.com", "b@example.com", "As MIME"
    mime.set_content("plain")
    raw = mime.as_bytes()
    token = issue_token("mi", "app", "https://graph.microsoft.com", int(time.time()) + 600, 1)
    auth = {"Authorization": f"Bearer {token}"}
    before = dt.datetime.now(dt.UTC)
    with GraphStandIn() as graph, httpx.Client(base_url=graph.graph_url) as http:
        message = {
            "subject": "As JSON",
            "body": {"contentType": "html", "content": "<p>hi</p>"},
            "toRecipients": [recipient("a@example.com")],
            "ccRecipients": [recipient("c@example.com")],
        }
        sent = http.post(f"/users/{SENDER}/sendMail", headers=auth, json={"message": message})
        assert sent.status_code == 202
        sent = http.post(
            f"/users/{SENDER}/sendMail",
            headers={**auth, "Content-Type": "text/plain"},
            content=base64.b64encode(raw),
        )
        assert sent.status_code == 202
        as_json, as_mime = RemoteGraphStandIn(graph.url).delivered()
    after = dt.datetime.now(dt.UTC)

    assert before <= parsed_utc(as_json["receivedAt"]) <= parsed_utc(as_mime["receivedAt"]) <= after
    assert (as_json["mailbox"], as_json["from"]) == (SENDER, SENDER)  # no from: the mailbox
    assert [as_json[k] for k in ("to", "cc", "bcc")] == [["a@example.com"], ["c@example.com"], []]
    assert (as_json["subject"], as_json["mimeBase64"]) == ("As JSON", None)
    assert as_json["message"]["body"] == {"contentType": "html", "content": "<p>hi</p>"}
    assert as_json["size"] > len("<p>hi</p>")
    assert (as_mime["from"], as_mime["to"], as_mime["subject"]) == (
        "alerts@contoso.com",
        ["b@example.com"],
        "As MIME",
    )
    assert base64.b64decode(as_mime["mimeBase64"]) == raw and as_mime["size"] == len(raw)


def test_smtp_received_items_say_when_who_and_what() -> None:
    data = b"From: noreply@contoso.com\r\nTo: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
    expires = int(time.time()) + 600
    token = issue_token("app", "gateway", "https://outlook.office365.com", expires, 1)
    before = dt.datetime.now(dt.UTC)
    with SmtpStandIn() as server:
        with smtplib.SMTP(server.host, server.port, local_hostname="gateway.test") as smtp:
            smtp.starttls(context=server.client_tls_context())
            smtp.ehlo()
            smtp.docmd("AUTH", "XOAUTH2 " + xoauth2_initial_response(SENDER, token))
            smtp.sendmail("alerts@contoso.com", ["a@example.com"], data)
        [item] = RemoteSmtpStandIn(server.admin_url).wait_received(1)
    after = dt.datetime.now(dt.UTC)

    assert before <= parsed_utc(item["receivedAt"]) <= after
    assert (item["mailbox"], item["from"], item["rcptTos"]) == (
        SENDER,
        "alerts@contoso.com",
        ["a@example.com"],
    )
    assert base64.b64decode(item["dataBase64"]) == data and item["size"] == len(data)
