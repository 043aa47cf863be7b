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
    env_settings_option,
    queue_client,
    table_service_client,
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
    assert env_settings_option() == {"use_env_settings": True}
    for client in _clients():
        assert _transport(client)._use_env_settings is True, type(client).__name__


def test_an_empty_proxy_variable_is_no_proxy() -> None:
    assert env_settings_option({"HTTPS_PROXY": ""}) == {"use_env_settings": False}
    assert env_settings_option({"https_proxy": "http://p:1"}) == {"use_env_settings": True}
    # aiohttp has no use for ALL_PROXY or NO_PROXY alone: nothing to look up per request
    assert env_settings_option({"ALL_PROXY": "socks5://p:1", "NO_PROXY": "*"}) == {
        "use_env_settings": False
    }


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
