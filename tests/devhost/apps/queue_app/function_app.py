"""A throwaway queue app for the dev host's tests.

Every function appends one JSON line per invocation to ``$DEVHOST_TEST_OUT/<function>.jsonl``, so
the tests (another process) can observe what ran, when, and with which trigger metadata.
"""

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import azure.functions as func

app = func.FunctionApp()

_lock = threading.Lock()
_running = 0
_held_running = 0


def record(function: str, msg: func.QueueMessage, **extra: object) -> None:
    line = {
        "time": time.time(),
        "id": msg.id,
        "body_hex": msg.get_body().hex(),
        "dequeue_count": msg.dequeue_count,
        "pop_receipt": msg.pop_receipt,
        "insertion_time": msg.insertion_time.isoformat() if msg.insertion_time else None,
        "expiration_time": msg.expiration_time.isoformat() if msg.expiration_time else None,
        "time_next_visible": msg.time_next_visible.isoformat() if msg.time_next_visible else None,
        "type": type(msg).__name__,
        "is_func_queue_message": isinstance(msg, func.QueueMessage),
        **extra,
    }
    with _lock, open(Path(os.environ["DEVHOST_TEST_OUT"]) / f"{function}.jsonl", "a") as out:
        out.write(json.dumps(line) + "\n")


@app.queue_trigger(arg_name="msg", queue_name="%RECORD_QUEUE%", connection="AzureWebJobsStorage")
async def recorder(msg: func.QueueMessage) -> None:
    record("recorder", msg)


@app.queue_trigger(
    arg_name="message", queue_name="%FAILING_QUEUE%", connection="AzureWebJobsStorage"
)
def always_fails(message: func.QueueMessage) -> None:
    """Sync on purpose: failures from the thread pool must count like async ones."""
    record("always_fails", message, thread=threading.current_thread().name)
    raise RuntimeError("always fails on purpose")


@app.queue_trigger(
    arg_name="msg", queue_name="%PREPOISONED_QUEUE%", connection="AzureWebJobsStorage"
)
async def prepoisoned(msg: func.QueueMessage) -> None:
    """Its queue is filled before the host starts with a message already dequeued too often."""
    record("prepoisoned", msg)


@app.queue_trigger(arg_name="msg", queue_name="%SLOW_QUEUE%", connection="AzureWebJobsStorage")
async def slow(msg: func.QueueMessage) -> None:
    """Works for ``{"seconds": n}`` (the simulated work) and tracks how many run at once;
    ``"block": true`` holds the event loop the whole time (a blocking import, CPU work)."""
    global _running
    _running += 1
    record("slow", msg, phase="start", running=_running)
    work = json.loads(msg.get_body())
    try:
        if work.get("block"):
            time.sleep(float(work["seconds"]))  # noqa: ASYNC251 (blocking, on purpose)
        else:
            await asyncio.sleep(float(work["seconds"]))
    finally:
        _running -= 1
    record("slow", msg, phase="end")


@app.queue_trigger(arg_name="msg", queue_name="%HELD_QUEUE%", connection="AzureWebJobsStorage")
async def held(msg: func.QueueMessage) -> None:
    """Works on ``{"hold": name}`` until the test releases it (creates ``release-<name>`` in the
    output folder) and tracks how many run at once: concurrency observed without a clock."""
    global _held_running
    name = json.loads(msg.get_body())["hold"]
    release = Path(os.environ["DEVHOST_TEST_OUT"]) / f"release-{name}"
    _held_running += 1
    record("held", msg, phase="start", running=_held_running, hold=name)
    try:
        while True:
            if release.exists():
                break
            await asyncio.sleep(0.02)
    finally:
        _held_running -= 1
    record("held", msg, phase="end", hold=name)
