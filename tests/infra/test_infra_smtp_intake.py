"""The SMTP intake's deployment (Dockerfile, infra/modules/smtp-intake.bicep, docs/smtp-intake.md):
off by default; on, a container app with TCP ingress on 587 and 465 onto the ports the image
listens on, the gateway's identity and storage (identity-based), the certificate from Key Vault
as a mounted secret, and the same gateway settings as the Function App. No secret anywhere."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest
from bicep_model import DeploymentFailure
from infra_support import ROOT, module_template

from mailgw.settings import Settings

CERT_URI = "https://kv-mail.vault.azure.net/secrets/smtp-intake"
ON = {
    "smtpIntake": True,
    "smtpIntakeImage": "contoso.azurecr.io/mailgw-smtp:1",
    "smtpIntakeCertificateSecretUri": CERT_URI,
}


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def image_env() -> dict[str, str]:
    return dict(re.findall(r"(MAILGW_SMTP_INTAKE_\w+)=(\d+)", dockerfile()))


def test_the_image_is_python_311_slim_non_root_running_mailgw_smtp() -> None:
    text = dockerfile()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["mailgw-smtp"\]$', text, re.MULTILINE)
    assert 'mailgw-smtp = "mailgw.smtp_intake.main:main"' in (ROOT / "pyproject.toml").read_text()
    # a non-root user cannot bind ports under 1024: the image listens on unprivileged ones
    assert all(int(port) >= 1024 for port in image_env().values())


def test_off_by_default(deploy: Any) -> None:
    main, _, _ = deploy()
    assert main.eval(main.modules["smtpIntakeApp"]["config"]["condition"]) is False


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({**ON, "smtpIntakeImage": ""}, "smtpIntake needs smtpIntakeImage"),
        (
            {**ON, "smtpIntakeCertificateSecretUri": CERT_URI.replace("secrets", "certificates")},
            "smtpIntake needs smtpIntakeCertificateSecretUri",
        ),
    ],
)
def test_missing_image_or_certificate_stops_the_deployment(
    deploy: Any, trees: Mapping[str, Any], params: dict[str, Any], message: str
) -> None:
    main, _, _ = deploy()  # off: nothing is asked for, the module's parameters are not evaluated
    module_template(trees, main, "smtpIntakeApp")
    main, _, _ = deploy(**params)
    with pytest.raises(DeploymentFailure, match=message):
        module_template(trees, main, "smtpIntakeApp")


def container_app(deploy: Any, trees: Mapping[str, Any], **params: Any) -> tuple[Any, Any, Any]:
    main, _, settings = deploy(**{**ON, **params})
    intake = module_template(trees, main, "smtpIntakeApp")
    app = intake.resources["app"]["config"]
    return intake, intake.eval(app), settings


def test_tcp_ingress_on_587_and_465_onto_the_images_ports(
    deploy: Any, trees: Mapping[str, Any]
) -> None:
    _, app, _ = container_app(deploy, trees)
    ingress = app["properties"]["configuration"]["ingress"]
    assert ingress["transport"] == "tcp" and ingress["external"] is True
    ports = {ingress["exposedPort"]: ingress["targetPort"]}
    ports.update({m["exposedPort"]: m["targetPort"] for m in ingress["additionalPortMappings"]})
    env = image_env()
    assert ports == {
        587: int(env["MAILGW_SMTP_INTAKE_PORT"]),
        465: int(env["MAILGW_SMTP_INTAKE_TLS_PORT"]),
    }


def test_the_certificate_comes_from_key_vault_with_the_identity(
    deploy: Any, trees: Mapping[str, Any]
) -> None:
    intake, app, _ = container_app(deploy, trees)
    (secret,) = app["properties"]["configuration"]["secrets"]
    assert secret["keyVaultUrl"] == CERT_URI
    assert "value" not in secret
    assert str(secret["identity"]) == str(intake.params["identityId"])
    assert str(app["identity"]["type"]) == "UserAssigned"
    (container,) = app["properties"]["template"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    (volume,) = app["properties"]["template"]["volumes"]
    assert volume["storageType"] == "Secret"
    (mount,) = container["volumeMounts"]
    assert (
        env["MAILGW_SMTP_INTAKE_CERT_FILE"]
        == f"{mount['mountPath']}/{volume['secrets'][0]['path']}"
    )


def test_the_same_settings_and_identity_based_storage_as_the_function_app(
    deploy: Any, trees: Mapping[str, Any]
) -> None:
    _, app, settings = container_app(deploy, trees)
    (container,) = app["properties"]["template"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    for name in (
        "MAILGW_ALLOWED_SENDERS",
        "MAILGW_QUEUE",
        "MAILGW_STATE_TABLE",
        "MAILGW_TRANSPORT",
    ):
        assert env[name] == settings[name]
    assert env["AzureWebJobsStorage__credential"] == "managedidentity"
    assert "AzureWebJobsStorage" not in env  # no connection string, no key
    assert not any("AccountKey" in str(value) for value in env.values())
    # the values the app would read parse (the ones known before deployment)
    known = {k: str(v) for k, v in env.items() if k.startswith("MAILGW_SMTP_INTAKE_PORT")}
    assert Settings.from_env(known).smtp_intake.port == int(image_env()["MAILGW_SMTP_INTAKE_PORT"])


def test_key_vault_access_is_granted_only_when_the_vault_is_named(
    deploy: Any,
) -> None:
    main, _, _ = deploy(**ON)
    assert main.eval(main.modules["smtpIntakeCertAccess"]["config"]["condition"]) is False
    main, _, _ = deploy(**ON, smtpIntakeKeyVaultName="kv-mail")
    assert main.eval(main.modules["smtpIntakeCertAccess"]["config"]["condition"]) is True
