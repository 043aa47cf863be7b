"""What the operator sees: the Azure Monitor workbook and the alerts, against the contract.

- infra/modules/workbook.json is valid JSON in the workbook format (Notebook/1.0: items of known
  types, queries with a time range parameter that exists), holds the views an operator needs, and
  every query names only metrics, spans, attributes, functions and values docs/telemetry.md lists;
- the Bicep loads that file as the workbook's content, bound to this deployment's Application
  Insights;
- each alert queries only what the contract lists (or the storage account's platform metric),
  and notifies the action groups given: an existing one, one created for an email, or both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pytest
from bicep_model import Ref, Template
from infra_support import INFRA, ROOT, fenced_blocks, module_template
from telemetry_contract import Contract

WORKBOOK = INFRA / "modules" / "workbook.json"
CONTRACT_DOC = ROOT / "docs" / "telemetry.md"
SCHEMA = (
    "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json"
)
#: Workbook item types (schema/workbook.json of Microsoft/Application-Insights-Workbooks).
ITEM_TYPES = {1: "markdown", 3: "query", 9: "parameters", 10: "metric", 11: "links", 12: "group"}
VISUALIZATIONS = {"table", "timechart", "barchart", "piechart", "linechart", "areachart", "tiles"}
LOG_ALERTS = ("failedMessages", "poisonPoison", "oldestMessage")
ALERTS = (*LOG_ALERTS, "storageAvailability")
EXISTING_GROUP = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/ops/providers/"
    "Microsoft.Insights/actionGroups/on-call"
)


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.read(CONTRACT_DOC)


@pytest.fixture(scope="module")
def workbook() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(WORKBOOK.read_text())
    return data


def queries(workbook: Mapping[str, Any]) -> dict[str, str]:
    return {i["name"]: i["content"]["query"] for i in workbook["items"] if i["type"] == 3}


# -- the contract as data -----------------------------------------------------------------------


def test_the_contract_reads_as_expected(contract: Contract) -> None:
    """The parser sees the tables of docs/telemetry.md (so an empty parse cannot pass queries)."""
    assert len(contract.metrics) == 10
    assert contract.metrics["mailgw.messages.failed"] == {"code", "transport", "sender"}
    assert contract.values["queue"] >= {"mail-outbound-poison-poison"}
    assert contract.spans["mailgw.deliver"][0] == "CONSUMER"
    assert {"mailgw.outcome", "mailgw.delivery.latency"} <= contract.spans["mailgw.deliver"][1]
    assert contract.values["mailgw.outcome"] >= {"sent", "failed", "retry"}
    assert {"record_failure", "sweep_poison_poison", "report_queues"} <= contract.functions
    assert contract.failed_fields >= {"messageId", "code", "hint", "from"}


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ('customMetrics | where name == "mailgw.messages.lost"', "metric mailgw.messages.lost"),
        ('requests | where name == "mailgw.send"', "requests row mailgw.send"),
        ('dependencies | where name == "mailgw.deliver"', "dependencies row mailgw.deliver"),
        (
            'customMetrics | where name == "mailgw.queue.depth" | extend r = customDimensions.code',
            "attribute code",
        ),
        (
            'requests | where name == "mailgw.deliver" and '
            'tostring(customDimensions["mailgw.outcome"]) == "delivered"',
            "value delivered",
        ),
        ('traces | where message has "failed"', "not on the MAILGW_FAILED event"),
        ("customMetrics | summarize sum(valueSum)", "no name filter"),
        ('exceptions | where name == "x"', "table exceptions"),
    ],
)
def test_the_checker_catches_what_the_contract_lacks(
    contract: Contract, query: str, problem: str
) -> None:
    assert any(problem in found for found in contract.problems(query)), contract.problems(query)


# -- the workbook -------------------------------------------------------------------------------


def test_workbook_is_a_workbook(workbook: Mapping[str, Any]) -> None:
    assert workbook["version"] == "Notebook/1.0"
    assert workbook["$schema"] == SCHEMA
    assert isinstance(workbook["fallbackResourceIds"], list)  # the Bicep fills it
    items = workbook["items"]
    assert items and all(isinstance(item["content"], dict) for item in items)
    assert all(item["type"] in ITEM_TYPES for item in items)
    names = [item["name"] for item in items]
    assert len(names) == len(set(names)), "workbook step names must be unique"
    parameters = {
        p["name"]: p for item in items if item["type"] == 9 for p in item["content"]["parameters"]
    }
    assert parameters["TimeRange"]["type"] == 4  # a time range picker
    assert len({p["id"] for p in parameters.values()}) == len(parameters)
    for item in items:
        if "customWidth" in item:
            assert re.fullmatch(r"\d{1,3}", item["customWidth"]), item["name"]
        if item["type"] != 3:
            continue
        content = item["content"]
        assert content["version"] == "KqlItem/1.0"
        assert content["queryType"] == 0  # Logs
        assert content["resourceType"] == "microsoft.insights/components"
        assert content["visualization"] in VISUALIZATIONS, item["name"]
        assert content["title"], item["name"]
        assert content["timeContextFromParameter"] in parameters, item["name"]
        for used in re.findall(r"\{(\w+)(?::\w+)?\}", content["query"]):
            assert used in parameters, f"{item['name']}: {{{used}}} is not a parameter"


def test_every_workbook_query_is_in_the_contract(
    workbook: Mapping[str, Any], contract: Contract
) -> None:
    found = {name: contract.problems(q) for name, q in queries(workbook).items()}
    assert {name: problems for name, problems in found.items() if problems} == {}


def test_workbook_shows_what_an_operator_needs(workbook: Mapping[str, Any]) -> None:
    """Throughput, latency percentiles, failures by code with hints, top senders, queue depth
    and the oldest message's age."""
    all_queries = queries(workbook)
    by_title = {
        item["content"]["title"]: item["content"]["query"]
        for item in workbook["items"]
        if item["type"] == 3
    }
    throughput = by_title["Messages accepted, sent and failed"]
    for metric in ("accepted", "sent", "failed"):
        assert f'"mailgw.messages.{metric}"' in throughput
    assert "bin(timestamp, {TimeRange:grain})" in throughput
    latency = by_title["End-to-end latency percentiles (seconds)"]
    for p in (50, 95, 99):
        assert f"percentile(latency, {p})" in latency
    assert '"mailgw.delivery.latency"' in latency and '== "sent"' in latency
    failures = by_title["Failures by code, with what to do"]
    assert "by code = tostring(failure.code)" in failures and "failure.hint" in failures
    senders = by_title["Top senders"]
    assert "by sender" in senders and "top 20" in senders
    assert '"mailgw.queue.depth"' in by_title["Queue depth"]
    assert "by bin(timestamp, {TimeRange:grain}), queue" in by_title["Queue depth"]
    assert '"mailgw.queue.oldest_age"' in by_title["Age of the oldest waiting message (minutes)"]
    assert len(all_queries) >= 10


def test_the_bicep_deploys_that_file_for_this_app_insights(
    deploy: Any, trees: Mapping[str, Any], workbook: Mapping[str, Any]
) -> None:
    main, _, _ = deploy(environmentName="prod")
    module = module_template(trees, main, "workbook")
    resource = module.resources["operationsWorkbook"]
    assert resource["type"] == "Microsoft.Insights/workbooks"
    assert resource["api_version"] == "2023-06-01"
    config = module.eval(resource["config"])
    assert config["kind"] == "shared"
    assert config["name"] == Ref("guid(<appInsights.id>, mailgw-operations-workbook)")
    properties = config["properties"]
    assert properties["category"] == "workbook"
    assert properties["sourceId"] == Ref("appInsights.id")
    assert properties["displayName"] == "mailgw operations (prod)"
    assert properties["version"] == workbook["version"]
    deployed = json.loads(properties["serializedData"])
    assert deployed == {**workbook, "fallbackResourceIds": ["<appInsights.id>"]}
    assert module.params["appInsightsName"] == Ref("monitoring.outputs.appInsightsName")
    assert main.output("OPERATIONS_WORKBOOK") == "mailgw operations (prod)"


# -- the alerts ---------------------------------------------------------------------------------


def alerts_module(deploy: Any, trees: Mapping[str, Any], **params: Any) -> Template:
    main, _, _ = deploy(**params)
    return module_template(trees, main, "alerts")


def alert(module: Template, symbol: str) -> dict[str, Any]:
    config: dict[str, Any] = module.eval(module.resources[symbol]["config"])
    return config


def test_log_alerts_query_only_the_contract(
    deploy: Any, trees: Mapping[str, Any], contract: Contract
) -> None:
    module = alerts_module(deploy, trees)
    for symbol in LOG_ALERTS:
        resource = module.resources[symbol]
        assert resource["type"] == "Microsoft.Insights/scheduledQueryRules"
        assert resource["api_version"] == "2023-12-01"
        config = alert(module, symbol)
        assert config["properties"]["scopes"] == [Ref("appInsights.id")]
        assert config["properties"]["skipQueryValidation"] is True  # a new component has no rows
        (criterion,) = config["properties"]["criteria"]["allOf"]
        assert contract.problems(criterion["query"]) == [], symbol
        measured = criterion.get("metricMeasureColumn")
        assert measured is None or f"{measured} = value" in criterion["query"], symbol


def test_failed_message_alert_counts_poison_executions(
    deploy: Any, trees: Mapping[str, Any], contract: Contract
) -> None:
    """As docs/operations.md's alert did: more than zero record_failure executions in 5 min."""
    config = alert(alerts_module(deploy, trees), "failedMessages")["properties"]
    (criterion,) = config["criteria"]["allOf"]
    assert criterion["query"].startswith("requests ")
    assert '"record_failure"' in criterion["query"] and "record_failure" in contract.functions
    assert '"mailgw.record_failure"' in criterion["query"]
    assert (criterion["timeAggregation"], criterion["operator"], criterion["threshold"]) == (
        "Count",
        "GreaterThan",
        0,
    )
    assert config["windowSize"] == config["evaluationFrequency"] == "PT5M"


def test_queue_alerts_follow_the_queue_name_and_threshold(
    deploy: Any, trees: Mapping[str, Any], contract: Contract
) -> None:
    module = alerts_module(deploy, trees)
    poison = alert(module, "poisonPoison")["properties"]["criteria"]["allOf"][0]
    assert '"mail-outbound-poison-poison"' in poison["query"]  # a documented queue value
    assert (poison["operator"], poison["threshold"]) == ("GreaterThan", 0)
    renamed = alerts_module(deploy, trees, queueName="outgoing", oldestMessageAlertMinutes=40)
    poison = alert(renamed, "poisonPoison")["properties"]["criteria"]["allOf"][0]
    assert '"outgoing-poison-poison"' in poison["query"]
    oldest = alert(renamed, "oldestMessage")["properties"]["criteria"]["allOf"][0]
    assert '"mailgw.queue.oldest_age"' in oldest["query"] and '"outgoing"' in oldest["query"]
    assert (oldest["timeAggregation"], oldest["operator"], oldest["threshold"]) == (
        "Maximum",
        "GreaterThan",
        40 * 60,  # the gauge is in seconds
    )


def test_storage_availability_alert(deploy: Any, trees: Mapping[str, Any]) -> None:
    module = alerts_module(deploy, trees)
    resource = module.resources["storageAvailability"]
    assert resource["type"] == "Microsoft.Insights/metricAlerts"
    config = alert(module, "storageAvailability")
    assert config["location"] == "global"
    properties = config["properties"]
    assert properties["scopes"] == [Ref("account.id")]
    assert module.params["storageAccountName"] == Ref("storage.outputs.name")
    criteria = properties["criteria"]
    assert criteria["odata.type"] == "Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria"
    (criterion,) = criteria["allOf"]
    assert (criterion["metricNamespace"], criterion["metricName"]) == (
        "Microsoft.Storage/storageAccounts",
        "Availability",
    )
    assert (criterion["operator"], criterion["timeAggregation"]) == ("LessThan", "Average")
    assert 90 <= criterion["threshold"] < 100


def notified(module: Template, symbol: str) -> list[Any]:
    properties = alert(module, symbol)["properties"]
    if symbol == "storageAvailability":  # metric alerts list {actionGroupId} objects
        return [action["actionGroupId"] for action in properties["actions"]]
    groups: list[Any] = properties["actions"]["actionGroups"]
    return groups


@pytest.mark.parametrize(
    ("params", "groups", "created"),
    [
        ({}, [], False),
        ({"alertEmail": "ops@contoso.com"}, [Ref("emailGroup.id")], True),
        ({"alertActionGroupId": EXISTING_GROUP}, [EXISTING_GROUP], False),
        (
            {"alertEmail": "ops@contoso.com", "alertActionGroupId": EXISTING_GROUP},
            [EXISTING_GROUP, Ref("emailGroup.id")],
            True,
        ),
    ],
)
def test_every_alert_notifies_the_action_groups(
    deploy: Any,
    trees: Mapping[str, Any],
    params: dict[str, Any],
    groups: list[Any],
    created: bool,
) -> None:
    module = alerts_module(deploy, trees, **params)
    for symbol in ALERTS:
        assert notified(module, symbol) == groups, symbol
    email_group = module.resources["emailGroup"]["config"]
    assert module.eval(email_group["condition"]) is created
    if created:
        group = module.eval(email_group["config"])
        assert group["location"] == "global"
        assert len(group["properties"]["groupShortName"]) <= 12  # Azure's limit
        (receiver,) = group["properties"]["emailReceivers"]
        assert receiver["emailAddress"] == "ops@contoso.com"


def test_alerts_have_distinct_names_and_say_what_to_do(
    deploy: Any, trees: Mapping[str, Any]
) -> None:
    main, _, _ = deploy()
    module = module_template(trees, main, "alerts")
    names = [alert(module, symbol)["name"] for symbol in ALERTS]
    assert len(set(names)) == len(names)
    assert main.eval(main.outputs["ALERT_RULES"]["value"]) == Ref("alerts.outputs.alertNames")
    assert module.eval(module.outputs["alertNames"]["value"]) == [
        Ref(f"{symbol}.name") for symbol in ALERTS
    ]
    for symbol in ALERTS:
        description = alert(module, symbol)["properties"]["description"]
        assert len(description) > 80, symbol
        assert alert(module, symbol)["properties"]["severity"] in (1, 2), symbol


# -- the guides ---------------------------------------------------------------------------------


def test_operations_guide_queries_are_in_the_contract(contract: Contract) -> None:
    """The KQL in docs/operations.md reads the same telemetry as the workbook."""
    guide = (ROOT / "docs" / "operations.md").read_text()
    kql = fenced_blocks(guide, "kusto")
    assert kql
    for query in kql:
        assert contract.problems(" ".join(query.split())) == [], query
