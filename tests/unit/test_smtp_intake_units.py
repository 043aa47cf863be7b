"""The SMTP intake's small parts: its settings, the rate limit, the login slowdown, IP lists."""

from __future__ import annotations

import pytest

from mailgw.settings import Settings, SettingsError
from mailgw.smtp_intake.clients import ClientError, SmtpClient, check_definition
from mailgw.smtp_intake.limits import FAILURE_MEMORY_SECONDS, LoginThrottle, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_settings_defaults_and_overrides(tmp_path: object) -> None:
    default = Settings.from_env({}).smtp_intake
    assert (default.port, default.tls_port, default.host) == (587, 465, "0.0.0.0")
    custom = Settings.from_env(
        {
            "MAILGW_SMTP_INTAKE_PORT": "2587",
            "MAILGW_SMTP_INTAKE_TLS_PORT": "0",
            "MAILGW_SMTP_INTAKE_PER_MINUTE": "5",
        }
    ).smtp_intake
    assert (custom.port, custom.tls_port, custom.per_minute) == (2587, 0, 5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAILGW_SMTP_INTAKE_PORT", "70000"),
        ("MAILGW_SMTP_INTAKE_TLS_PORT", "x"),
        ("MAILGW_SMTP_INTAKE_CERT_FILE", "/nonexistent.pem"),
        ("MAILGW_SMTP_INTAKE_CLIENTS_TABLE", "no-dashes"),
        ("MAILGW_SMTP_INTAKE_MAX_MESSAGE_BYTES", "-1"),
    ],
)
def test_bad_settings_name_themselves(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_rate_limit_is_a_sliding_minute() -> None:
    clock = Clock()
    rates = RateLimiter(clock=clock)
    assert [rates.allow("a", 2) for _ in range(3)] == [True, True, False]
    assert rates.allow("b", 2)  # per client
    clock.now += 60.5
    assert rates.allow("a", 2)


def test_failed_logins_double_the_wait_per_name_and_per_ip() -> None:
    clock = Clock()
    throttle = LoginThrottle(base_seconds=0.5, cap_seconds=4, clock=clock)
    assert throttle.delay("a", "10.0.0.1") == 0
    throttle.failed("a", "10.0.0.1")
    throttle.failed("a", "10.0.0.1")
    assert throttle.delay("a", "10.0.0.9") == 1.0  # the name, from anywhere
    assert throttle.delay("b", "10.0.0.1") == 1.0  # the address, for any name
    for _ in range(5):
        throttle.failed("a", "10.0.0.1")
    assert throttle.delay("a", "10.0.0.1") == 4  # capped
    throttle.succeeded("a", "10.0.0.1")
    assert throttle.delay("a", "10.0.0.9") == 0
    assert throttle.delay("b", "10.0.0.1") == 4  # the address is still suspect
    clock.now += FAILURE_MEMORY_SECONDS + 1
    assert throttle.delay("b", "10.0.0.1") == 0


def test_ip_allowlist() -> None:
    anywhere = SmtpClient("a", ("a@contoso.com",))
    assert anywhere.allows_ip("203.0.113.9")
    office = SmtpClient("a", ("a@contoso.com",), networks=("10.0.0.0/8", "2001:db8::/32"))
    assert office.allows_ip("10.2.3.4") and office.allows_ip("2001:db8::1")
    assert not office.allows_ip("203.0.113.9") and not office.allows_ip("garbage")


@pytest.mark.parametrize(
    ("name", "senders", "networks"),
    [("", ["a@contoso.com"], []), ("a", [], []), ("a", ["*@"], []), ("a", ["a@b.c"], ["x"])],
)
def test_bad_definitions(name: str, senders: list[str], networks: list[str]) -> None:
    with pytest.raises(ClientError):
        check_definition(name, senders, networks)
