"""docs/telemetry.md read as data, and a checker for KQL queries against it.

The workbook, the alerts and the guides query Application Insights by the names in that contract.
A query that names a metric, span, attribute, function or value the contract does not list would
run in Azure Monitor and quietly return nothing, so :func:`Contract.problems` lists every such name
in a query. It reads KQL as text, by the few shapes the project's queries use (``name == "x"``,
``name in (...)``, ``customDimensions.x`` / ``customDimensions["x"]``, ``failure.x``); a query in
another shape is reported rather than passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

#: App Insights tables by the span kinds that land in them (docs/telemetry.md, "Spans").
SPAN_TABLES = {
    "requests": {"SERVER", "CONSUMER"},
    "dependencies": {"CLIENT", "PRODUCER", "INTERNAL"},
}
FAILED_EVENT = "MAILGW_FAILED "

SIMPLE_VALUE = re.compile(r"^[\w./-]+$")
NAME_EQUALS = re.compile(r"\bname\s*==\s*\"([^\"]+)\"")
NAME_IN = re.compile(r"\bname\s+in\s*\(([^)]*)\)")
DIMENSION = re.compile(r"customDimensions(?:\.(\w+)|\[\"([^\"]+)\"\])")
DIMENSION_EQUALS = re.compile(
    r"tostring\(customDimensions(?:\.(\w+)|\[\"([^\"]+)\"\])\)\s*==\s*\"([^\"]+)\""
)
FAILURE_FIELD = re.compile(r"\bfailure(?:\.(\w+)|\[\"(\w+)\"\])")
STRING = re.compile(r"\"([^\"]*)\"")


def split_top_level(text: str) -> list[str]:
    """Split at commas outside parentheses: ``a (x, y), b`` → ``["a (x, y)", "b"]``."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def name_and_values(entry: str) -> tuple[str, set[str]]:
    """``outcome (ok, error)`` → ("outcome", {"ok", "error"}); prose in parentheses is no list."""
    match = re.match(r"([\w./-]+)\s*(?:\(([^)]*)\))?", entry)
    assert match, entry
    listed = [v.strip() for v in (match.group(2) or "").split(",")]
    values = set(listed) if all(SIMPLE_VALUE.match(v) for v in listed) else set()
    return match.group(1), values


def table_rows(section: str) -> list[list[str]]:
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not re.match(r"^\|\s*(name|-+)\s*\|", line):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@dataclass
class Contract:
    metrics: dict[str, set[str]] = field(default_factory=dict)  # name → attributes
    spans: dict[str, tuple[str, set[str]]] = field(default_factory=dict)  # name → kind, attributes
    functions: set[str] = field(default_factory=set)
    values: dict[str, set[str]] = field(default_factory=dict)  # attribute → documented values
    failed_fields: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, path: Path) -> Contract:
        contract = cls()
        sections = {
            m.group(1).split()[0]: m.group(2)
            for m in re.finditer(r"^## (.+?)\n(.*?)(?=^## |\Z)", path.read_text(), re.S | re.M)
        }
        for name, _kind, _unit, attributes in table_rows(sections["Metrics"]):
            contract.metrics[name] = contract._attributes(attributes)
        for name, kind, attributes in table_rows(sections["Spans"]):
            span = name.split(" (")[0]
            contract.spans[span] = (kind.split()[0], contract._attributes(attributes))
        body = " ".join(sections["Functions"].split())
        contract.functions = {name_and_values(p)[0] for p in split_top_level(body)}
        event = re.search(
            r"MAILGW_FAILED \{json\}` one line per failed message \(([^)]*)\)",
            " ".join(sections["Log"].split()),
        )
        assert event, "docs/telemetry.md: the MAILGW_FAILED fields are not listed"
        contract.failed_fields = {f.strip() for f in event.group(1).split(",")}
        return contract

    def _attributes(self, cell: str) -> set[str]:
        names = set()
        for entry in split_top_level(cell.split(" — ")[0]):
            name, values = name_and_values(entry)
            names.add(name)
            if values:
                self.values.setdefault(name, set()).update(values)
        return names

    def attribute_names(self) -> set[str]:
        spans = (attributes for _, attributes in self.spans.values())
        return set().union(*self.metrics.values(), *spans)

    def problems(self, query: str) -> list[str]:
        """Every name in ``query`` that the contract does not list (empty: the query is fine)."""
        table = query.split()[0]
        named = set(NAME_EQUALS.findall(query))
        for listed in NAME_IN.findall(query):
            named |= set(STRING.findall(listed))
        found: list[str] = []
        attributes_of: list[set[str]] = []
        if table == "customMetrics":
            found += [f"metric {n}" for n in sorted(named - set(self.metrics))]
            attributes_of = [self.metrics[n] for n in named if n in self.metrics]
        elif table in SPAN_TABLES:
            spans = {n for n, (kind, _) in self.spans.items() if kind in SPAN_TABLES[table]}
            known = spans | (self.functions if table == "requests" else set())
            found += [f"{table} row {n}" for n in sorted(named - known)]
            attributes_of = [self.spans[n][1] for n in named if n in spans]
        elif table == "traces":
            if not re.search(rf'message startswith(_cs)? "{FAILED_EVENT}"', query):
                found.append(f"traces query not on the {FAILED_EVENT.strip()} event")
            for a, b in FAILURE_FIELD.findall(query):
                if (a or b) not in self.failed_fields:
                    found.append(f"{FAILED_EVENT.strip()} field {a or b}")
        else:
            found.append(f"table {table}")
        if table != "traces" and not named:
            found.append("no name filter: the query is not tied to the contract")
        for a, b in DIMENSION.findall(query):
            key = a or b
            if not attributes_of or any(key not in attributes for attributes in attributes_of):
                found.append(f"attribute {key} (not on every {table} row the query reads)")
        for a, b, value in DIMENSION_EQUALS.findall(query):
            documented = self.values.get(a or b)
            if documented and value not in documented:
                found.append(f"value {value} of {a or b}")
        known_names = set(self.metrics) | set(self.spans) | self.attribute_names()
        for literal in STRING.findall(query):
            if literal.startswith("mailgw.") and literal not in known_names:
                found.append(f"name {literal}")
        return found
