"""HTTP trigger route templates, matched as the Functions host's ASP.NET Core routing matches them.

aiohttp's router has no optional parameters, defaults, catch-alls that match nothing, or ASP.NET
constraints (``{id:int}``, ``{id:guid}``, ``{n:range(1,9)}``...), and a wrong method there is a 405
where the host answers 404. So templates compile here to a regular expression for the shape plus
one predicate per constraint; routes are tried in ASP.NET's precedence order.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import unquote

Predicate = Callable[[str], bool]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_INTEGER = re.compile(r"\s*[+-]?\d+\s*")
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
_DECIMAL = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)\s*")


class RouteTemplateError(ValueError):
    """A route template the host would refuse to index."""


def _integer_in(bounds: tuple[int, int]) -> Predicate:
    return lambda v: bool(_INTEGER.fullmatch(v)) and bounds[0] <= int(v) <= bounds[1]


def _parses(parse: Callable[[str], object]) -> Predicate:
    """``guid`` and ``datetime`` hold when the value parses as one (a ValueError: it does not)."""

    def holds(value: str) -> bool:
        try:
            parse(value)
        except ValueError:
            return False
        return True

    return holds


def _numbers(args: str, count: tuple[int, ...], name: str) -> list[int]:
    parts = [p.strip() for p in args.split(",")] if args.strip() else []
    if len(parts) not in count or not all(_INTEGER.fullmatch(p) for p in parts):
        raise RouteTemplateError(
            f"constraint '{name}' needs {' or '.join(map(str, count))} integer(s)"
        )
    return [int(p) for p in parts]


def _as_long(value: str) -> int | None:
    return int(value) if _integer_in(_INT64)(value) else None


def _constraint(name: str, args: str | None) -> Predicate:
    """The predicate for one inline constraint (the ASP.NET Core built-in set)."""
    key = name.lower()
    simple: dict[str, Predicate] = {
        "int": _integer_in(_INT32),
        "long": _integer_in(_INT64),
        "bool": lambda v: v.lower() in ("true", "false"),
        "guid": _parses(uuid.UUID),
        "alpha": lambda v: bool(re.fullmatch(r"[a-zA-Z]*", v)),
        "double": lambda v: bool(_NUMBER.fullmatch(v)),
        "float": lambda v: bool(_NUMBER.fullmatch(v)),
        "decimal": lambda v: bool(_DECIMAL.fullmatch(v)),
        "datetime": _parses(datetime.fromisoformat),
        "required": lambda v: v != "",
    }
    if key in simple:
        if args is not None:
            raise RouteTemplateError(f"constraint '{name}' takes no arguments")
        return simple[key]
    if args is None:
        raise RouteTemplateError(f"the constraint reference '{name}' could not be resolved")
    if key == "regex":
        try:
            pattern = re.compile(args, re.IGNORECASE)
        except re.error as error:
            raise RouteTemplateError(f"invalid regex constraint {args!r}: {error}") from None
        return lambda v: pattern.search(v) is not None  # ASP.NET uses IsMatch: unanchored
    if key in ("minlength", "maxlength"):
        (n,) = _numbers(args, (1,), name)
        return (lambda v: len(v) >= n) if key == "minlength" else (lambda v: len(v) <= n)
    if key == "length":
        bounds = _numbers(args, (1, 2), name)
        low, high = (bounds[0], bounds[0]) if len(bounds) == 1 else (bounds[0], bounds[1])
        return lambda v: low <= len(v) <= high
    if key in ("min", "max", "range"):
        bounds = _numbers(args, (2,) if key == "range" else (1,), name)
        low = bounds[0] if key != "max" else _INT64[0]
        high = bounds[-1] if key != "min" else _INT64[1]

        def in_range(v: str) -> bool:
            number = _as_long(v)
            return number is not None and low <= number <= high

        return in_range
    raise RouteTemplateError(f"the constraint reference '{name}' could not be resolved")


@dataclass
class _Parameter:
    name: str
    catch_all: bool = False
    optional: bool = False
    default: str | None = None
    predicates: list[Predicate] = field(default_factory=list)


def _split_outside_braces(text: str, separator: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "{":
            depth += 1
        elif char == "}":
            depth = max(depth - 1, 0)
        elif char == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _parse_parameter(body: str) -> _Parameter:
    """Parse ``[*|**]name[:constraint[(args)]]...[?|=default]`` (the inside of the braces)."""
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    match = re.match(r"[^:?=]+", body)
    if not match:
        raise RouteTemplateError(f"route parameter '{{{body}}}' has no name")
    parameter = _Parameter(name=match.group(0).strip(), catch_all=catch_all)
    rest = body[match.end() :]
    while rest.startswith(":"):
        constraint = re.match(r":([A-Za-z]+)", rest)
        if not constraint:
            raise RouteTemplateError(f"invalid constraint in '{{{body}}}'")
        rest = rest[constraint.end() :]
        args = None
        if rest.startswith("("):
            depth = 0
            for i, char in enumerate(rest):
                depth += {"(": 1, ")": -1}.get(char, 0)
                if depth == 0:
                    args, rest = rest[1:i], rest[i + 1 :]
                    break
            else:
                raise RouteTemplateError(f"unbalanced parentheses in '{{{body}}}'")
        parameter.predicates.append(_constraint(constraint.group(1), args))
    if rest == "?":
        parameter.optional = True
    elif rest.startswith("="):
        parameter.default = rest[1:]
    elif rest:
        raise RouteTemplateError(f"invalid route parameter '{{{body}}}'")
    return parameter


def _parse_segment(segment: str) -> list[str | _Parameter]:
    """A path segment as literal text and parameters; ``{{`` and ``}}`` are literal braces."""
    parts: list[str | _Parameter] = []
    literal, i = "", 0
    while i < len(segment):
        if segment.startswith("{{", i) or segment.startswith("}}", i):
            literal, i = literal + segment[i], i + 2
        elif segment[i] == "{":
            body, j = "", i + 1
            while j < len(segment):
                if segment.startswith(("{{", "}}"), j):
                    body, j = body + segment[j], j + 2
                elif segment[j] == "}":
                    break
                else:
                    body, j = body + segment[j], j + 1
            if j >= len(segment):
                raise RouteTemplateError(f"unclosed '{{' in route segment {segment!r}")
            if literal:
                parts.append(literal)
                literal = ""
            parts.append(_parse_parameter(body))
            i = j + 1
        elif segment[i] == "}":
            raise RouteTemplateError(f"unmatched '}}' in route segment {segment!r}")
        else:
            literal, i = literal + segment[i], i + 1
    if literal:
        parts.append(literal)
    return parts


@dataclass(frozen=True)
class RouteTemplate:
    """One compiled route: ``match(raw_path)`` gives the route values, or ``None``."""

    template: str
    pattern: re.Pattern[str]
    groups: tuple[tuple[str, str], ...]  # (regex group, parameter name)
    predicates: tuple[tuple[str, tuple[Predicate, ...]], ...]
    defaults: tuple[tuple[str, str], ...]
    precedence: tuple[int, ...]

    def match(self, raw_path: str) -> dict[str, str] | None:
        found = self.pattern.match(raw_path)
        if not found:
            return None
        values = dict(self.defaults)
        for group, name in self.groups:
            captured = found.group(group)
            if captured is not None:
                values[name] = unquote(captured)
        for name, checks in self.predicates:
            if name in values and not all(check(values[name]) for check in checks):
                return None
        return values


def compile_route(template: str, prefix: str = "") -> RouteTemplate:
    """Compile ``template`` (relative to the route prefix) into a matcher for the raw URL path."""
    clean = template.strip()
    clean = clean[2:] if clean.startswith("~/") else clean.lstrip("/")
    segments = [_parse_segment(s) for s in _split_outside_braces(clean, "/")] if clean else []
    groups: list[tuple[str, str]] = []
    predicates: list[tuple[str, tuple[Predicate, ...]]] = []
    defaults: list[tuple[str, str]] = []
    precedence: list[int] = []
    pieces: list[tuple[str, bool]] = []  # (regex for "/segment", optional)
    seen: set[str] = set()

    for index, parts in enumerate(segments):
        if not parts:
            raise RouteTemplateError(f"route {template!r} has an empty segment")
        regex, optional = "", False
        for position, part in enumerate(parts):
            if isinstance(part, str):
                regex += re.escape(part)
                continue
            if part.name.lower() in seen:
                raise RouteTemplateError(f"route parameter '{part.name}' appears twice")
            seen.add(part.name.lower())
            last = position == len(parts) - 1
            if part.catch_all and (len(parts) > 1 or index != len(segments) - 1):
                raise RouteTemplateError("a catch-all parameter must be the whole last segment")
            group = f"g{len(groups)}"
            groups.append((group, part.name))
            if part.predicates:
                predicates.append((part.name, tuple(part.predicates)))
            if part.default is not None:
                defaults.append((part.name, part.default))
            capture = f"(?P<{group}>{'.*' if part.catch_all else '[^/]+'})"
            may_be_absent = part.catch_all or part.optional or part.default is not None
            if may_be_absent and len(parts) == 1:
                optional = True
                regex += capture
            elif may_be_absent and last and isinstance(parts[position - 1], str):
                # "{name}.{ext?}": the separator goes with the optional parameter, and (as ASP.NET
                # matches complex segments right to left) "a.b.c" gives name "a.b", ext "c". The
                # fallback alternative has its own group names, mapped to the same parameters.
                literal = re.escape(str(parts[position - 1]))
                before = regex[: len(regex) - len(literal)]
                alternative = re.sub(r"\(\?P<(g\d+)>", r"(?P<\1a>", before)
                groups.extend((f"{g}a", n) for g, n in list(groups) if f"(?P<{g}>" in before)
                regex = f"(?:{before}{literal}{capture}|{alternative})"
            elif may_be_absent:
                raise RouteTemplateError(f"optional parameter '{part.name}' must end its segment")
            else:
                regex += capture
        pieces.append((regex, optional))
        params = [p for p in parts if isinstance(p, _Parameter)]
        if not params:
            precedence.append(1)
        elif len(parts) > 1:
            precedence.append(2)
        elif params[0].catch_all:
            precedence.append(5)
        else:
            precedence.append(3 if params[0].predicates else 4)

    for position, (_, optional) in enumerate(pieces):
        if optional and not all(later for _, later in pieces[position + 1 :]):
            raise RouteTemplateError(f"route {template!r}: only trailing segments may be optional")
    body = ""
    for regex, optional in reversed(pieces):
        body = f"(?:/{regex}{body})?" if optional else f"/{regex}{body}"
    head = "/" + re.escape(prefix.strip("/")) if prefix.strip("/") else ""
    pattern = re.compile(f"^{head}{body}/?$", re.IGNORECASE | re.DOTALL)
    return RouteTemplate(
        template=clean,
        pattern=pattern,
        groups=tuple(groups),
        predicates=tuple(predicates),
        defaults=tuple(defaults),
        precedence=tuple(precedence),
    )


def order_routes(routes: Iterable[RouteTemplate]) -> list[RouteTemplate]:
    """Literal segments before constrained, before plain, before catch-all parameters."""
    return sorted(routes, key=lambda r: (r.precedence, r.template.lower()))
