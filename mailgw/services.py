"""The per-process object graph the function adapters use: built once, on first use.

Storage and transport clients hold connection pools and cached tokens; creating them per invocation
would cost a TLS handshake and a token request per message.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from mailgw.answers import AnswerStore
from mailgw.auth import ApiAuth, create_api_auth
from mailgw.batch import BatchIntake
from mailgw.delivery import Delivery, RetryPolicy
from mailgw.events import Events
from mailgw.events.pending import PendingEvents
from mailgw.events.sinks import EventGridSink, EventSink, QueueSink
from mailgw.intake import Intake
from mailgw.operations import Operations
from mailgw.pacing import BudgetTable, Pacer
from mailgw.queue import MailQueue
from mailgw.seal import EnvelopeSeal
from mailgw.settings import Settings, current_settings
from mailgw.store import StateStore
from mailgw.templates import TemplateStore
from mailgw.transports import Transport, create_transport


@dataclass
class Services:
    settings: Settings

    @cached_property
    def api_auth(self) -> ApiAuth:
        return create_api_auth(self.settings)

    @cached_property
    def queue(self) -> MailQueue:
        return MailQueue(
            self.settings.storage(),
            self.settings.queue,
            self.settings.payload_container,
            EnvelopeSeal(self.store.envelope_key),
        )

    @cached_property
    def store(self) -> StateStore:
        return StateStore(self.settings.storage(), self.settings.state_table)

    @cached_property
    def events(self) -> Events:
        """The outcome events' publisher, with the sinks the settings name (none: off)."""
        settings = self.settings
        timeout = settings.events_timeout_seconds
        sinks: list[EventSink] = []
        if settings.events_queue:
            sinks.append(QueueSink(settings.storage(), settings.events_queue, timeout))
        if settings.eventgrid_endpoint:
            from mailgw.identity import SingleFlightCredential, create_own_credential

            credential = SingleFlightCredential(create_own_credential(settings))
            sinks.append(EventGridSink(settings.eventgrid_endpoint, credential, timeout))
        return Events(
            sinks,
            PendingEvents(self.store),
            source=settings.events_source,
            transport=settings.transport,
            timeout_seconds=timeout,
        )

    @cached_property
    def operations(self) -> Operations:
        return Operations(
            self.queue,
            self.store,
            retention=self.settings.retention,
            transport=self.settings.transport,
            events=self.events,
        )

    @cached_property
    def templates(self) -> TemplateStore:
        return TemplateStore(self.settings.storage(), self.settings.template_container)

    @cached_property
    def intake(self) -> Intake:
        return Intake(
            self.settings, self.queue, self.store, events=self.events, templates=self.templates
        )

    @cached_property
    def batch(self) -> BatchIntake:
        return BatchIntake(self.intake, AnswerStore(self.store))

    @cached_property
    def transport(self) -> Transport:
        return create_transport(self.settings)

    @cached_property
    def pacer(self) -> Pacer:
        """This instance's share of the sending budgets, kept in the state table."""
        return Pacer(BudgetTable(self.store.table), self.settings.pacing)

    @cached_property
    def delivery(self) -> Delivery:
        return Delivery(
            self.settings,
            self.queue,
            self.transport,
            self.store,
            retry=RetryPolicy(
                max_attempts=self.settings.max_attempts,
                max_age_seconds=self.settings.max_age_seconds,
            ),
            events=self.events,
            pacer=self.pacer,
        )


_services: Services | None = None


def check_configuration() -> Settings:
    """Validate the settings when the app loads, so a wrong or missing setting stops the start with
    a message naming it, instead of failing every message later. Imports no transport."""
    return current_settings()


def services() -> Services:
    global _services
    if _services is None:
        _services = Services(current_settings())
    return _services
