"""Import ``function_app`` and discover its functions through azure.functions' own metadata.

The Python worker indexes an app by importing ``function_app.py`` and calling
``app.get_functions()``; doing the same here (and nothing more clever, such as scanning decorators)
means the dev host sees exactly the routes, queues and names the real host will see.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
from azure.functions.decorators.http import HttpTrigger
from azure.functions.decorators.queue import QueueTrigger
from azure.functions.decorators.timer import TimerTrigger

from devhost.routes import RouteTemplate, RouteTemplateError, compile_route
from devhost.settings import (
    SettingsError,
    is_function_disabled,
    lookup_setting,
    resolve_expressions,
)
from devhost.timers import (
    CronSchedule,
    IntervalSchedule,
    ScheduleError,
    parse_schedule,
    schedule_zone,
    uses_monitor,
)

log = logging.getLogger("devhost.loader")

DEFAULT_CONNECTION = "AzureWebJobsStorage"
ALL_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE"})
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


class AppLoadError(RuntimeError):
    """The function app could not be imported or indexed; the message says why."""


@dataclass(frozen=True)
class FunctionSpec:
    """What the dev host needs to call one user function."""

    name: str
    user_function: Callable[..., Any]
    trigger_arg: str
    trigger_type: str
    wants_context: bool
    directory: str

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)


@dataclass(frozen=True)
class HttpFunction(FunctionSpec):
    route: RouteTemplate = field(kw_only=True)
    methods: frozenset[str] = field(kw_only=True)
    auth_level: str = field(kw_only=True)


@dataclass(frozen=True)
class QueueFunction(FunctionSpec):
    queue_name: str = field(kw_only=True)
    connection: str = field(kw_only=True)


@dataclass(frozen=True)
class TimerFunction(FunctionSpec):
    schedule: CronSchedule | IntervalSchedule = field(kw_only=True)
    schedule_text: str = field(kw_only=True)
    run_on_startup: bool = field(kw_only=True)
    use_monitor: bool = field(kw_only=True)


@dataclass(frozen=True)
class SkippedFunction:
    """A function the dev host will not run, with the reason it says so at start-up."""

    name: str
    trigger_type: str
    reason: str


@dataclass
class LoadedApp:
    app: func.FunctionRegister
    module: ModuleType
    http: list[HttpFunction] = field(default_factory=list)
    queues: list[QueueFunction] = field(default_factory=list)
    timers: list[TimerFunction] = field(default_factory=list)
    skipped: list[SkippedFunction] = field(default_factory=list)

    @property
    def runnable(self) -> list[FunctionSpec]:
        return [*self.http, *self.queues, *self.timers]


def timers_enabled(environ: Mapping[str, str]) -> bool:
    """``DEVHOST_TIMERS=off`` (or false, 0, no) keeps every timer trigger from running."""
    value = (lookup_setting("DEVHOST_TIMERS", environ) or "").strip().lower()
    return value not in ("off", "false", "0", "no")


def find_function_app(module: ModuleType) -> func.FunctionRegister:
    """The module's FunctionApp: the attribute ``app``, else the only FunctionRegister instance."""
    candidate = getattr(module, "app", None)
    if isinstance(candidate, func.FunctionRegister):
        return candidate
    found = [v for v in vars(module).values() if isinstance(v, func.FunctionRegister)]
    unique = list({id(v): v for v in found}.values())
    if len(unique) == 1:
        return unique[0]
    if not unique:
        raise AppLoadError(f"{module.__file__} defines no azure.functions.FunctionApp instance")
    raise AppLoadError(f"{module.__file__} defines several FunctionApp instances; name one 'app'")


def import_app_module(app_dir: Path, module_name: str = "function_app") -> ModuleType:
    """Import ``<app_dir>/function_app.py`` as the worker does: the app folder first on sys.path."""
    if not (app_dir / f"{module_name}.py").exists():
        raise AppLoadError(f"{app_dir / (module_name + '.py')} not found (use --app-dir)")
    path = str(app_dir)
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
    sys.modules.pop(module_name, None)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except Exception as error:
        raise AppLoadError(f"importing {module_name}.py failed: {error!r}") from error


def _value(item: Any) -> str:
    """An azure.functions enum member or plain string as its JSON value (``AuthLevel.FUNCTION``)."""
    return str(getattr(item, "value", item))


def _wants_context(function: Callable[..., Any]) -> bool:
    """The worker passes the invocation context to a parameter named ``context``."""
    try:
        return "context" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def _check_bindings(function: func.Function, trigger_arg: str, name: str) -> None:
    """Warn about bindings the dev host cannot supply; the call would fail without them."""
    for binding in function.get_bindings():
        if binding.name in (trigger_arg, "$return") and binding.type in (
            "httpTrigger",
            "http",
            "queueTrigger",
            "timerTrigger",
        ):
            continue
        log.warning(
            "Function '%s': the dev host does not provide the %s binding '%s'",
            name,
            binding.type,
            binding.name,
        )


def _index(function: func.Function, environ: Mapping[str, str], route_prefix: str) -> Any:
    """Turn one indexed function into an Http-, Queue- or TimerFunction, or a SkippedFunction."""
    name = function.get_function_name() or function.get_user_function().__name__
    trigger = function.get_trigger()
    trigger_type = getattr(trigger, "type", None) or type(trigger).__name__
    if is_function_disabled(name, environ):
        return SkippedFunction(name, trigger_type, "disabled by AzureWebJobs.<name>.Disabled")
    user_function = function.get_user_function()
    common: dict[str, Any] = {
        "name": name,
        "user_function": user_function,
        "trigger_type": trigger_type,
        "wants_context": _wants_context(user_function),
        "directory": str(Path(inspect.getfile(user_function)).parent),
    }
    try:
        if isinstance(trigger, HttpTrigger):
            _check_bindings(function, trigger.name, name)
            route = resolve_expressions(trigger.route or name, environ)
            methods = frozenset(_value(m).upper() for m in trigger.methods or ()) or ALL_METHODS
            auth_level = _value(trigger.auth_level or "function").lower()
            return HttpFunction(
                **common,
                trigger_arg=trigger.name,
                route=compile_route(route, route_prefix),
                methods=methods,
                auth_level=auth_level,
            )
        if isinstance(trigger, QueueTrigger):
            _check_bindings(function, trigger.name, name)
            queue_name = resolve_expressions(trigger.queue_name, environ).lower()
            if not _QUEUE_NAME.match(queue_name):
                raise SettingsError(f"'{queue_name}' is not a valid queue name")
            return QueueFunction(
                **common,
                trigger_arg=trigger.name,
                queue_name=queue_name,
                connection=trigger.connection or DEFAULT_CONNECTION,
            )
        if isinstance(trigger, TimerTrigger):
            if not timers_enabled(environ):
                return SkippedFunction(
                    name, trigger_type, "timer triggers are off (DEVHOST_TIMERS=off)"
                )
            _check_bindings(function, trigger.name, name)
            text = resolve_expressions(trigger.schedule, environ)
            schedule = parse_schedule(text, schedule_zone(environ))
            return TimerFunction(
                **common,
                trigger_arg=trigger.name,
                schedule=schedule,
                schedule_text=text,
                run_on_startup=bool(trigger.run_on_startup),
                use_monitor=uses_monitor(schedule, trigger.use_monitor),
            )
    except (SettingsError, RouteTemplateError, ScheduleError) as error:
        return SkippedFunction(name, trigger_type, f"indexing failed: {error}")
    return SkippedFunction(
        name, trigger_type, f"the dev host does not run {trigger_type} functions"
    )


def load_app(app_dir: Path, environ: Mapping[str, str], route_prefix: str = "api") -> LoadedApp:
    """Import the app in ``app_dir`` and index its functions (settings must already be applied)."""
    module = import_app_module(app_dir.resolve())
    app = find_function_app(module)
    try:
        functions = app.get_functions()
    except ValueError as error:  # e.g. two functions with one name: the worker fails the same way
        raise AppLoadError(f"indexing the function app failed: {error}") from error
    loaded = LoadedApp(app=app, module=module)
    for function in functions:
        entry = _index(function, environ, route_prefix)
        if isinstance(entry, HttpFunction):
            loaded.http.append(entry)
        elif isinstance(entry, QueueFunction):
            loaded.queues.append(entry)
        elif isinstance(entry, TimerFunction):
            loaded.timers.append(entry)
        else:
            loaded.skipped.append(entry)
    return loaded
