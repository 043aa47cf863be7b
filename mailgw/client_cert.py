"""The relay transport's TLS client certificate (``MAILGW_RELAY_CLIENT_CERT``).

A certificate-based Exchange Online inbound connector recognises the gateway by the certificate it
presents in STARTTLS, not by its IP address: the one way to relay from Flex Consumption, whose
outbound addresses are shared and change, without a NAT gateway. The setting holds the certificate
(with its chain) and its private key as PEM text, as base64 PKCS#12 without a password (what a Key
Vault certificate's secret is, so a Key Vault reference works as is), or as a path to either file.

It is parsed and checked when the app loads (the key must match, the certificate must be valid
now), so a wrong value stops the start with a message naming the setting. Parsing is
``cryptography``'s; Python's ``ssl`` only loads key material from a file, so the PEM is written
to a private temporary file for the moment of loading and removed at once.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailgw.settings import SettingsError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

SETTING = "MAILGW_RELAY_CLIENT_CERT"
#: The app refuses to start with an expired certificate (a cold start would take the whole gateway
#: down), so the log and `mailgw doctor` warn this long before.
RENEW_WITHIN = timedelta(days=14)
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)


@dataclass(frozen=True)
class ClientCertificate:
    """A certificate chain (leaf first) and its private key, ready for an ``SSLContext``."""

    pem: bytes  # the private key, then the chain: what ``load_cert_chain`` reads from one file
    subject: str
    names: tuple[str, ...]
    not_after: datetime

    def __repr__(self) -> str:  # never the key
        return f"ClientCertificate(subject={self.subject!r}, not_after={self.not_after:%Y-%m-%d})"

    def expires_soon(self, now: datetime | None = None) -> bool:
        return self.not_after - (now or datetime.now(UTC)) < RENEW_WITHIN

    def load_into(self, context: ssl.SSLContext) -> None:
        with tempfile.TemporaryDirectory(prefix="mailgw-cert-") as folder:  # mode 0700
            path = Path(folder) / "client.pem"
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(self.pem)
            context.load_cert_chain(path)


def load_client_certificate(value: str, *, now: datetime | None = None) -> ClientCertificate:
    """Parse the setting's value in whichever form it comes; raise with the reason if unusable."""
    text = value.strip()
    if text.startswith("@Microsoft.KeyVault("):
        raise SettingsError(
            f"{SETTING} is an unresolved Key Vault reference: the platform could not read the "
            "secret (the identity's Key Vault Secrets User role, the site's "
            "keyVaultReferenceIdentity, the vault's firewall?). See the reference's status: az "
            "rest --uri <site id>/config/configreferences/appsettings?api-version=2023-12-01"
        )
    if "-----BEGIN" in text:  # PEM, perhaps with openssl's "Bag Attributes" before the blocks
        key, chain = _from_pem(text.encode())
    elif len(text) < 4096 and os.path.isfile(text):
        data = Path(text).read_bytes()
        key, chain = _from_pem(data) if b"-----BEGIN" in data else _from_pkcs12(data)
    else:
        try:
            if " " in text:  # base64 has no spaces (line breaks of wrapped base64 are fine)
                raise ValueError(text)
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise SettingsError(
                f"{SETTING} is neither PEM text, base64 PKCS#12 (a Key Vault certificate's "
                "secret), nor the path of an existing file"
            ) from None
        key, chain = _from_pkcs12(data)
    certificate = _checked(key, chain, now or datetime.now(UTC))
    try:  # what OpenSSL itself refuses (a 1024-bit RSA key, say) must stop the start too
        certificate.load_into(ssl.create_default_context())
    except ssl.SSLError as exc:
        raise SettingsError(f"{SETTING}: TLS cannot use this certificate: {exc}") from None
    return certificate


def _from_pem(data: bytes) -> tuple[PrivateKeyTypes, list[x509.Certificate]]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    blocks = [(m.group(1).decode(), m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    if any(kind == "ENCRYPTED PRIVATE KEY" for kind, _ in blocks):
        raise SettingsError(f"{SETTING}: the private key is encrypted; give it unencrypted")
    keys = [block for kind, block in blocks if kind.endswith("PRIVATE KEY")]
    certificates = [block for kind, block in blocks if kind == "CERTIFICATE"]
    if len(keys) != 1 or not certificates:
        raise SettingsError(
            f"{SETTING}: the PEM must hold one private key and its certificate chain; found "
            f"{len(keys)} private key(s) and {len(certificates)} certificate(s)"
        )
    try:
        key = serialization.load_pem_private_key(keys[0], password=None)
        chain = [x509.load_pem_x509_certificate(block) for block in certificates]
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{SETTING}: the PEM does not parse: {exc}") from None
    return key, chain


def _from_pkcs12(data: bytes) -> tuple[PrivateKeyTypes, list[x509.Certificate]]:
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        key, certificate, extra = pkcs12.load_key_and_certificates(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SettingsError(
            f"{SETTING}: not a PKCS#12 (PFX) without password: {exc}. Export it without a "
            "password, or reference the Key Vault certificate's secret"
        ) from None
    if key is None or certificate is None:
        raise SettingsError(f"{SETTING}: the PKCS#12 holds no private key or certificate")
    return key, [certificate, *extra]


def _checked(
    key: PrivateKeyTypes, chain: list[x509.Certificate], now: datetime
) -> ClientCertificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    def public(public_key: Any) -> bytes:
        spki: bytes = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return spki

    key_public = public(key.public_key())
    leaves = [c for c in chain if public(c.public_key()) == key_public]
    if not leaves:
        raise SettingsError(f"{SETTING}: the private key belongs to none of the certificates")
    leaf = leaves[0]
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise SettingsError(
            f"{SETTING}: the certificate is valid from {leaf.not_valid_before_utc:%Y-%m-%d} to "
            f"{leaf.not_valid_after_utc:%Y-%m-%d}, not now; renew it"
        )
    common = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = [str(name) for name in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        dns = []
    ordered = [leaf, *(c for c in chain if c is not leaf)]
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in ordered)
    return ClientCertificate(
        pem=pem,
        subject=leaf.subject.rfc4514_string(),
        names=tuple(dict.fromkeys([*common, *dns])),
        not_after=leaf.not_valid_after_utc,
    )
