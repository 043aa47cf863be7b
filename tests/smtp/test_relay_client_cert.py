"""The relay transport with a TLS client certificate, for a certificate-based inbound connector
(``TlsSenderCertificateName``), against a real SMTP server that asks for client certificates.

The setting (``MAILGW_RELAY_CLIENT_CERT``) is accepted as PEM text, as base64 PKCS#12 without a
password (a Key Vault certificate's secret) and as a file path; anything else stops the app at
load with a reason that names the setting."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from smtp_helpers import outbound, send_failing

from mailgw.client_cert import load_client_certificate
from mailgw.settings import Settings, SettingsError
from mailgw.transports.smtp import SmtpTransport
from standins.certs import common_name, issue, private_key_pem
from standins.smtp import SmtpStandIn

DOMAIN = "mail.contoso.com"


def pkcs12_base64(pem: str) -> str:
    """The PEM as Key Vault stores a certificate's secret: base64 PKCS#12, no password."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    certs = x509.load_pem_x509_certificates(pem.encode())
    blob = pkcs12.serialize_key_and_certificates(
        b"mailgw",
        key,  # type: ignore[arg-type]
        certs[0],
        certs[1:] or None,
        serialization.NoEncryption(),
    )
    return base64.b64encode(blob).decode()


def send_through_certificate_connector(
    relay_server: SmtpStandIn, relay_settings: Callable[..., Settings], cert_value: str | None
) -> SmtpTransport:
    relay_server.client_cert_names = {DOMAIN}
    return SmtpTransport(relay_settings(MAILGW_RELAY_CLIENT_CERT=cert_value), relay=True)


@pytest.mark.parametrize("form", ["pem", "pkcs12", "pem-file", "pfx-file"])
async def test_a_certificate_connector_accepts_the_gateway_by_its_certificate(
    relay_server: SmtpStandIn,
    relay_settings: Callable[..., Settings],
    tmp_path: Path,
    form: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pem = relay_server.issue_client_cert(DOMAIN)
    value = {
        "pem": pem,
        "pkcs12": pkcs12_base64(pem),
        "pem-file": str(tmp_path / "relay.pem"),
        "pfx-file": str(tmp_path / "relay.pfx"),
    }[form]
    (tmp_path / "relay.pem").write_text(pem)
    (tmp_path / "relay.pfx").write_bytes(base64.b64decode(pkcs12_base64(pem)))

    with caplog.at_level(logging.INFO, logger="mailgw.smtp"):
        relay = send_through_certificate_connector(relay_server, relay_settings, value)
    try:
        message = outbound()
        receipt = await relay.send(message)
    finally:
        await relay.aclose()
    assert receipt.transport == "relay"
    (received,) = relay_server.received
    (connection,) = relay_server.connections
    assert DOMAIN in connection.client_cert_names
    assert received.auth_user is None
    assert f"client certificate for {DOMAIN}" in caplog.text  # its names are logged, not the key
    assert "PRIVATE KEY" not in caplog.text


async def test_without_a_certificate_the_connector_refuses_with_5_7_64_and_a_hint(
    relay_server: SmtpStandIn, relay_settings: Callable[..., Settings]
) -> None:
    relay = send_through_certificate_connector(relay_server, relay_settings, None)
    try:
        error = await send_failing(relay, outbound())
    finally:
        await relay.aclose()
    assert not error.transient
    assert "5.7.64" in error.code
    assert "MAILGW_RELAY_CLIENT_CERT" in error.hint
    assert relay_server.received == []
    (connection,) = relay_server.connections
    assert connection.tls and connection.client_cert_names == ()


async def test_a_certificate_for_another_name_is_refused_like_none(
    relay_server: SmtpStandIn, relay_settings: Callable[..., Settings]
) -> None:
    pem = relay_server.issue_client_cert("gateway.fabrikam.com")
    relay = send_through_certificate_connector(relay_server, relay_settings, pem)
    try:
        error = await send_failing(relay, outbound())
    finally:
        await relay.aclose()
    assert "5.7.64" in error.code
    assert relay_server.received == []


def test_the_key_never_shows_in_a_repr(
    relay_server: SmtpStandIn, relay_settings: Callable[..., Settings]
) -> None:
    settings = relay_settings(MAILGW_RELAY_CLIENT_CERT=relay_server.issue_client_cert(DOMAIN))
    assert settings.relay_client_cert is not None
    assert DOMAIN in settings.relay_client_cert.names
    assert "PRIVATE" not in repr(settings) and "PRIVATE" not in repr(settings.relay_client_cert)


async def test_client_submission_never_presents_the_relay_certificate(
    smtp: SmtpStandIn,
    smtp_settings: Callable[..., Settings],
    relay_server: SmtpStandIn,
) -> None:
    cert = load_client_certificate(relay_server.issue_client_cert(DOMAIN))
    # Even a Settings object carrying one (from_env parses it only for the relay transport):
    transport = SmtpTransport(dataclasses.replace(smtp_settings(), relay_client_cert=cert))
    try:
        await transport.probe("noreply@contoso.com")
    finally:
        await transport.aclose()
    (connection,) = smtp.connections
    assert connection.tls and connection.client_cert_names == ()


def test_other_transports_ignore_the_setting() -> None:
    settings = Settings.from_env({"MAILGW_TRANSPORT": "graph", "MAILGW_RELAY_CLIENT_CERT": "x"})
    assert settings.relay_client_cert is None  # a left-over value cannot stop a Graph gateway


# --- the setting's value: every unusable form stops the app with the reason --------------------


def _certificate(
    *, not_before: dt.datetime | None = None, not_after: dt.datetime | None = None
) -> trustme.LeafCert:
    ca = trustme.CA()
    return ca.issue_cert(DOMAIN, not_before=not_before, not_after=not_after)


def test_expired_certificate_is_refused_naming_the_dates() -> None:
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    leaf = _certificate(not_before=past, not_after=past + dt.timedelta(days=90))
    pem = leaf.private_key_pem.bytes().decode() + leaf.cert_chain_pems[0].bytes().decode()
    with pytest.raises(SettingsError, match=r"MAILGW_RELAY_CLIENT_CERT.*2020-03-31.*renew"):
        load_client_certificate(pem)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda leaf, other: "not a certificate at all", "neither PEM text"),
        (lambda leaf, other: "/no/such/file.pem", "neither PEM text"),
        (lambda leaf, other: leaf.cert_chain_pems[0].bytes().decode(), "0 private key"),
        (
            lambda leaf, other: (
                other.private_key_pem.bytes().decode() + leaf.cert_chain_pems[0].bytes().decode()
            ),
            "belongs to none of the certificates",
        ),
        (
            lambda leaf, other: _encrypted_key() + leaf.cert_chain_pems[0].bytes().decode(),
            "encrypted",
        ),
        (lambda leaf, other: base64.b64encode(b"\x30\x03\x02\x01\x03").decode(), "PKCS#12"),
    ],
    ids=["garbage", "missing-file", "no-key", "wrong-key", "encrypted-key", "bad-pkcs12"],
)
def test_unusable_values_are_refused_with_the_reason(make: object, reason: str) -> None:
    leaf, other = _certificate(), _certificate()
    with pytest.raises(SettingsError, match="MAILGW_RELAY_CLIENT_CERT") as caught:
        load_client_certificate(make(leaf, other))  # type: ignore[operator]
    assert reason in str(caught.value)


RELAY_ENV = {"MAILGW_TRANSPORT": "relay", "MAILGW_RELAY_HOST": "contoso-com.mail.protection.x"}


def test_a_wrong_value_stops_settings_loading() -> None:
    with pytest.raises(SettingsError, match="MAILGW_RELAY_CLIENT_CERT"):
        Settings.from_env(
            {**RELAY_ENV, "MAILGW_RELAY_CLIENT_CERT": "-----BEGIN CERTIFICATE-----\nAA==\n"}
        )


def test_an_unresolved_key_vault_reference_says_so() -> None:
    reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/relay/)"
    with pytest.raises(SettingsError, match="unresolved Key Vault reference") as caught:
        Settings.from_env({**RELAY_ENV, "MAILGW_RELAY_CLIENT_CERT": reference})
    assert "keyVaultReferenceIdentity" in str(caught.value)


def test_pem_with_openssl_bag_attributes_is_accepted() -> None:
    leaf = _certificate()
    pem = (
        "Bag Attributes\n    localKeyID: 01 00 00 00\n"
        + leaf.private_key_pem.bytes().decode()
        + "Bag Attributes\n    friendlyName: relay\n"
        + leaf.cert_chain_pems[0].bytes().decode()
    )
    assert DOMAIN in load_client_certificate(pem).names


def test_a_key_tls_refuses_stops_the_start_not_the_first_send() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert = issue(key, common_name(DOMAIN))
    pem = private_key_pem(key) + cert.public_bytes(serialization.Encoding.PEM)
    with pytest.raises(SettingsError, match="TLS cannot use this certificate"):
        load_client_certificate(pem.decode())


def _encrypted_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return private_key_pem(key, serialization.BestAvailableEncryption(b"secret")).decode()
