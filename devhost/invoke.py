"""Call a user function the way the Python worker does, and log it the way the host does.

Async functions run on the host's event loop, sync ones in a thread pool sized like the worker's
(``PYTHON_THREADPOOL_THREAD_COUNT``). Each call is logged as ``Executing 'Functions.<name>'`` and
``Executed ... (Succeeded|Failed, Id=..., Duration=...ms)`` so local logs read like Azure's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import azure.functions as func
from azure.functions._abc import RetryContext, TraceContext

from devhost.app_loader import FunctionSpec

log = logging.getLogger("devhost.invoke")


class _TraceContext(TraceContext):
    def __init__(self, trace_parent: str, trace_state: str) -> None:
        self._parent, self._state = trace_parent, trace_state

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def trace_state(self) -> str:
        return self._state

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(RetryContext):
    """No retry policy runs in the dev host (nor does one apply to queue triggers in Azure)."""

    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class InvocationContext(func.Context):
    """The ``context`` argument: invocation id, function name and directory, trace context."""

    _thread_local = threading.local()

    def __init__(
        self,
        spec: FunctionSpec,
        invocation_id: str,
        trace_parent: str | None,
        trace_state: str | None = None,
    ) -> None:
        self._spec, self._id = spec, invocation_id
        parent = trace_parent or f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
        self._trace = _TraceContext(parent, trace_state or "")

    @property
    def invocation_id(self) -> str:
        return self._id

    @property
    def function_name(self) -> str:
        return self._spec.name

    @property
    def function_directory(self) -> str:
        return self._spec.directory

    @property
    def thread_local_storage(self) -> Any:
        return self._thread_local

    @property
    def trace_context(self) -> TraceContext:
        return self._trace

    @property
    def retry_context(self) -> RetryContext:
        return _RetryContext()


@contextlib.contextmanager
def worker_trace_context(trace: TraceContext) -> Iterator[None]:
    """What the Python worker does with ``PYTHON_ENABLE_OPENTELEMETRY=true``: the invocation's
    trace context is OpenTelemetry's current context while the function runs, so spans the app
    starts without a parent continue the caller's trace."""
    if os.environ.get("PYTHON_ENABLE_OPENTELEMETRY", "").strip().lower() != "true":
        yield
        return
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {"traceparent": trace.trace_parent, "tracestate": trace.trace_state}
    token = context.attach(TraceContextTextMapPropagator().extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


def _pool_size() -> int | None:
    value = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


class Invoker:
    """Runs invocations and tracks them, so shutdown can wait for the ones in flight."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=_pool_size(), thread_name_prefix="worker")
        self.in_flight = 0

    async def invoke(
        self,
        spec: FunctionSpec,
        trigger_value: Any,
        *,
        reason: str,
        details: str | None = None,
        trace_parent: str | None = None,
        trace_state: str | None = None,
        convert: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Call ``spec``'s function with its trigger argument; re-raise what it raises.

        ``convert`` turns the return value into what the trigger needs (an HTTP response); in the
        worker that conversion is part of the invocation, so its failure fails the invocation too.
        """
        invocation_id = str(uuid.uuid4())
        kwargs: dict[str, Any] = {spec.trigger_arg: trigger_value}
        context = InvocationContext(spec, invocation_id, trace_parent, trace_state)
        if spec.wants_context:
            kwargs["context"] = context
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", spec.name, reason, invocation_id)
        if details:
            log.info("Trigger Details: %s", details)
        self.in_flight += 1
        started = time.perf_counter()
        try:
            with worker_trace_context(context.trace_context):
                if spec.is_async:
                    result = await spec.user_function(**kwargs)
                else:
                    loop = asyncio.get_running_loop()
                    call = functools.partial(spec.user_function, **kwargs)
                    copied = contextvars.copy_context()  # the trace context, in the pool's thread
                    result = await loop.run_in_executor(self.executor, copied.run, call)
            if convert is not None:
                result = convert(result)
        except BaseException as error:
            elapsed = (time.perf_counter() - started) * 1000
            log.error(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%.0fms)",
                spec.name,
                invocation_id,
                elapsed,
                exc_info=error if isinstance(error, Exception) else None,
            )
            raise
        finally:
            self.in_flight -= 1
        elapsed = (time.perf_counter() - started) * 1000
        log.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%.0fms)",
            spec.name,
            invocation_id,
            elapsed,
        )
        return result

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
