"""Application permissions: the identity stand-in puts the identity's roles in its tokens, and the
Graph stand-in refuses an operation whose permission is missing with 403 ``ErrorAccessDenied``,
as Graph does: sendMail and /send need Mail.Send, drafts, attachments and upload sessions
Mail.ReadWrite, reading Mail.Read or Mail.ReadWrite."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection

import httpx
import pytest
from azure.identity.aio import ManagedIdentityCredential

from standins.admin import RemoteAdmin
from standins.graph import ERRORS, GraphStandIn
from standins.identity import GATEWAY_APP_ROLES, IdentityStandIn, issue_token, verify_token

SENDER = "noreply@contoso.com"
MESSAGE = {"subject": "s", "toRecipients": [{"emailAddress": {"address": "a@example.com"}}]}
UPLOAD = {"AttachmentItem": {"attachmentType": "file", "name": "big.bin", "size": 4 << 20}}


def token(*roles: str) -> str:
    return issue_token(
        "mi", "app", "https://graph.microsoft.com", int(time.time()) + 600, 1, roles=roles
    )


@pytest.fixture
async def mailbox(graph: GraphStandIn) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{graph.graph_url}/users/{SENDER}") as http:
        yield http


async def operations(http: httpx.AsyncClient, roles: Collection[str]) -> dict[str, int]:
    """The status of each operation with a token holding ``roles``, on a draft made with full
    permissions (so that only the permission under test can make a difference)."""
    full = {"Authorization": f"Bearer {token(*GATEWAY_APP_ROLES)}"}
    auth = {"Authorization": f"Bearer {token(*roles)}"}
    draft = (await http.post("/messages", json=MESSAGE, headers=full)).json()["id"]
    other = (await http.post("/messages", json=MESSAGE, headers=full)).json()["id"]
    attachment = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "a.txt",
        "contentBytes": "aGk=",
    }
    calls = {
        "sendMail": http.post("/sendMail", json={"message": MESSAGE}, headers=auth),
        "createMessage": http.post("/messages", json=MESSAGE, headers=auth),
        "getMessage": http.get(f"/messages/{draft}", headers=auth),
        "listMessages": http.get("/mailFolders/SentItems/messages", headers=auth),
        "updateMessage": http.patch(f"/messages/{draft}", json={"subject": "t"}, headers=auth),
        "listAttachments": http.get(f"/messages/{draft}/attachments", headers=auth),
        "addAttachment": http.post(f"/messages/{draft}/attachments", json=attachment, headers=auth),
        "createUploadSession": http.post(
            f"/messages/{draft}/attachments/createUploadSession", json=UPLOAD, headers=auth
        ),
        "send": http.post(f"/messages/{draft}/send", headers=auth),
        "deleteMessage": http.delete(f"/messages/{other}", headers=auth),
    }
    statuses = {}
    for name, call in calls.items():
        response = await call
        statuses[name] = response.status_code
        if response.status_code == 403:
            error = response.json()["error"]
            assert (error["code"], error["message"]) == (
                "ErrorAccessDenied",
                ERRORS["ErrorAccessDenied"][1],
            )
    return statuses


ALLOWED = {200, 201, 202, 204}


async def test_mail_send_alone_sends_but_cannot_touch_drafts(
    mailbox: httpx.AsyncClient,
) -> None:
    statuses = await operations(mailbox, ["Mail.Send"])
    assert {name for name, status in statuses.items() if status in ALLOWED} == {
        "sendMail",
        "send",
    }
    assert set(statuses.values()) <= ALLOWED | {403}


async def test_mail_readwrite_alone_makes_drafts_but_cannot_send(
    mailbox: httpx.AsyncClient,
) -> None:
    statuses = await operations(mailbox, ["Mail.ReadWrite"])
    assert {name for name, status in statuses.items() if status == 403} == {"sendMail", "send"}
    assert {s for name, s in statuses.items() if name not in ("sendMail", "send")} <= ALLOWED


async def test_mail_read_only_reads(mailbox: httpx.AsyncClient) -> None:
    statuses = await operations(mailbox, ["Mail.Read"])
    allowed = {name for name, status in statuses.items() if status in ALLOWED}
    assert allowed == {"getMessage", "listMessages", "listAttachments"}


async def test_no_roles_no_mail(mailbox: httpx.AsyncClient, graph: GraphStandIn) -> None:
    statuses = await operations(mailbox, [])
    assert set(statuses.values()) == {403}
    assert graph.delivered == []


async def test_the_identity_puts_its_app_roles_in_its_tokens(
    mi_env: IdentityStandIn, graph: GraphStandIn
) -> None:
    mi_env.app_roles = ("Mail.Send",)
    async with ManagedIdentityCredential() as credential:
        issued = (await credential.get_token("https://graph.microsoft.com/.default")).token
    assert verify_token(issued).roles == ("Mail.Send",)
    assert [t.roles for t in mi_env.issued] == [("Mail.Send",)]
    async with httpx.AsyncClient(base_url=f"{graph.graph_url}/users/{SENDER}") as http:
        auth = {"Authorization": f"Bearer {issued}"}
        assert (await http.post("/messages", json=MESSAGE, headers=auth)).status_code == 403
        sent = await http.post("/sendMail", json={"message": MESSAGE}, headers=auth)
        assert sent.status_code == 202


async def test_roles_default_to_the_gateways_and_can_be_changed_remotely(
    identity: IdentityStandIn,
) -> None:
    assert GATEWAY_APP_ROLES == ("Mail.ReadWrite", "Mail.Send")
    assert identity.app_roles == GATEWAY_APP_ROLES
    await asyncio.to_thread(RemoteAdmin(identity.url).configure, appRoles=["Mail.Read"])
    assert list(identity.app_roles) == ["Mail.Read"]
