"""Settings are read once and every bad value is a start-up error that names the setting."""

from __future__ import annotations

import dataclasses

import pytest

from mailgw.settings import Settings, SettingsError, parse_sender_list
from mailgw.storage import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    StorageConfigError,
    StorageConnection,
)

MiB = 1024 * 1024


# --- Settings.from_env --------------------------------------------------------------------------


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.queue == "mail-outbound"
    assert settings.poison_queue == "mail-outbound-poison"
    assert settings.allowed_senders == ()
    assert settings.transport == "graph"
    assert settings.outbox_dir == "outbox"
    assert settings.graph_endpoint == "https://graph.microsoft.com"
    assert settings.payload_container == "mail-payloads"
    assert settings.max_request_bytes == 100 * MiB
    assert settings.max_attachment_bytes == 150 * MiB
    assert settings.max_attempts == 8
    assert settings.storage_connection_name == "AzureWebJobsStorage"


def test_blank_values_mean_the_default() -> None:
    env = {name: "  " for name in ("MAILGW_QUEUE", "MAILGW_TRANSPORT", "MAILGW_MAX_ATTEMPTS")}
    assert Settings.from_env(env) == Settings()


def test_reads_the_process_environment_when_no_mapping_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILGW_QUEUE", "from-os-environ")
    assert Settings.from_env().queue == "from-os-environ"


def test_every_setting_is_read() -> None:
    env = {
        "MAILGW_QUEUE": "mail-test",
        "MAILGW_ALLOWED_SENDERS": "NoReply@Contoso.com; *@fabrikam.com,",
        "MAILGW_TRANSPORT": "Outbox",
        "MAILGW_OUTBOX_DIR": "/tmp/outbox",
        "MAILGW_GRAPH_ENDPOINT": "http://127.0.0.1:8443/",
        "MAILGW_PAYLOAD_CONTAINER": "payloads",
        "MAILGW_MAX_REQUEST_BYTES": "1000",
        "MAILGW_MAX_ATTACHMENT_BYTES": " 2000 ",
        "MAILGW_MAX_ATTEMPTS": "3",
    }
    settings = Settings.from_env(env)
    assert settings.queue == "mail-test"
    assert settings.poison_queue == "mail-test-poison"
    assert settings.allowed_senders == ("noreply@contoso.com", "*@fabrikam.com")
    assert settings.transport == "outbox"
    assert settings.outbox_dir == "/tmp/outbox"
    assert settings.graph_endpoint == "http://127.0.0.1:8443"
    assert settings.payload_container == "payloads"
    assert (settings.max_request_bytes, settings.max_attachment_bytes) == (1000, 2000)
    assert settings.max_attempts == 3


@pytest.mark.parametrize("transport", ["graph", "smtp", "relay", "outbox", "SMTP"])
def test_known_transports(transport: str) -> None:
    env = {"MAILGW_TRANSPORT": transport, "MAILGW_RELAY_HOST": "contoso-com.mail.protection.x"}
    assert Settings.from_env(env).transport == transport.lower()


def test_relay_needs_its_host() -> None:
    with pytest.raises(SettingsError, match="MAILGW_RELAY_HOST is required"):
        Settings.from_env({"MAILGW_TRANSPORT": "relay"})


@pytest.mark.parametrize("name", ["MAILGW_SMTP_PORT", "MAILGW_RELAY_PORT"])
def test_port_465_is_refused_with_the_reason(name: str) -> None:
    with pytest.raises(SettingsError, match=r"465.*not supported.*587 with STARTTLS"):
        Settings.from_env({name: "465"})


def test_smtp_connections_are_capped_at_exchanges_limit() -> None:
    with pytest.raises(SettingsError, match="MAILGW_SMTP_CONNECTIONS must be 1-3"):
        Settings.from_env({"MAILGW_SMTP_CONNECTIONS": "4"})


@pytest.mark.parametrize("value", ["sendgrid", "graph,smtp", "ses"])
def test_unknown_transport(value: str) -> None:
    with pytest.raises(SettingsError, match="MAILGW_TRANSPORT") as caught:
        Settings.from_env({"MAILGW_TRANSPORT": value})
    assert "graph, smtp, relay, outbox" in str(caught.value)
    assert repr(value) in str(caught.value)


#: values each setting refuses, the error naming the setting
MALFORMED: dict[str, list[str]] = {
    "MAILGW_QUEUE": [
        "Mail-Outbound",  # upper case
        "ab",  # too short
        "a" * 57,  # too long once "-poison" is appended (63 max)
        "-mail",
        "mail-",
        "mail--outbound",
        "mail_outbound",
        "mail.outbound",
    ],
    "MAILGW_ALLOWED_SENDERS": [
        "noreply",
        "noreply@",
        "@contoso.com",
        "a@b@contoso.com",
        "*@",
        "*@*.contoso.com",
        "no*reply@contoso.com",
        "noreply@contoso.com, oops",
    ],
    # https only, unless loopback
    "MAILGW_GRAPH_ENDPOINT": [
        "http://graph.microsoft.com",
        "http://10.0.0.5",
        "ftp://graph.microsoft.com",
        "graph.microsoft.com",
        # Look like loopback by prefix, but are other hosts:
        "http://localhost.evil.example",
        "http://127.0.0.1.nip.io",
        "http://localhost@evil.example",
    ],
}


@pytest.mark.parametrize(
    ("name", "value"), [(name, value) for name, values in MALFORMED.items() for value in values]
)
def test_a_malformed_value_is_refused_naming_its_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_longest_queue_name_that_leaves_room_for_poison() -> None:
    name = "a" * 56
    assert len(Settings.from_env({"MAILGW_QUEUE": name}).poison_queue) == 63


def test_sender_list_parsing() -> None:
    assert parse_sender_list("") == ()
    assert parse_sender_list(" , ; ") == ()
    assert parse_sender_list("A@X.com;*@Y.com , b@z.com") == ("a@x.com", "*@y.com", "b@z.com")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("https://graph.microsoft.us/", "https://graph.microsoft.us"),
        ("https://microsoftgraph.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://127.0.0.1:5000/", "http://127.0.0.1:5000"),
    ],
)
def test_graph_endpoint_accepted(value: str, expected: str) -> None:
    assert Settings.from_env({"MAILGW_GRAPH_ENDPOINT": value}).graph_endpoint == expected


@pytest.mark.parametrize(
    "name", ["MAILGW_MAX_REQUEST_BYTES", "MAILGW_MAX_ATTACHMENT_BYTES", "MAILGW_MAX_ATTEMPTS"]
)
@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("lots", "whole number"),
        ("1.5", "whole number"),
        ("10MB", "whole number"),
        ("-1", "positive"),
        ("0", "positive"),
    ],
)
def test_invalid_numbers(name: str, value: str, says: str) -> None:
    with pytest.raises(SettingsError, match=name) as caught:
        Settings.from_env({name: value})
    assert says in str(caught.value)


def test_settings_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().queue = "x"  # type: ignore[misc]


# --- StorageConnection --------------------------------------------------------------------------


def test_connection_string() -> None:
    value = (
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;"
        "EndpointSuffix=core.windows.net"
    )
    connection = StorageConnection.from_settings(
        "AzureWebJobsStorage", {"AzureWebJobsStorage": value}
    )
    assert connection.connection_string == value
    assert connection.service_uris is None
    assert connection.credential_kind is None


@pytest.mark.parametrize(
    "value",
    ["UseDevelopmentStorage=true", "usedevelopmentstorage=TRUE", " UseDevelopmentStorage = true "],
)
def test_use_development_storage_is_expanded(value: str) -> None:
    connection = StorageConnection.from_settings(
        "AzureWebJobsStorage", {"AzureWebJobsStorage": value}
    )
    expanded = connection.connection_string
    assert expanded is not None
    assert "UseDevelopmentStorage" not in expanded
    assert f"AccountName={AZURITE_ACCOUNT};" in expanded
    assert f"AccountKey={AZURITE_KEY};" in expanded
    assert f"BlobEndpoint=http://127.0.0.1:10000/{AZURITE_ACCOUNT};" in expanded
    assert f"QueueEndpoint=http://127.0.0.1:10001/{AZURITE_ACCOUNT};" in expanded
    assert f"TableEndpoint=http://127.0.0.1:10002/{AZURITE_ACCOUNT};" in expanded


def test_identity_based_connection() -> None:
    env = {
        "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net/",
        "AzureWebJobsStorage__blobServiceUri": "https://acct.blob.core.windows.net",
        "AzureWebJobsStorage__tableServiceUri": "https://acct.table.core.windows.net",
        "AzureWebJobsStorage__credential": "ManagedIdentity",
        "AzureWebJobsStorage__clientId": " 00000000-0000-0000-0000-000000000001 ",
    }
    connection = StorageConnection.from_settings("AzureWebJobsStorage", env)
    assert connection.connection_string is None
    assert connection.service_uri("queue") == "https://acct.queue.core.windows.net"
    assert connection.service_uri("blob") == "https://acct.blob.core.windows.net"
    assert connection.service_uri("table") == "https://acct.table.core.windows.net"
    assert connection.credential_kind == "managedidentity"
    assert connection.client_id == "00000000-0000-0000-0000-000000000001"


def test_identity_based_connection_without_client_id_uses_system_identity() -> None:
    env = {"AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net"}
    connection = StorageConnection.from_settings("AzureWebJobsStorage", env)
    assert connection.client_id is None
    assert connection.credential_kind is None
    with pytest.raises(StorageConfigError, match="AzureWebJobsStorage__blobServiceUri"):
        connection.service_uri("blob")


def test_account_name_fills_in_every_service() -> None:
    env = {"AzureWebJobsStorage__accountName": "acct"}
    connection = StorageConnection.from_settings("AzureWebJobsStorage", env)
    assert connection.service_uris == {
        "queue": "https://acct.queue.core.windows.net",
        "blob": "https://acct.blob.core.windows.net",
        "table": "https://acct.table.core.windows.net",
    }


def test_connection_string_wins_over_identity_settings() -> None:
    env = {
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "AzureWebJobsStorage__queueServiceUri": "https://acct.queue.core.windows.net",
    }
    connection = StorageConnection.from_settings("AzureWebJobsStorage", env)
    assert connection.connection_string is not None
    assert connection.service_uris is None


@pytest.mark.parametrize("env", [{}, {"AzureWebJobsStorage": "   "}, {"Other": "x"}])
def test_nothing_configured_names_the_settings(env: dict[str, str]) -> None:
    with pytest.raises(StorageConfigError) as caught:
        StorageConnection.from_settings("AzureWebJobsStorage", env)
    message = str(caught.value)
    assert "'AzureWebJobsStorage' is not configured" in message
    assert "UseDevelopmentStorage=true" in message
    assert "AzureWebJobsStorage__queueServiceUri" in message


def test_other_connection_names_are_honoured() -> None:
    env = {"MailStorage__queueServiceUri": "https://m.queue.core.windows.net"}
    assert StorageConnection.from_settings("MailStorage", env).service_uri("queue") == (
        "https://m.queue.core.windows.net"
    )
    with pytest.raises(StorageConfigError, match="'MailStorage' is not configured"):
        StorageConnection.from_settings("MailStorage", {"AzureWebJobsStorage": "x"})


def test_settings_storage_reads_the_same_environment() -> None:
    settings = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    connection = settings.storage()
    assert connection.name == "AzureWebJobsStorage"
    assert connection.connection_string is not None
    assert AZURITE_ACCOUNT in connection.connection_string
    with pytest.raises(StorageConfigError, match="AzureWebJobsStorage"):
        Settings.from_env({}).storage()
