"""The series selectors of a PromQL expression: which metric names it reads, with which labels.

A small lexer, not a parser: promtool checks the syntax; this only has to tell a metric
name from a function, an aggregation, a keyword or a label list, and read `{...}` matchers.
Grafana variables (`$device_type`, `$__rate_interval`) are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
# Keywords followed by a parenthesized list of label names.
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}

_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*")


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, operator, value)

    def labels(self) -> set[str]:
        return {label for label, _, _ in self.matchers}


def _skip_string(expr: str, i: int) -> int:
    quote = expr[i]
    i += 1
    while expr[i] != quote:
        i += 2 if expr[i] == "\\" and quote != "`" else 1
    return i + 1


def _read_string(expr: str, i: int) -> tuple[str, int]:
    end = _skip_string(expr, i)
    return expr[i + 1 : end - 1], end


def _skip_group(expr: str, i: int, opening: str, closing: str) -> int:
    """From `expr[i] == opening` to just after its matching `closing`."""
    depth = 0
    while True:
        if expr[i] in "\"'`":
            i = _skip_string(expr, i)
            continue
        depth += expr[i] == opening
        depth -= expr[i] == closing
        i += 1
        if depth == 0:
            return i


def _next_char(expr: str, i: int) -> tuple[str, int]:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return (expr[i] if i < len(expr) else ""), i


def _matchers(expr: str, i: int) -> tuple[tuple[tuple[str, str, str], ...], int]:
    """Read `{a="x", b=~"y"}` from `expr[i] == "{"`."""
    found = []
    i += 1
    while True:
        char, i = _next_char(expr, i)
        if char == "}":
            return tuple(found), i + 1
        if char == ",":
            i += 1
            continue
        m = _MATCHER.match(expr, i)
        if not m:
            raise ValueError(f"cannot read the label matchers at {expr[i:]!r}")
        value, i = _read_string(expr, m.end())
        found.append((m.group(1), m.group(2), value))


def selectors(expr: str) -> list[Selector]:
    """Every series selector in `expr`, in order."""
    found: list[Selector] = []
    i = 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            i = _skip_string(expr, i)
        elif char == "[":
            i = _skip_group(expr, i, "[", "]")
        elif char == "$":  # a Grafana variable: $name or ${name}
            m = re.compile(r"\$\{?[a-zA-Z0-9_]+\}?").match(expr, i)
            i = m.end() if m else i + 1
        elif char == "{":
            raise ValueError(f"a selector without a metric name in {expr!r}")
        elif char.isdigit() or (char == "." and expr[i + 1 : i + 2].isdigit()):
            m = re.compile(r"[0-9.]+(e[+-]?[0-9]+)?[a-zA-Z0-9]*").match(expr, i)
            assert m is not None
            i = m.end()
        elif _IDENT.match(expr, i):
            m = _IDENT.match(expr, i)
            assert m is not None
            word, i = m.group(0), m.end()
            following, j = _next_char(expr, i)
            if word in LABEL_LISTS:
                i = _skip_group(expr, j, "(", ")") if following == "(" else j
            elif word in KEYWORDS or following == "(":
                pass  # a keyword, a function or an aggregation with its argument
            elif word in AGGREGATIONS and expr.startswith(("by", "without"), j):
                pass  # `sum by (x) (...)`
            elif following == "{":
                matchers, i = _matchers(expr, j)
                found.append(Selector(word, matchers))
            else:
                found.append(Selector(word, ()))
        else:
            i += 1
    return found
