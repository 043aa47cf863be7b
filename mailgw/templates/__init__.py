"""Stored message templates: ``template`` + ``templateData`` instead of subject/text/html.

Operators keep templates in Blob storage (:mod:`.store`, ``mailgw templates put``); the intake
renders the named one's newest version with the caller's data (:mod:`.render`) before it accepts
the message, so a template error is the caller's 400, never a failed message later.
"""

from mailgw.templates.apply import apply_template
from mailgw.templates.render import MAX_RENDERED_CHARS, MAX_TEMPLATE_BYTES, Template
from mailgw.templates.store import TemplateStore

__all__ = [
    "MAX_RENDERED_CHARS",
    "MAX_TEMPLATE_BYTES",
    "Template",
    "TemplateStore",
    "apply_template",
]
