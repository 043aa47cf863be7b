"""Render a send request as an RFC 5322 message with Python's ``email`` package.

One renderer serves every MIME-speaking transport (outbox, SMTP, relay, and Graph's MIME send), so
the structure is decided once: text+html as multipart/alternative, inline images as
multipart/related beside the html, files as multipart/mixed. Bcc goes only in the SMTP envelope.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime

from mailgw.models import Attachment, Importance, Recipient, SendRequest
from mailgw.transports.errors import DeliveryError


def _address(recipient: Recipient) -> Address:
    # username/domain rather than addr_spec: the latter refuses non-ASCII local parts (SMTPUTF8).
    username, _, domain = recipient.address.rpartition("@")
    return Address(display_name=recipient.name or "", username=username, domain=domain)


def needs_smtputf8(request: SendRequest) -> bool:
    """A non-ASCII local part anywhere (IDNA keeps domains ASCII): the message and, over SMTP,
    the transaction need SMTPUTF8 (RFC 6531)."""
    return any(
        not r.address.isascii() for r in [request.sender, *request.recipients(), *request.reply_to]
    )


def message_id_for(message_id: str, sender: str) -> str:
    """A stable Message-ID: retries of one message carry the same id (receivers de-duplicate)."""
    domain = sender.rpartition("@")[2]
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        domain = "mailgw.invalid"
    return f"<{message_id}@{domain}>"


def render_mime(
    message_id: str,
    request: SendRequest,
    *,
    now: datetime | None = None,
    include_bcc: bool = False,
) -> EmailMessage:
    """The message as RFC 5322. ``include_bcc`` only for submission APIs that take the recipients
    from the headers (Graph's MIME send); SMTP and the outbox carry Bcc in the envelope only."""
    # 7-bit bodies (quoted-printable/Base64) unless the addresses need SMTPUTF8 anyway: any
    # server accepts them, no 8BITMIME needed.
    policy = (
        email_policy.SMTPUTF8
        if needs_smtputf8(request)
        else email_policy.SMTP.clone(cte_type="7bit")
    )
    msg = EmailMessage(policy=policy)
    msg["From"] = _address(request.sender)
    if request.to:
        msg["To"] = [_address(r) for r in request.to]
    if request.cc:
        msg["Cc"] = [_address(r) for r in request.cc]
    if include_bcc and request.bcc:
        msg["Bcc"] = [_address(r) for r in request.bcc]
    if request.reply_to:
        msg["Reply-To"] = [_address(r) for r in request.reply_to]
    msg["Subject"] = request.subject
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = message_id_for(message_id, request.sender.address)
    if request.importance is not Importance.normal:
        msg["Importance"] = request.importance.value.capitalize()
        if not any(name.lower() == "x-priority" for name in request.headers):
            msg["X-Priority"] = "1" if request.importance is Importance.high else "5"
    for name, value in request.headers.items():
        msg[name] = value

    if request.text:
        msg.set_content(request.text)
        if request.html:
            msg.add_alternative(request.html, subtype="html")
    else:
        msg.set_content(request.html or "", subtype="html")

    html_part = msg.get_body(("html",)) if request.html else None
    # Inline parts first (a stable sort keeps each kind's order): for an html-only message the
    # html part is the root, which a file would turn into multipart/mixed, and mixed cannot
    # become related.
    related = html_part is not None
    for attachment in sorted(request.attachments, key=lambda a: not (a.inline and related)):
        if attachment.inline and html_part is not None:
            _add(html_part, attachment, related=True)
        else:
            _add(msg, attachment, related=False)
    for part in msg.walk():
        if part is not msg:
            # EmailMessage adds MIME-Version to every sub-part; RFC 2045 wants it once.
            del part["MIME-Version"]
        if part.get_content_type() == "multipart/related":
            part.set_param("type", "text/html")  # RFC 2387: the type of the root part
    return msg


def rendered_bytes(message_id: str, request: SendRequest, *, include_bcc: bool = False) -> bytes:
    """The message as bytes on the wire. A message the renderer cannot write is a permanent
    failure with the renderer's reason: retrying would fail the same way every time."""
    try:
        return render_mime(message_id, request, include_bcc=include_bcc).as_bytes()
    except Exception as exc:  # the email package's errors have no common base class
        raise DeliveryError(
            "mailgw/render-failed",
            f"the message could not be rendered as MIME: {type(exc).__name__}: {exc}",
            transient=False,
            hint="the request passed validation but the renderer refused it: report it as a "
            "gateway bug, with the message id; fix the content and send it again",
        ) from exc


def _add(part: MIMEPart, attachment: Attachment, *, related: bool) -> None:
    maintype, _, subtype = attachment.content_type.partition("/")
    cid = f"<{attachment.content_id}>" if attachment.content_id else None
    add = part.add_related if related else part.add_attachment
    add(
        attachment.content(),
        maintype,
        subtype,
        filename=attachment.name,
        disposition="inline" if related or attachment.inline else "attachment",
        cid=cid,
    )


def envelope_recipients(request: SendRequest) -> list[str]:
    """RCPT TO: every recipient, Bcc included, each once."""
    unique: dict[str, str] = {}
    for recipient in request.recipients():
        unique.setdefault(recipient.address.lower(), recipient.address)
    return list(unique.values())
