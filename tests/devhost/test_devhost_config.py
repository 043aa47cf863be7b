"""host.json, its ``AzureFunctionsJobHost__`` overrides, TimeSpans, local settings (no process)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from devhost.hostjson import HostConfig, QueueOptions, apply_overrides, parse_timespan
from devhost.settings import (
    SettingsError,
    apply_settings,
    is_function_disabled,
    load_local_settings,
    resolve_expressions,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("00:00:02", timedelta(seconds=2)),
        ("00:01:00", timedelta(minutes=1)),
        ("00:00:00.200", timedelta(milliseconds=200)),
        ("00:00:00.5", timedelta(milliseconds=500)),
        ("00:00:00.0000001", timedelta(microseconds=0.1)),
        ("01:02", timedelta(hours=1, minutes=2)),
        ("1.02:03:04", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("-00:00:01", timedelta(seconds=-1)),
        ("2", timedelta(days=2)),  # as in .NET: a bare number is days
        (" 00:00:03 ", timedelta(seconds=3)),
    ],
)
def test_parse_timespan(text: str, expected: timedelta) -> None:
    assert parse_timespan(text) == expected


@pytest.mark.parametrize("text", ["", "2s", "00:60:00", "24:00:00", "00:00:60", "1:2:3:4", "abc"])
def test_parse_timespan_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="TimeSpan"):
        parse_timespan(text)


def test_overrides_match_keys_case_insensitively_and_keep_types() -> None:
    config: dict[str, Any] = {
        "version": "2.0",
        "extensions": {
            "queues": {"maxDequeueCount": 5, "maxPollingInterval": "00:00:02", "enabled": True}
        },
    }
    env = {
        "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": "3",
        "azurefunctionsjobhost__EXTENSIONS__Queues__MAXPOLLINGINTERVAL": "00:00:00.100",
        "AzureFunctionsJobHost__extensions__queues__enabled": "False",
        "AzureFunctionsJobHost__extensions__http__routePrefix": "",
        "AzureFunctionsJobHost__extensions__queues__batchSize": "8",
        "Unrelated": "1",
    }
    result = apply_overrides(config, env)
    assert result["extensions"]["queues"] == {
        "maxDequeueCount": 3,
        "maxPollingInterval": "00:00:00.100",
        "enabled": False,
        "batchSize": 8,  # a new key: the integer is inferred
    }
    assert result["extensions"]["http"] == {"routePrefix": ""}  # a new section
    assert config["extensions"]["queues"]["maxDequeueCount"] == 5  # the input is not mutated


@pytest.mark.parametrize(
    ("current", "raw"),
    [(5, "three"), (True, "maybe"), ({"a": 1}, "x")],
)
def test_overrides_reject_values_of_the_wrong_type(current: object, raw: str) -> None:
    env = {"AzureFunctionsJobHost__section__key": raw}
    with pytest.raises(ValueError, match="AzureFunctionsJobHost__section__key"):
        apply_overrides({"section": {"key": current}}, env)


def test_queue_defaults_are_the_hosts() -> None:
    options = QueueOptions.from_config({})
    assert options == QueueOptions(
        max_polling_interval=timedelta(minutes=1),
        visibility_timeout=timedelta(0),
        batch_size=16,
        new_batch_threshold=8,
        max_dequeue_count=5,
        message_encoding="base64",
    )
    assert (
        QueueOptions.from_config({"extensions": {"queues": {"batchSize": 5}}}).new_batch_threshold
        == 2
    )


@pytest.mark.parametrize(
    "queues",
    [
        {"batchSize": 33},
        {"batchSize": 0},
        {"maxDequeueCount": 0},
        {"maxPollingInterval": "00:00:00.050"},
        {"messageEncoding": "utf8"},
        {"visibilityTimeout": "-00:00:01"},
    ],
)
def test_queue_options_outside_the_hosts_limits_are_errors(queues: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"host\.json"):
        QueueOptions.from_config({"extensions": {"queues": queues}})


def test_host_config_load_reads_the_file_then_the_environment(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text(
        json.dumps(
            {
                "version": "2.0",
                "extensions": {
                    "http": {"routePrefix": "/gateway/"},
                    "queues": {"messageEncoding": "None", "visibilityTimeout": "00:00:30"},
                },
            }
        )
    )
    env = {"AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:05"}
    config = HostConfig.load(tmp_path, env)
    assert config.http.route_prefix == "gateway"
    assert config.queues.message_encoding == "none"
    assert config.queues.visibility_timeout == timedelta(seconds=5)
    assert HostConfig.load(tmp_path / "missing", {}).http.route_prefix == "api"


def test_local_settings_copied_from_sample_then_read(tmp_path: Path) -> None:
    sample = {
        "IsEncrypted": False,
        "Values": {"A": "1", "N": 5, "B": True},
        "Host": {"LocalHttpPort": 7072},
    }
    (tmp_path / "local.settings.sample.json").write_text(json.dumps(sample))
    first = load_local_settings(tmp_path)
    assert first.created_from_sample
    assert first.values == {"A": "1", "N": "5", "B": "true"}
    assert first.host == {"LocalHttpPort": 7072}
    assert (tmp_path / "local.settings.json").exists()
    assert not load_local_settings(tmp_path).created_from_sample


def test_no_settings_file_and_no_sample_means_no_settings(tmp_path: Path) -> None:
    settings = load_local_settings(tmp_path)
    assert settings.values == {} and not settings.created_from_sample


def test_encrypted_settings_are_refused(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text('{"IsEncrypted": true, "Values": {}}')
    with pytest.raises(SettingsError, match="encrypted"):
        load_local_settings(tmp_path)


def test_environment_wins_over_settings() -> None:
    environ = {"KEEP": "env"}
    overridden = apply_settings({"KEEP": "file", "NEW": "file"}, environ)
    assert environ == {"KEEP": "env", "NEW": "file"}
    assert overridden == ["KEEP"]


def test_a_storage_connection_from_the_environment_wins_as_a_whole() -> None:
    """The file's connection string would be read before the environment's identity-based keys,
    so the environment's choice of form keeps out every key of that connection from the file."""
    environ = {"AzureWebJobsStorage__accountName": "prodaccount"}
    overridden = apply_settings(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "AzureWebJobsStorage__credential": "managedidentity",
            "MAILGW_QUEUE": "mail-outbound",
        },
        environ,
    )
    assert environ == {
        "AzureWebJobsStorage__accountName": "prodaccount",
        "MAILGW_QUEUE": "mail-outbound",
    }
    assert sorted(overridden) == ["AzureWebJobsStorage", "AzureWebJobsStorage__credential"]


def test_binding_expressions() -> None:
    environ = {"MAILGW_QUEUE": "mail-outbound", "Suffix": "x"}
    assert resolve_expressions("%MAILGW_QUEUE%", environ) == "mail-outbound"
    assert resolve_expressions("%mailgw_queue%-%SUFFIX%", environ) == "mail-outbound-x"
    assert resolve_expressions("plain", environ) == "plain"
    with pytest.raises(SettingsError, match="'%MISSING%' does not resolve"):
        resolve_expressions("%MISSING%", environ)


def test_functions_are_disabled_by_setting() -> None:
    assert is_function_disabled("f", {"AzureWebJobs.f.Disabled": "true"})
    assert is_function_disabled("f", {"AzureWebJobs__f__Disabled": "1"})
    assert not is_function_disabled("f", {"AzureWebJobs.f.Disabled": "false"})
    assert not is_function_disabled("f", {})
