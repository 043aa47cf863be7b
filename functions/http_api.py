"""HTTP adapters: parse the request, call the core, render JSON or problem+json. Nothing else."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

from functions.problems import PROBLEM_CONTENT_TYPE, Problem, internal_problem, problem_for
from mailgw import telemetry
from mailgw.auth import ROLE_READ, ROLE_READ_ALL, ROLE_REPLAY, ROLE_SEND, Caller
from mailgw.errors import GatewayError, StorageUnreachable
from mailgw.intake import STATUS_PATH
from mailgw.operations import not_found
from mailgw.services import services
from mailgw.settings import current_settings

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger("mailgw.http")


def _level(with_keys: func.AuthLevel) -> func.AuthLevel:
    """With MAILGW_AUTH=entra the host lets every call through and the app checks the token."""
    return func.AuthLevel.ANONYMOUS if current_settings().api_auth == "entra" else with_keys


async def _authorize(req: func.HttpRequest, *any_of: str) -> Caller | None:
    return await services().api_auth.authorize(req.headers.get("authorization"), *any_of)


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


@bp.route(route="v1/messages", methods=["POST"], auth_level=_level(func.AuthLevel.FUNCTION))
async def submit_message(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    async def call() -> func.HttpResponse:
        caller = await _authorize(req, ROLE_SEND)
        result = await services().intake.submit(
            req.get_body(),
            content_type=req.headers.get("content-type"),
            traceparent=req.headers.get("traceparent"),
            idempotency_key=req.headers.get("idempotency-key"),
            owner=caller.app_id if caller is not None else None,
        )
        telemetry.set_message_id(result.id)
        if caller is not None:  # who sent what, for audit (Entra ID mode)
            log.info("message %s accepted from app %s", result.id, caller.app_id)
        body = result.model_dump(mode="json", by_alias=True)
        return _json(202, body, {"Location": result.status_url})

    with telemetry.http_request("POST", "/api/v1/messages", context.trace_context) as request:
        response = await _respond(req, call)
        request.responded(response.status_code)
    return response


@bp.route(route="v1/messages/{id}", methods=["GET"], auth_level=_level(func.AuthLevel.FUNCTION))
async def message_status(req: func.HttpRequest) -> func.HttpResponse:
    async def call() -> func.HttpResponse:
        caller = await _authorize(req, ROLE_READ, ROLE_SEND, ROLE_READ_ALL)
        message_id = req.route_params.get("id", "")
        viewer = caller.viewer() if caller is not None else None
        record = await services().operations.find(message_id, viewer)
        if record is None:
            raise not_found(message_id)
        return _json(200, record.public(datetime.now(UTC)))

    return await _respond(req, call)


@bp.route(
    route="v1/messages/{id}/replay", methods=["POST"], auth_level=_level(func.AuthLevel.ADMIN)
)
async def replay_message(req: func.HttpRequest) -> func.HttpResponse:
    async def call() -> func.HttpResponse:
        caller = await _authorize(req, ROLE_REPLAY)
        viewer = caller.viewer() if caller is not None else None
        record = await services().operations.replay(req.route_params.get("id", ""), viewer)
        body = record.public(datetime.now(UTC))
        return _json(202, body, {"Location": STATUS_PATH.format(id=record.id)})

    return await _respond(req, call)


@bp.route(route="v1/health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    async def call() -> func.HttpResponse:
        svc = services()
        try:
            depth = await svc.queue.ping()
        except Exception as exc:  # any storage failure means "not healthy", with the reason
            raise StorageUnreachable(f"The queue is not reachable: {type(exc).__name__}") from exc
        return _json(
            200,
            {
                "status": "ok",
                "queue": svc.settings.queue,
                "transport": svc.settings.transport,
                "depth": depth,
            },
        )

    return await _respond(req, call)
