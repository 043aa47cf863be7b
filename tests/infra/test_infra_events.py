"""The outcome events' infrastructure (infra/modules/events.bicep, docs/events.md): off by default;
on, a CloudEvents topic that takes Entra tokens only, the identity's EventGrid Data Sender role on
that topic (by GUID), and optionally a subscription into a queue of the account as the topic's
own identity; the app settings point the gateway at both sinks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from infra_support import module_template

EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"
QUEUE_MESSAGE_SENDER = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"
ON = {"eventGridTopic": True, "eventGridSubscriptionQueueName": "mail-events-grid"}


@pytest.fixture
def events(deploy: Any, trees: Mapping[str, Any]) -> Any:
    """The events module's template, deployed with the topic and its queue subscription on."""
    main, _, _ = deploy(**ON)
    return module_template(trees, main, "events")


def test_events_are_off_unless_asked_for(deploy: Any, trees: Mapping[str, Any]) -> None:
    main, _, settings = deploy()
    assert main.eval(main.modules["events"]["config"]["condition"]) is False
    assert settings["MAILGW_EVENTS_QUEUE"] == ""
    assert "MAILGW_EVENTGRID_ENDPOINT" not in settings
    storage = module_template(trees, main, "storage")
    assert storage.params["queueNames"] == ["mail-outbound", "mail-outbound-poison"]


def test_the_events_queue_is_created_and_named_in_the_settings(
    deploy: Any, trees: Mapping[str, Any]
) -> None:
    main, _, settings = deploy(eventsQueueName="mail-events", **ON)
    assert settings["MAILGW_EVENTS_QUEUE"] == "mail-events"
    assert str(settings["MAILGW_EVENTGRID_ENDPOINT"]) == "<events.outputs.endpoint>"
    storage = module_template(trees, main, "storage")
    assert set(storage.params["queueNames"]) >= {"mail-events", "mail-events-grid"}


def test_the_topic_takes_cloudevents_and_entra_tokens_only(events: Any) -> None:
    topic = events.resources["topic"]["config"]
    properties = events.eval(topic["properties"])
    assert properties["disableLocalAuth"] is True
    assert properties["inputSchema"] == "CloudEventSchemaV1_0"
    assert properties["minimumTlsVersionAllowed"] == "1.2"


def body(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    """A resource's declaration, inside its ``if (...)`` when it has one."""
    config: Mapping[str, Any] = resource["config"]
    return config["config"] if "condition" in config else config


def role_assignments(events: Any) -> dict[str, tuple[str, str]]:
    found = {}
    for symbol, resource in events.resources.items():
        if resource["type"] != "Microsoft.Authorization/roleAssignments":
            continue
        properties = events.eval(body(resource)["properties"])
        role = str(properties["roleDefinitionId"])
        found[symbol] = (role, str(properties["principalId"]))
    return found


def test_the_identity_may_publish_and_the_topic_may_only_add_queue_messages(events: Any) -> None:
    assigned = role_assignments(events)
    role, principal = assigned["identityEventSender"]
    assert EVENTGRID_DATA_SENDER in role
    assert principal == "<identity.properties.principalId>"
    assert str(events.resources["identityEventSender"]["config"]["scope"]) == "topic"
    role, principal = assigned["topicQueueSender"]
    assert QUEUE_MESSAGE_SENDER in role
    assert "topic" in principal  # the topic's own system-assigned identity


def test_the_subscription_delivers_cloudevents_to_the_queue_with_the_topics_identity(
    events: Any, deploy: Any, trees: Mapping[str, Any]
) -> None:
    subscription = events.resources["queueSubscription"]["config"]
    assert events.eval(subscription["condition"]) is True
    properties = events.eval(subscription["config"]["properties"])
    assert properties["eventDeliverySchema"] == "CloudEventSchemaV1_0"
    delivery = properties["deliveryWithResourceIdentity"]
    assert delivery["identity"] == {"type": "SystemAssigned"}
    assert delivery["destination"]["endpointType"] == "StorageQueue"
    assert delivery["destination"]["properties"]["queueName"] == "mail-events-grid"

    without, _, _ = deploy(eventGridTopic=True)
    plain = module_template(trees, without, "events")
    assert plain.eval(plain.resources["queueSubscription"]["config"]["condition"]) is False
