"""A send request with ``template`` becomes an ordinary one: the template rendered in its place."""

from __future__ import annotations

from datetime import datetime

from mailgw.errors import (
    FieldError,
    GatewayError,
    InvalidRequest,
    MessageTooLarge,
    TemplateNotFound,
    TemplatesUnavailable,
)
from mailgw.models import SendRequest, TemplateRef
from mailgw.settings import Settings
from mailgw.templates.store import TemplateStore
from mailgw.validation import validate_request


async def apply_template(
    request: SendRequest, store: TemplateStore | None, settings: Settings, *, now: datetime
) -> tuple[SendRequest, TemplateRef | None]:
    """The request with the newest version of its template rendered into subject/text/html (and
    which version that was), checked again by every rule: a rendered subject with a line break is
    refused like a sent one. A request without a template comes back as it is."""
    if request.template is None:
        return request, None
    if store is None:
        raise TemplateNotFound("This gateway has no template store configured.")
    try:
        template = await store.latest(request.template)
    except GatewayError:
        raise
    except Exception as exc:  # storage: nothing was accepted, and a retry may succeed
        raise TemplatesUnavailable(
            f"The template store could not be read ({type(exc).__name__}); retry later."
        ) from exc
    document = request.to_json()
    document.pop("template", None)
    document.pop("templateData", None)
    document.update(template.render(request.template_data or {}))
    try:
        rendered = validate_request(document, settings, now=now)
    except (InvalidRequest, MessageTooLarge) as error:
        where = f"template '{template.name}' (version {template.version}) renders"
        fields = [FieldError("template", f"{where} {e.field}: {e.message}") for e in error.errors]
        raise type(error)(f"The rendered message breaks a rule: {error.detail}", fields) from None
    return rendered, TemplateRef(name=template.name, version=template.version)
