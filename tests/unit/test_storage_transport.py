"""The storage and Event Grid clients look up proxy settings only where a proxy is configured."""

from __future__ import annotations

import os
from typing import Any

import pytest
from azure.core.pipeline.transport import AioHttpTransport

from mailgw.events.sinks import EventGridSink
from mailgw.storage import (
    StorageConnection,
    azurite_connection_string,
    blob_service_client,
    queue_client,
    table_service_client,
    use_env_settings,
)


def _transport(client: Any) -> AioHttpTransport:
    """The azure-core aiohttp transport under a client, however deep its SDK wraps it."""
    todo, seen = [client], set()
    while todo:
        item = todo.pop()
        if isinstance(item, AioHttpTransport):
            return item
        if id(item) in seen:
            continue
        seen.add(id(item))
        todo.extend(
            getattr(item, name)
            for name in ("_client", "_pipeline", "_transport")
            if hasattr(item, name)
        )
    raise AssertionError(f"no aiohttp transport under {type(client).__name__}")


def _clients() -> list[Any]:
    connection = StorageConnection(name="t", connection_string=azurite_connection_string())
    return [
        queue_client(connection, "mail"),
        blob_service_client(connection),
        table_service_client(connection).get_table_client("state"),
    ]


PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "Https_Proxy")


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


def test_without_a_proxy_no_client_looks_up_the_environment_per_request(no_proxy: None) -> None:
    for client in _clients():
        assert _transport(client)._use_env_settings is False, type(client).__name__


@pytest.mark.parametrize("name", PROXY_VARIABLES)
def test_a_proxy_variable_keeps_the_environment_lookup(
    no_proxy: None, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "http://proxy.contoso.com:3128")
    assert use_env_settings()
    for client in _clients():
        assert _transport(client)._use_env_settings is True, type(client).__name__


def test_an_empty_or_unused_proxy_variable_is_no_proxy(
    no_proxy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "")
    # aiohttp has no use for ALL_PROXY or NO_PROXY alone: nothing to look up per request
    monkeypatch.setenv("ALL_PROXY", "socks5://p:1")
    monkeypatch.setenv("NO_PROXY", "*")
    assert not use_env_settings()
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.setenv("https_proxy", "http://p:1")
    assert use_env_settings()


async def test_the_event_grid_client_follows_the_same_rule(no_proxy: None) -> None:
    from azure.identity.aio import ManagedIdentityCredential

    sink = EventGridSink(
        "https://topic.westeurope-1.eventgrid.azure.net/api/events",
        ManagedIdentityCredential(),
        timeout=5,
    )
    try:
        assert _transport(sink.client())._use_env_settings is False
    finally:
        await sink.close()
