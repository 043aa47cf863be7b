"""Failed delivery outcomes: transient (retry later) or permanent (poison, with a hint).

Transports raise :class:`DeliveryError`; anything else escaping a transport is a crash, which the
Functions host retries and finally moves to the poison queue after ``maxDequeueCount``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgw.models import ErrorInfo


@dataclass
class DeliveryError(Exception):
    code: str
    message: str
    transient: bool
    hint: str = ""
    retry_after: float | None = None
    throttled: bool = False
    ambiguous: bool = False

    def __post_init__(self) -> None:
        super().__init__(f"{self.code}: {self.message}")

    def info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message, hint=self.hint)


def permanent(code: str, message: str, hint: str = "") -> DeliveryError:
    return DeliveryError(code, message, transient=False, hint=hint)


def transient(
    code: str, message: str, hint: str = "", retry_after: float | None = None
) -> DeliveryError:
    return DeliveryError(code, message, transient=True, hint=hint, retry_after=retry_after)
