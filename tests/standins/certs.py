"""Throw-away X.509 certificates for the stand-ins and the tests (never for the app: its own dev
certificate is ``mailgw.smtp_intake.devcert``). One builder, so each caller states only what its
certificate is about: the name, the key, who signs it, how long it lasts and its extensions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

__all__ = ["common_name", "issue", "private_key_pem"]

#: an extension with whether it is critical, as ``CertificateBuilder.add_extension`` takes it
Extension = tuple[x509.ExtensionType, bool]


def common_name(name: str) -> x509.Name:
    """A subject or issuer name that is only a common name (CN)."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def issue(
    key: CertificateIssuerPrivateKeyTypes,
    subject: x509.Name,
    *,
    issuer: tuple[x509.Name, CertificateIssuerPrivateKeyTypes] | None = None,
    backdate: dt.timedelta = dt.timedelta(days=1),
    lifetime: dt.timedelta = dt.timedelta(days=90),
    extensions: Sequence[Extension] = (),
) -> x509.Certificate:
    """A certificate for ``key``'s public half, valid from ``backdate`` ago (clock skew) for
    ``lifetime``, signed (SHA-256) by ``issuer``'s name and key, or self-signed without one."""
    issuer_name, signing_key = issuer or (subject, key)
    now = dt.datetime.now(dt.UTC)
    return x509.CertificateBuilder(
        issuer_name=issuer_name,
        subject_name=subject,
        public_key=key.public_key(),
        serial_number=x509.random_serial_number(),
        not_valid_before=now - backdate,
        not_valid_after=now + lifetime,
        extensions=[x509.Extension(value.oid, critical, value) for value, critical in extensions],
    ).sign(signing_key, hashes.SHA256())


def private_key_pem(
    key: CertificateIssuerPrivateKeyTypes,
    encryption: serialization.KeySerializationEncryption | None = None,
) -> bytes:
    """``key`` as PKCS#8 PEM, unencrypted unless ``encryption`` is given."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    )
