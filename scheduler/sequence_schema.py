"""Pulser's JSON-schema validation of a sequence, one operation at a time.

`jsonschema` validates the whole document against `anyOf` branches that each descend
into every operation, collecting every error with its instance's repr: on an invalid
document its cost grows faster than the number of operations (1,000 bad operations took
20-30 s and 600-900 MB). Validating each operation alone against the schema's
`Operation` definition, then the document without its operations, accepts and refuses
exactly the same documents (the operations are only constrained item by item) in linear
time, stopping at the first bad operation, whose message quotes that operation only.

`install()` makes Pulser's sequence deserializer use this validation instead of its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

EXCERPT_CHARS = 160
_installing = threading.Lock()
_installed = threading.Event()
_trusted = threading.local()  # `on`: this thread deserializes what was validated already


class SchemaError(ValueError):
    """The first part of a sequence that Pulser's schema rejects, briefly."""


def clip(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` on one line, at most `limit` characters (an excerpt, never a whole document)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def install() -> None:
    """Have `Sequence.from_abstract_repr` validate operation by operation (idempotent)."""
    with _installing:
        if _installed.is_set():
            return
        from pulser.json.abstract_repr import deserializer, validation

        original = validation.validate_abstract_repr
        validators = getattr(validation, "_VALIDATORS", None)
        if validators is None or "sequence" not in validators:  # legacy jsonschema: as is
            _installed.set()
            return
        operation = validators["sequence"].evolve(
            schema={"$ref": "sequence-schema.json#/definitions/Operation"}
        )

        def validate(obj_str: str, name: Any) -> None:
            if name == "sequence" and getattr(_trusted, "on", False):
                return
            if name != "sequence":
                original(obj_str, name)
                return
            obj = json.loads(obj_str)
            operations = obj.get("operations") if isinstance(obj, dict) else None
            if not isinstance(operations, list):
                original(obj_str, name)
                return
            _check_operations(operations, operation.is_valid, operation.iter_errors)
            original(json.dumps({**obj, "operations": []}), name)

        deserializer.validate_abstract_repr = validate  # type: ignore[attr-defined]
        _installed.set()


@contextmanager
def trusted() -> Iterator[None]:
    """In this thread, sequences are deserialized without validating them again (a pool
    process of the sandbox validated them)."""
    install()
    _trusted.on = True
    try:
        yield
    finally:
        _trusted.on = False


def _check_operations(
    operations: list[Any],
    is_valid: Callable[[Any], bool],
    iter_errors: Callable[[Any], Any],
) -> None:
    from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

    for index, op in enumerate(operations):
        if is_valid(op):
            continue
        error = best_match(iter_errors(op))
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}"
            for part in (error.absolute_path if error is not None else ())
        )
        message = error.message if error is not None else "invalid"
        raise SchemaError(f"operations[{index}]{where}: {clip(message)}")
