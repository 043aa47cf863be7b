"""Queue-trigger adapter: hand the message to the core's delivery; the core decides its fate."""

from __future__ import annotations

import azure.functions as func

from mailgw.services import services

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.queue_trigger(arg_name="msg", queue_name="%MAILGW_QUEUE%", connection="AzureWebJobsStorage")
async def deliver(msg: func.QueueMessage) -> None:
    await services().delivery.handle(
        msg.get_body(), queue_message_id=msg.id or "", dequeue_count=msg.dequeue_count or 1
    )
