"""A throwaway timer app for the dev host's tests.

Every function appends one JSON line per invocation to ``$DEVHOST_TEST_OUT/<function>.jsonl``, so
the tests (another process) can observe what ran, when, and with which TimerRequest.
"""

import json
import os
import threading
import time
from pathlib import Path

import azure.functions as func

app = func.FunctionApp()

_lock = threading.Lock()


def record(function: str, timer: func.TimerRequest, **extra: object) -> None:
    line = {
        "time": time.time(),
        "past_due": timer.past_due,
        "schedule_status": getattr(timer, "schedule_status", None),
        "schedule": getattr(timer, "schedule", None),
        "is_timer_request": isinstance(timer, func.TimerRequest),
        "thread": threading.current_thread().name,
        **extra,
    }
    with _lock, open(Path(os.environ["DEVHOST_TEST_OUT"]) / f"{function}.jsonl", "a") as out:
        out.write(json.dumps(line) + "\n")


@app.timer_trigger(schedule="* * * * * *", arg_name="timer", run_on_startup=False)
async def every_second(timer: func.TimerRequest) -> None:
    record("every_second", timer)


@app.timer_trigger(schedule="%YEARLY_SCHEDULE%", arg_name="timer", run_on_startup=True)
def on_startup(timer: func.TimerRequest) -> None:
    """Sync on purpose (runs in the worker thread pool); its schedule is an app setting."""
    record("on_startup", timer)


@app.timer_trigger(schedule="* * * * * *", arg_name="timer")
async def fails_every_second(timer: func.TimerRequest) -> None:
    """A failing invocation is logged and the schedule goes on."""
    record("fails_every_second", timer)
    raise RuntimeError("fails on purpose")


@app.timer_trigger(schedule="* * * * * *", arg_name="timer", run_on_startup=True)
async def disabled_timer(timer: func.TimerRequest) -> None:
    """Disabled through AzureWebJobs.disabled_timer.Disabled in the sample settings."""
    record("disabled_timer", timer)


@app.route(route="ping", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def ping(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("pong")
