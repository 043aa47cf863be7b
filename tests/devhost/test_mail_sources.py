"""The mail viewer's listing (devhost/mail_sources.py): every message the outbox holds, newest
first, whatever order the files are found in."""

from __future__ import annotations

import os
from email.message import EmailMessage
from pathlib import Path

from devhost.mail_sources import MailSources


def write_eml(outbox: Path, name: str, subject: str, mtime: float) -> None:
    message = EmailMessage()
    message["From"] = "noreply@contoso.com"
    message["To"] = "someone@example.com"
    message["Subject"] = subject
    message.set_content("hello")
    path = outbox / f"{name}.eml"
    path.write_bytes(message.as_bytes())
    os.utime(path, (mtime, mtime))


async def test_the_newest_message_is_listed_first(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    # names sort the other way round from their times, so the order can only come from the times
    write_eml(outbox, "a-newest", "third", 1_800_000_300)
    write_eml(outbox, "b-oldest", "first", 1_800_000_100)
    write_eml(outbox, "c-middle", "second", 1_800_000_200)
    (outbox / ".d-being-written.eml").write_bytes(b"Subject: partial\r\n")
    sources = MailSources({"MAILGW_OUTBOX_DIR": str(outbox)})
    try:
        mails, problems = await sources.collect()
    finally:
        await sources.close()
    assert problems == []
    assert [mail.subject for mail in mails] == ["third", "second", "first"]
