"""Cost per request of the intake path against a bare ``send_message`` of the same payload.

Both run against one Azurite, interleaved request by request in the same run, so machine noise
hits both alike; the result is a ratio, not a time. Goal (issue 2): ``intake ratio`` at most 1.5.

    .venv/bin/python bench/intake.py [--requests 400]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devhost.azurite import Azurite  # noqa: E402
from mailgw.intake import Intake  # noqa: E402
from mailgw.queue import MailQueue, dumps  # noqa: E402
from mailgw.settings import Settings  # noqa: E402

PAYLOAD = {
    "from": "noreply@contoso.com",
    "to": ["a@example.com", {"address": "b@example.com", "name": "B"}],
    "cc": ["c@example.com"],
    "subject": "Your receipt #42",
    "text": "Thank you for your order. " * 20,
    "html": "<p>Thank you for your order.</p>" * 20,
    "attachments": [
        {
            "name": "r.txt",
            "contentType": "text/plain",
            "contentBase64": base64.b64encode(b"hello world\n" * 40).decode(),
        }
    ],
    "headers": {"X-Order-Id": "42"},
    "metadata": {"orderId": "42"},
}


async def measure(connection_string: str, requests: int) -> tuple[list[float], list[float]]:
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage": connection_string,
            "MAILGW_QUEUE": f"bench-intake-{uuid.uuid4().hex[:8]}",
            "MAILGW_ALLOWED_SENDERS": "*@contoso.com",
            "MAILGW_TRANSPORT": "outbox",
        }
    )
    queue = MailQueue(settings.storage(), settings.queue, settings.payload_container)
    intake = Intake(settings, queue)
    body = json.dumps(PAYLOAD).encode()
    client = queue.queue()
    # The baseline sends the very text intake enqueues, through the same Base64-encoding client
    # (the first submit also creates the queue).
    await intake.submit(body, content_type="application/json")
    sample = await client.receive_message()
    assert sample is not None
    baseline_text = sample.content
    assert len(dumps(json.loads(baseline_text))) == len(baseline_text)

    intake_times: list[float] = []
    bare_times: list[float] = []
    for i in range(requests + 50):
        first, second = (intake_times, bare_times) if i % 2 else (bare_times, intake_times)
        for bucket in (first, second):
            start = time.perf_counter()
            if bucket is intake_times:
                await intake.submit(body, content_type="application/json")
            else:
                await client.send_message(baseline_text)
            elapsed = time.perf_counter() - start
            if i >= 50:  # warm-up: connection pool, caches
                bucket.append(elapsed)
    await queue.close()
    return intake_times, bare_times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    with Azurite(project_dir=ROOT) as azurite:
        intake_times, bare_times = asyncio.run(measure(azurite.connection_string, args.requests))
    intake_ms = statistics.median(intake_times) * 1000
    bare_ms = statistics.median(bare_times) * 1000
    print(f"requests per side: {len(intake_times)}")
    print(f"bare send_message: median {bare_ms:.3f} ms")
    print(f"intake path:       median {intake_ms:.3f} ms (validate, policy, envelope, enqueue)")
    print(f"intake ratio: {intake_ms / bare_ms:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
