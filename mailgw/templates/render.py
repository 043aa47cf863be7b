"""Rendering a stored template with a caller's data: Jinja2's sandbox, strict about names.

The template text is an operator's; the data is any caller's. Jinja2's ``SandboxedEnvironment``
keeps a template from reaching Python internals through the data, the HTML part autoescapes every
value (a caller's ``<script>`` stays text), and ``StrictUndefined`` makes a missing variable an
error naming it, rather than an empty hole in a customer's mail.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from mailgw.errors import FieldError, InvalidRequest

#: Largest template (subject, text and html together, UTF-8) that ``templates put`` stores.
MAX_TEMPLATE_BYTES = 512 * 1024
#: Largest rendered part: a loop in a template cannot make a message without bound.
MAX_RENDERED_CHARS = 8 * 1024 * 1024

Part = Literal["subject", "text", "html"]
PARTS: tuple[Part, ...] = ("subject", "text", "html")

_PLAIN = SandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)
_HTML = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True)
_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")


class TemplateInvalid(ValueError):
    """A template that does not compile (``templates put`` refuses it)."""


@dataclass(frozen=True)
class Template:
    """One version of a stored template: its parts as Jinja2 source."""

    name: str
    version: int
    subject: str = ""
    text: str | None = None
    html: str | None = None
    created_at: datetime | None = None
    _compiled: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.text and not self.html:
            raise TemplateInvalid("a template needs a text or an html part (or both)")
        size = sum(len((getattr(self, p) or "").encode()) for p in PARTS)
        if size > MAX_TEMPLATE_BYTES:
            raise TemplateInvalid(
                f"the template is {size} bytes; at most {MAX_TEMPLATE_BYTES} bytes are stored"
            )
        for part in PARTS:
            source = getattr(self, part)
            if source is None:
                continue
            environment = _HTML if part == "html" else _PLAIN
            try:
                self._compiled[part] = environment.from_string(source)
            except TemplateSyntaxError as error:
                raise TemplateInvalid(f"{part}, line {error.lineno}: {error.message}") from None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "version": self.version, "subject": self.subject}
        if self.text is not None:
            body["text"] = self.text
        if self.html is not None:
            body["html"] = self.html
        if self.created_at is not None:
            body["createdAt"] = self.created_at.isoformat()
        return body

    def render(self, data: dict[str, Any]) -> dict[str, str]:
        """subject/text/html rendered with ``data``, or :class:`InvalidRequest` naming what is
        missing (``templateData.customer``) or wrong, and where."""
        rendered: dict[str, str] = {}
        for part, compiled in self._compiled.items():
            try:
                rendered[part] = _bounded("".join(_limited(compiled.generate(data))), part)
            except UndefinedError as error:
                raise self._refusal(part, error, _undefined_field(str(error))) from None
            except (SecurityError, TemplateError, ArithmeticError, TypeError, ValueError) as error:
                raise self._refusal(part, error, "templateData") from None
        return rendered

    def _refusal(self, part: str, error: Exception, field_name: str) -> InvalidRequest:
        message = f"template '{self.name}' (version {self.version}), {part}: {error}"
        return InvalidRequest(
            f"The template could not be rendered with templateData: {message}",
            [FieldError(field_name, message)],
        )


class _TooLarge(ValueError):
    pass


def _limited(chunks: Iterator[str]) -> Iterator[str]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > MAX_RENDERED_CHARS:
            raise _TooLarge(f"the rendered text passes {MAX_RENDERED_CHARS} characters")
        yield chunk


def _bounded(text: str, part: str) -> str:
    return text.strip() if part == "subject" else text


def _undefined_field(message: str) -> str:
    """``'customer' is undefined`` → ``templateData.customer``; an attribute missing deeper down
    (``'dict object' has no attribute 'total'``) points at the data as a whole."""
    found = _UNDEFINED_NAME.match(message)
    return f"templateData.{found.group(1)}" if found else "templateData"
