"""HTTP adapters: parse the request, call the core, render JSON or problem+json. Nothing else."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import azure.functions as func

from functions.openapi import openapi_document
from functions.problems import PROBLEM_CONTENT_TYPE, Problem, internal_problem, problem_for
from functions.routes import (
    BATCH,
    CANCEL,
    HEALTH,
    OPENAPI,
    REPLAY,
    STATUS,
    SUBMIT,
    USAGE,
    HealthReport,
    Route,
)
from mailgw import telemetry
from mailgw.auth import Caller
from mailgw.batch import BatchResult
from mailgw.errors import GatewayError, StorageUnreachable
from mailgw.intake import STATUS_PATH
from mailgw.models import SubmitResult
from mailgw.operations import not_found
from mailgw.pacing.limits import mailbox_address
from mailgw.services import services
from mailgw.settings import current_settings
from mailgw.state.record import Viewer

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger("mailgw.http")


_LEVELS = {
    "anonymous": func.AuthLevel.ANONYMOUS,
    "function": func.AuthLevel.FUNCTION,
    "admin": func.AuthLevel.ADMIN,
}


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[func.HttpResponse]])
R = TypeVar("R")


def _route(route: Route) -> Callable[[Handler], Handler]:
    """The blueprint's decorator for ``route`` (functions/routes.py). With MAILGW_AUTH=entra the
    host lets every call through and the app checks the token."""
    level = _LEVELS[route.auth]
    if current_settings().api_auth == "entra":
        level = func.AuthLevel.ANONYMOUS
    decorate: Callable[[Handler], Handler] = bp.route(
        route=route.route, methods=[route.method], auth_level=level
    )
    return decorate


async def _authorize(req: func.HttpRequest, route: Route) -> Caller | None:
    return await services().api_auth.authorize(req.headers.get("authorization"), *route.roles)


def _json(
    status: int,
    body: Any,
    headers: dict[str, str] | None = None,
    mimetype: str = "application/json",
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body), status_code=status, headers=headers, mimetype=mimetype, charset="utf-8"
    )


def _path(req: func.HttpRequest) -> str:
    """The request's path, never its full URL: a ``?code=`` Functions key must not reach a log
    line or a problem's ``instance``."""
    path: str = urlsplit(req.url).path
    return path


def _problem(problem: Problem, instance: str | None = None) -> func.HttpResponse:
    return _json(problem.status, problem.to_json(instance), problem.headers, PROBLEM_CONTENT_TYPE)


async def _respond(
    req: func.HttpRequest, call: Callable[[], Awaitable[func.HttpResponse]]
) -> func.HttpResponse:
    try:
        return await call()
    except GatewayError as error:
        return _problem(problem_for(error), instance=_path(req))
    except Exception:
        log.exception("unhandled error in %s %s", req.method, _path(req))
        return _problem(internal_problem())


async def _submitted(
    req: func.HttpRequest, caller: Caller | None, submit: Callable[..., Awaitable[R]]
) -> R:
    """Both POSTs pass the core (``Intake.submit``, ``BatchIntake.submit``) the same parts of a
    request; with Entra ID the calling app owns what it sends."""
    return await submit(
        req.get_body(),
        content_type=req.headers.get("content-type"),
        traceparent=req.headers.get("traceparent"),
        idempotency_key=req.headers.get("idempotency-key"),
        owner=caller.app_id if caller is not None else None,
    )


async def _traced(
    req: func.HttpRequest,
    context: func.Context,
    route: Route,
    call: Callable[[], Awaitable[func.HttpResponse]],
) -> func.HttpResponse:
    """``_respond`` within the HTTP server span, which records the status answered."""
    with telemetry.http_request(route.method, route.path, context.trace_context) as request:
        response = await _respond(req, call)
        request.responded(response.status_code)
    return response


@_route(SUBMIT)
async def submit_message(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    async def call() -> func.HttpResponse:
        caller = await _authorize(req, SUBMIT)
        result = await _submitted(req, caller, services().intake.submit)
        telemetry.set_message_id(result.id)
        if caller is not None:  # who sent what, for audit (Entra ID mode)
            log.info("message %s accepted from app %s", result.id, caller.app_id)
        body = result.model_dump(mode="json", by_alias=True)
        return _json(202, body, {"Location": result.status_url})

    return await _traced(req, context, SUBMIT, call)


@_route(BATCH)
async def submit_batch(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    async def call() -> func.HttpResponse:
        caller = await _authorize(req, BATCH)
        result = await _submitted(req, caller, services().batch.submit)
        if caller is not None:
            log.info("batch: %s message(s) accepted from app %s", result.accepted, caller.app_id)
        return _json(207, _batch_answer(result, _path(req)))

    return await _traced(req, context, BATCH, call)


def _batch_answer(result: BatchResult, instance: str) -> dict[str, Any]:
    """Each item's 202 body, or its problem (``instance``: the item, as a JSON pointer)."""
    results: list[dict[str, Any]] = []
    for index, item in enumerate(result.items):
        if isinstance(item, SubmitResult):
            results.append(item.model_dump(mode="json", by_alias=True))
        else:
            results.append(problem_for(item).to_json(f"{instance}#/messages/{index}"))
    accepted = result.accepted
    return {"accepted": accepted, "rejected": len(results) - accepted, "results": results}


@_route(STATUS)
async def message_status(req: func.HttpRequest) -> func.HttpResponse:
    async def call() -> func.HttpResponse:
        caller = await _authorize(req, STATUS)
        message_id = req.route_params.get("id", "")
        viewer = caller.viewer() if caller is not None else None
        record = await services().operations.find(message_id, viewer)
        if record is None:
            raise not_found(message_id)
        return _json(200, record.public(datetime.now(UTC)))

    return await _respond(req, call)


@_route(CANCEL)
async def cancel_message(req: func.HttpRequest) -> func.HttpResponse:
    async def call() -> func.HttpResponse:
        caller = await _authorize(req, CANCEL)
        # An app cancels its own messages only: Messages.ReadAll reads others', it does not
        # call them back. A Functions key is every caller at once (docs/trust-model.md).
        viewer = Viewer(caller.app_id) if caller is not None else None
        record = await services().operations.cancel(req.route_params.get("id", ""), viewer)
        if caller is not None:
            log.info("message %s canceled by app %s", record.id, caller.app_id)
        return _json(200, record.public(datetime.now(UTC)))

    return await _respond(req, call)


@_route(REPLAY)
async def replay_message(req: func.HttpRequest) -> func.HttpResponse:
    async def call() -> func.HttpResponse:
        caller = await _authorize(req, REPLAY)
        viewer = caller.viewer() if caller is not None else None
        record = await services().operations.replay(req.route_params.get("id", ""), viewer)
        body = record.public(datetime.now(UTC))
        return _json(202, body, {"Location": STATUS_PATH.format(id=record.id)})

    return await _respond(req, call)


@_route(USAGE)
async def mailbox_usage(req: func.HttpRequest) -> func.HttpResponse:
    async def call() -> func.HttpResponse:
        await _authorize(req, USAGE)
        address = mailbox_address(req.route_params.get("address", ""))
        usage = await services().pacer.usage(address)
        return _json(200, usage.model_dump(mode="json", by_alias=True))

    return await _respond(req, call)


@_route(HEALTH)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    async def call() -> func.HttpResponse:
        svc = services()
        try:
            depth = await svc.queue.ping()
        except Exception as exc:  # any storage failure means "not healthy", with the reason
            raise StorageUnreachable(f"The queue is not reachable: {type(exc).__name__}") from exc
        report = HealthReport(
            status="ok", queue=svc.settings.queue, transport=svc.settings.transport, depth=depth
        )
        return _json(200, report.model_dump(mode="json"))

    return await _respond(req, call)


@_route(OPENAPI)
async def openapi(req: func.HttpRequest) -> func.HttpResponse:
    async def call() -> func.HttpResponse:
        return _json(200, openapi_document())

    return await _respond(req, call)
