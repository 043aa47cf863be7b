"""A small evaluator of pycep-parser trees, so tests can ask what the Bicep would deploy.

pycep-parser turns a ``.bicep`` file into JSON (tools/parse_bicep.py runs it in .venv-infra). This
module evaluates the subset of expressions the gateway's templates use: literals, parameters,
variables, string interpolation, property and index access, the operators, and the functions
``string union items empty contains toLower split max min concat fail``, and ``loadJsonContent`` /
``loadTextContent`` when the template knows its directory. What only Azure knows at
deployment time (``identity.properties.clientId``, a module's outputs, ``uniqueString(...)``) stays
symbolic: a :class:`Ref` whose text names the expression, e.g. ``<identity.properties.clientId>``.

pycep gives literal strings and identifiers the same JSON form; a string is taken as a reference
when it names a parameter, variable, resource, module or loop variable of the file, as in Bicep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INTERPOLATION = re.compile(r"\$\{([^}]*)\}")
IDENTIFIER_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class Ref:
    """A value known only at deployment time, named by the expression that produces it."""

    path: str

    def attr(self, name: str) -> Ref:
        return Ref(f"{self.path}.{name}")

    def __str__(self) -> str:
        return f"<{self.path}>"


class EvaluationError(ValueError):
    """The expression uses something this evaluator does not model."""


class DeploymentFailure(Exception):
    """The template called ``fail(message)``: Azure would stop the deployment with ``message``.

    Like ARM, the evaluator reaches ``fail`` only on the branch of ``?:`` or ``??`` it takes.
    """


def strip_quotes(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == "'" else key


class _Section:
    """A declaration section of the parsed file (``template.resources``...), read by the
    attribute's name; empty when the file declares none."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, template: Template, owner: type | None = None) -> Mapping[str, Any]:
        section: Mapping[str, Any] = template.tree.get(self.name, {})
        return section


@dataclass
class Template:
    """One parsed file, evaluated with given parameter values (others take their defaults).
    ``directory`` is the file's folder, where ``loadJsonContent('x.json')`` finds its file."""

    tree: Mapping[str, Any]
    params: Mapping[str, Any] = field(default_factory=dict)
    directory: Path | None = None
    _vars: dict[str, Any] = field(default_factory=dict, init=False)
    _locals: list[dict[str, Any]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        unknown = set(self.params) - set(self.parameters)
        if unknown:
            raise EvaluationError(f"no such parameter(s): {sorted(unknown)}")

    # -- declarations --------------------------------------------------------------------------

    parameters = _Section()
    variables = _Section()
    resources = _Section()
    modules = _Section()
    outputs = _Section()

    def decorator(self, kind: str, name: str, decorator_type: str) -> Any:
        """The argument of a decorator (``description``, ``min_value``...) of a declaration."""
        declaration = {"param": self.parameters, "var": self.variables, "output": self.outputs}[
            kind
        ][name]
        for decorator in declaration.get("decorators", []):
            if decorator["type"] == decorator_type:
                return decorator.get("argument")
        return None

    # -- names ---------------------------------------------------------------------------------

    def is_name(self, text: str) -> bool:
        return (
            any(text in scope for scope in self._locals)
            or text in self.parameters
            or text in self.variables
            or text in self.resources
            or text in self.modules
        )

    def lookup(self, name: str) -> Any:
        for scope in reversed(self._locals):
            if name in scope:
                return scope[name]
        if name in self.parameters:
            if name in self.params:
                return self.params[name]
            default = self.parameters[name].get("default")
            if default is None:
                return Ref(f"param:{name}")  # required, and not given
            return self.eval(default)
        if name in self.variables:
            if name not in self._vars:
                self._vars[name] = self.eval(self.variables[name]["value"])
            return self._vars[name]
        if name in self.resources or name in self.modules:
            return Ref(name)
        raise EvaluationError(f"unknown name {name!r}")

    def var(self, name: str) -> Any:
        return self.lookup(name)

    def output(self, name: str) -> Any:
        return self.eval(self.outputs[name]["value"])

    # -- evaluation ----------------------------------------------------------------------------

    def eval(self, node: Any) -> Any:
        if node is None or isinstance(node, bool | int | float):
            return node
        if isinstance(node, str):
            if self.is_name(node):
                return self.lookup(node)
            if "${" in node:
                return INTERPOLATION.sub(lambda m: to_text(self.eval_text(m.group(1))), node)
            return node
        if isinstance(node, list):
            return [self.eval(item) for item in node]
        if isinstance(node, dict):
            # pycep's expression nodes: {"function": {...}}, {"operator": {...}}, a loop. An
            # object literal may have a property of that name too (a metric alert's
            # `operator: 'GreaterThan'`), whose value is no node.
            if isinstance(node.get("function"), dict) and len(node) == 1:
                return self.call(node["function"])
            if isinstance(node.get("operator"), dict) and len(node) == 1:
                return self.operate(node["operator"])
            if isinstance(node.get("loop_type"), dict):
                return self.loop(node)
            return {
                strip_quotes(to_text(self.eval(key)) if "${" in key else key): self.eval(value)
                for key, value in node.items()
            }
        raise EvaluationError(f"cannot evaluate {node!r}")

    def eval_text(self, text: str) -> Any:
        """An expression inside ``${...}``: a name with property access, else symbolic."""
        text = text.strip()
        if IDENTIFIER_PATH.match(text):
            head, *rest = text.split(".")
            if self.is_name(head):
                value = self.lookup(head)
                for name in rest:
                    value = get_attr(value, name)
                return value
        return Ref(text)

    def loop(self, node: Mapping[str, Any]) -> list[Any]:
        detail = node["loop_type"]["detail"]
        if node["loop_type"]["type"] != "array":
            raise EvaluationError(f"loop type {node['loop_type']['type']} is not modelled")
        items = self.eval(detail["array_name"])
        if not isinstance(items, list):
            raise EvaluationError(f"loop over a non-list: {items!r}")
        results = []
        for item in items:
            self._locals.append({detail["item_name"]: item})
            try:
                if node.get("condition") is None or self.eval(node["condition"]) is True:
                    results.append(self.eval(node["config"]))
            finally:
                self._locals.pop()
        return results

    def accessor_path(self, node: Any) -> Iterator[tuple[str, Any]]:
        """pycep nests ``a.b.c`` to the right: accessor(a, accessor(b, c))."""
        if isinstance(node, str):
            yield "attr", node
            return
        operator = node.get("operator", {}) if isinstance(node, dict) else {}
        if operator.get("type") == "property_accessor":
            yield from self.accessor_path(operator["operands"]["operand_1"])
            yield from self.accessor_path(operator["operands"]["operand_2"])
            return
        raise EvaluationError(f"unsupported accessor {node!r}")

    def operate(self, operator: Mapping[str, Any]) -> Any:
        kind = operator["type"]
        operands = operator["operands"]
        if kind == "property_accessor":
            value = self.eval(operands["operand_1"])
            for _, name in self.accessor_path(operands["operand_2"]):
                value = get_attr(value, name)
            return value
        if kind == "index_accessor":
            value = self.eval(operands["operand_1"])
            index = self.eval(operands["operand_2"])
            if isinstance(value, Ref):
                return value.attr(f"[{index}]")
            return value[index]
        if kind == "conditional":
            condition = self.eval(operands["condition"])
            if not isinstance(condition, bool):
                raise EvaluationError(f"condition is not a boolean: {condition!r}")
            return self.eval(operands["true_value" if condition else "false_value"])
        if kind == "not":
            value = self.eval(operands["bool_value"])
            return require_bool(value) is False
        if kind in ("and", "or"):
            values = [require_bool(self.eval(value)) for value in operands.values()]
            return all(values) if kind == "and" else any(values)
        if kind == "coalesce":
            for value in operands.values():
                result = self.eval(value)
                if result is not None:
                    return result
            return None
        left = self.eval(operands.get("operand_1"))
        right = self.eval(operands.get("operand_2"))
        comparisons = {
            "equals": lambda a, b: a == b,
            "not_equals": lambda a, b: a != b,
            "greater_than": lambda a, b: a > b,
            "greater_than_or_equals": lambda a, b: a >= b,
            "less_than": lambda a, b: a < b,
            "less_than_or_equals": lambda a, b: a <= b,
            "add": lambda a, b: a + b,
            "substract": lambda a, b: a - b,
            "multiply": lambda a, b: a * b,
        }
        if kind not in comparisons:
            raise EvaluationError(f"operator {kind} is not modelled")
        if isinstance(left, Ref) or isinstance(right, Ref):
            raise EvaluationError(f"{kind} on a deployment-time value: {left!r}, {right!r}")
        return comparisons[kind](left, right)

    def call(self, function: Mapping[str, Any]) -> Any:
        name = function["type"]
        raw = [value for value in function.get("parameters", {}).values() if value is not None]
        args = [self.eval(value) for value in raw]
        rendered = ", ".join(to_text(arg) for arg in args)
        if name != "union" and any(isinstance(arg, Ref) for arg in args):
            # toLower(uniqueString(...)) and the like: known only at deployment time
            return Ref(f"{name}({rendered})")
        if name == "string":
            (value,) = args
            return to_text(value)
        if name == "union":
            merged: dict[str, Any] = {}
            for arg in args:
                if not isinstance(arg, dict):
                    raise EvaluationError(f"union of a non-object: {arg!r}")
                merged.update(arg)
            return merged
        if name == "items":
            (value,) = args
            return [{"key": key, "value": item} for key, item in sorted(value.items())]
        if name == "empty":
            (value,) = args
            return not value
        if name == "contains":
            container, item = args
            return item in container
        if name == "to_lower":
            (value,) = args
            return value.lower()
        if name == "split":
            value, delimiter = args
            return value.split(delimiter)
        if name in ("max", "min"):
            return (max if name == "max" else min)(args)
        if name == "concat":
            return [item for arg in args for item in arg]
        if name == "fail":
            (message,) = args
            raise DeploymentFailure(to_text(message))
        if name in ("load_json_content", "load_text_content") and self.directory is not None:
            text = (self.directory / args[0]).read_text("utf-8")  # compile time, like Bicep
            return json.loads(text) if name == "load_json_content" else text
        return Ref(f"{name}({rendered})")


def require_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise EvaluationError(f"not a boolean: {value!r}")
    return value


def get_attr(value: Any, name: str) -> Any:
    if isinstance(value, Ref):
        return value.attr(name)
    if isinstance(value, dict):
        return value[name]
    raise EvaluationError(f"property {name!r} of {value!r}")


def to_text(value: Any) -> str:
    """ARM's string(): booleans are lower-case, objects and arrays compact JSON; deployment-time
    values keep their symbol."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)
