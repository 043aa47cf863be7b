"""The dev host's parts in-process: indexing, response conversion, back-off, message decoding."""

from __future__ import annotations

import itertools
from pathlib import Path

import azure.functions as func
import pytest
from devhost_support import APPS

from devhost.app_loader import AppLoadError, load_app
from devhost.http_server import to_web_response
from devhost.queue_listener import Backoff, decode_body


@pytest.mark.usefixtures("isolated_import")
def test_indexing_uses_the_apps_metadata() -> None:
    loaded = load_app(APPS / "http_app", {"AzureWebJobs.disabled_function.Disabled": "true"})
    http = {f.name: f for f in loaded.http}
    assert http["items"].methods == {"GET", "PUT"}
    assert http["items"].route.template == "items/{id:int}/{action?}"
    assert http["items"].auth_level == "function"  # inherited from FunctionApp(http_auth_level=)
    assert http["hello"].auth_level == "anonymous"
    assert http["hello"].is_async and not http["echo"].is_async
    assert http["echo"].trigger_arg == "request"
    assert http["with_context"].wants_context
    assert http["files"].methods >= {"GET", "POST", "DELETE"}  # no methods: all of them
    assert http["default_route"].route.template == "default_route"
    skipped = {s.name: s.reason for s in loaded.skipped}
    assert "disabled" in skipped["disabled_function"]
    assert [t.schedule_text for t in loaded.timers] == ["0 */5 * * * *"]


@pytest.mark.usefixtures("isolated_import")
def test_queue_names_are_resolved_and_lowercased() -> None:
    environ = {"RECORD_QUEUE": "Records", "SLOW_QUEUE": "slow-one", "FAILING_QUEUE": "a--b"}
    loaded = load_app(APPS / "queue_app", environ)
    queues = {f.name: f for f in loaded.queues}
    assert queues["recorder"].queue_name == "records"
    assert queues["recorder"].connection == "AzureWebJobsStorage"
    skipped = {s.name: s.reason for s in loaded.skipped}
    assert "'a--b' is not a valid queue name" in skipped["always_fails"]
    assert "'%PREPOISONED_QUEUE%' does not resolve" in skipped["prepoisoned"]


@pytest.mark.usefixtures("isolated_import")
def test_an_app_that_fails_to_import_is_reported(tmp_path: Path) -> None:
    (tmp_path / "function_app.py").write_text("import no_such_module_here\n")
    with pytest.raises(AppLoadError, match="no_such_module_here"):
        load_app(tmp_path, {})
    (tmp_path / "function_app.py").write_text("x = 1\n")
    with pytest.raises(AppLoadError, match=r"no azure\.functions\.FunctionApp"):
        load_app(tmp_path, {})


def test_response_conversion_follows_the_worker() -> None:
    response = to_web_response(
        func.HttpResponse(
            '{"a": 1}', status_code=202, mimetype="application/json", headers={"Location": "/x"}
        )
    )
    assert response.status == 202
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Location"] == "/x"
    assert response.body == b'{"a": 1}'
    text = to_web_response(func.HttpResponse("hi", mimetype="text/html", charset="latin-1"))
    assert text.headers["Content-Type"] == "text/html; charset=latin-1"
    assert to_web_response("plain").headers["Content-Type"] == "text/plain; charset=utf-8"
    with pytest.raises(TypeError, match="NoneType"):
        to_web_response(None)
    with pytest.raises(TypeError, match="dict"):
        to_web_response({"a": 1})


def test_backoff_grows_randomized_to_the_maximum_and_resets() -> None:
    backoff = Backoff(0.1, 1.0)
    delays = [backoff.next_delay(found_messages=False) for _ in range(10)]
    assert delays[0] == pytest.approx(0.1)
    assert 0.18 <= delays[1] <= 0.22  # 100 ms + 100 ms ± 20 %
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert delays[-1] == 1.0
    assert backoff.next_delay(found_messages=True) == pytest.approx(0.1)


def test_message_bodies_decode_like_the_host() -> None:
    assert decode_body("aGVsbG8=", "base64") == b"hello"
    assert decode_body("aGVs\nbG8=", "base64") == b"hello"  # white space is ignored, as in .NET
    assert decode_body("hello", "none") == b"hello"
    for invalid in ("hello world", "aGVsbG8", "a$b="):
        with pytest.raises(ValueError, match=r"(?i)base64|padding|character|invalid"):
            decode_body(invalid, "base64")


@pytest.mark.parametrize("is_async", [True, False])
@pytest.mark.parametrize("enabled", [True, False])
async def test_the_trace_context_is_current_like_the_workers_with_opentelemetry(
    monkeypatch: pytest.MonkeyPatch, is_async: bool, enabled: bool
) -> None:
    """PYTHON_ENABLE_OPENTELEMETRY=true: as in the Python worker, the invocation's trace context
    (the caller's traceparent, here) is OpenTelemetry's current context in the function, async
    or run in the thread pool; without the setting nothing is attached."""
    from opentelemetry import trace

    from devhost.app_loader import FunctionSpec
    from devhost.invoke import Invoker

    if enabled:
        monkeypatch.setenv("PYTHON_ENABLE_OPENTELEMETRY", "true")
    else:
        monkeypatch.delenv("PYTHON_ENABLE_OPENTELEMETRY", raising=False)
    seen: list[trace.SpanContext] = []

    def record(req: object) -> str:
        seen.append(trace.get_current_span().get_span_context())
        return "ok"

    async def record_async(req: object) -> str:
        return record(req)

    spec = FunctionSpec(
        name="f",
        user_function=record_async if is_async else record,
        trigger_arg="req",
        trigger_type="httpTrigger",
        wants_context=False,
        directory=".",
    )
    invoker = Invoker()
    try:
        parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        await invoker.invoke(spec, None, reason="test", trace_parent=parent)
    finally:
        invoker.close()
    (context,) = seen
    if enabled:
        assert (context.trace_id, context.span_id) == (
            0x4BF92F3577B34DA6A3CE929D0E0E4736,
            0x00F067AA0BA902B7,
        )
        assert context.is_remote
    else:
        assert not context.is_valid
    assert not trace.get_current_span().get_span_context().is_valid  # detached afterwards
