"""The SMTP intake (``mailgw-smtp``): apps and devices that only speak SMTP submit through the
gateway (docs/smtp-intake.md)."""
