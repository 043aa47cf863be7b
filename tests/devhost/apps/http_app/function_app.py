"""A throwaway HTTP app for the dev host's tests: one function per behaviour under test."""

import json
import os
import threading

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _json(payload: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")


@app.route(route="hello", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(f"hello {req.params.get('name', 'world')}")


@app.function_name("default_route")
@app.route(methods=["GET"])
def default_route_impl(req: func.HttpRequest) -> str:
    return "default route"


@app.route(route="items/{id:int}/{action?}", methods=["GET", "PUT"])
async def items(req: func.HttpRequest) -> func.HttpResponse:
    return _json(
        {"route": dict(req.route_params), "params": dict(req.params), "method": req.method}
    )


@app.route(route="items/special", methods=["GET"])
async def items_special(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"special": True})


@app.route(route="files/{*path}")
async def files(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route": dict(req.route_params)})


@app.route(route="guid/{id:guid}", methods=["GET"])
async def by_guid(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"id": req.route_params["id"]})


@app.route(route="post-only", methods=["POST"])
async def post_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(status_code=204)


@app.route(route="echo", methods=["POST"], trigger_arg_name="request")
def echo(request: func.HttpRequest) -> func.HttpResponse:
    """Sync on purpose: it must run in the worker thread pool, not on the event loop."""
    body = request.get_body()
    return _json(
        {
            "length": len(body),
            "contentType": request.headers.get("content-type"),
            "thread": threading.current_thread().name,
            "url": request.url,
            "custom": request.headers.get("x-custom"),
            "json_keys": len(request.get_json())
            if request.headers.get("content-type") == "application/json"
            else None,
        }
    )


@app.route(route="headers", methods=["GET"])
async def headers(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(
        b"\x00\x01binary",
        status_code=201,
        headers={"X-Result": "yes", "Set-Cookie": "a=1; Path=/"},
        mimetype="application/octet-stream",
    )


@app.route(route="boom", methods=["GET"])
async def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom on purpose")


@app.route(route="sync-boom", methods=["GET"])
def sync_boom(req: func.HttpRequest) -> func.HttpResponse:
    raise ValueError("sync boom on purpose")


@app.route(route="returns-none", methods=["GET"])
async def returns_none(req: func.HttpRequest) -> None:
    return None


@app.route(route="context", methods=["GET"])
async def with_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return _json(
        {
            "invocation_id": context.invocation_id,
            "function_name": context.function_name,
            "trace_parent": context.trace_context.trace_parent,
        }
    )


@app.route(route="settings", methods=["GET"])
async def settings(req: func.HttpRequest) -> func.HttpResponse:
    names = req.params.get("names", "").split(",")
    return _json({name: os.environ.get(name) for name in names})


@app.route(route="disabled", methods=["GET"])
async def disabled_function(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("should not run")


@app.timer_trigger(schedule="0 */5 * * * *", arg_name="timer", run_on_startup=False)
def every_five_minutes(timer: func.TimerRequest) -> None:
    """Runs on its schedule; does nothing, so a run during the tests changes nothing."""
