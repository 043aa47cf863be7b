"""Poison queue and retention: record every failure, keep its payload, expire old records."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from mailgw.backlog import report_queues as report
from mailgw.services import services

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger("mailgw.maintenance")


@bp.queue_trigger(
    arg_name="msg", queue_name="%MAILGW_QUEUE%-poison", connection="AzureWebJobsStorage"
)
async def record_failure(msg: func.QueueMessage) -> None:
    await services().operations.record_failure(msg.get_body(), queue_message_id=msg.id or "")


@bp.timer_trigger(arg_name="timer", schedule="0 30 3 * * *", run_on_startup=False)
async def cleanup(timer: func.TimerRequest) -> None:
    """Daily at 03:30 UTC: records past MAILGW_RETENTION_DAYS (claims past
    MAILGW_IDEMPOTENCY_HOURS) are deleted with the payloads they kept."""
    deleted = await services().operations.cleanup()
    log.info("retention: deleted %d expired records", deleted)


@bp.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False)
async def sweep_poison_poison(timer: func.TimerRequest) -> None:
    """Every 5 minutes: a poison message whose recording failed maxDequeueCount times (storage was
    down) lands in <queue>-poison-poison; record it now, so no failure is lost."""
    swept = await services().operations.sweep_poison_poison()
    if swept:
        log.warning("recorded %d failure(s) from the -poison-poison queue", swept)


@bp.timer_trigger(arg_name="timer", schedule="0 * * * * *", run_on_startup=False)
async def report_queues(timer: func.TimerRequest) -> None:
    """Every minute: each queue's depth and its oldest message's age, as the mailgw.queue.depth
    and mailgw.queue.oldest_age gauges the alerts watch (docs/telemetry.md). Reads nothing when
    telemetry is off."""
    await report(services().queue, datetime.now(UTC))
