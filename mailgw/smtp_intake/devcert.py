"""A self-signed certificate for the SMTP intake under ``make run`` (never for production: in
Azure the certificate comes from Key Vault, docs/smtp-intake.md)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 365
#: renewed when it has fewer days left than this
RENEW_DAYS = 30


def ensure_dev_certificate(path: Path) -> Path:
    """``path`` holds a key and a self-signed certificate for localhost and 127.0.0.1 (PEM),
    made now unless a valid one is there already."""
    if path.exists():
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        if cert.not_valid_after_utc - datetime.now(UTC) > timedelta(days=RENEW_DAYS):
            return path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailgw local SMTP intake")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(key_pem + cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o600)
    return path
