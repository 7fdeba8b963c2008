"""``--expr``: a Python expression evaluated once per record.

The expression is compiled when the processor starts, so a typo is a usage error (exit 2) before
any record is read, and names it cannot know are refused then too. Per record it sees:

==============  ====================================================================
``key``         the key (bytes, or None)
``value``       the value (bytes, or None for a tombstone)
``text``        the value decoded as UTF-8 (invalid bytes replaced), or None
``headers``     a dict of header name -> value (bytes or None); the last one of a name wins
``topic``       the input topic; ``partition``, ``offset``, ``timestamp`` (ms) of the record
``json``, ``re``, ``math``  the modules, e.g. ``json.loads(value)["amount"]``
==============  ====================================================================

Everything lives in one namespace, so comprehensions and lambdas see these names too. An
expression is assumed to be deterministic: after a crash, records are evaluated again and the
results must match (that is how duplicates are recognised).
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import re
from typing import Any

from kctl.errors import InvalidArgumentError, StreamError
from kctl.storage.records import Record

RECORD_NAMES = ("key", "value", "text", "headers", "topic", "partition", "offset", "timestamp")
MODULES = {"json": json, "re": re, "math": math}


def _free_names(tree: ast.AST) -> set[str]:
    """Names the expression reads that nothing inside it binds (an approximation that errs on the
    side of allowing: any name bound anywhere in the expression counts as bound)."""
    loaded: set[str] = set()
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return loaded - bound


class RecordExpression:
    """A compiled ``--expr``. Not thread-safe (one namespace, reused for every record)."""

    def __init__(self, source: str, option: str = "--expr") -> None:
        self.source = source
        self.option = option
        if not source.strip():
            raise InvalidArgumentError(f"{option} is empty")
        try:
            tree = ast.parse(source.strip(), f"<{option}>", mode="eval")
            self.code = compile(tree, f"<{option}>", "eval")
        except SyntaxError as exc:
            where = f" at column {exc.offset}" if exc.offset else ""
            raise InvalidArgumentError(f"invalid {option} {source!r}: {exc.msg}{where}") from None
        known = set(RECORD_NAMES) | set(MODULES) | set(dir(builtins))
        unknown = sorted(_free_names(tree) - known)
        if unknown:
            raise InvalidArgumentError(
                f"{option} {source!r} uses unknown name(s) {', '.join(unknown)} "
                f"(available: {', '.join(RECORD_NAMES)}, json, re, math and Python's builtins)")
        used = _free_names(tree)
        self._needs_text = "text" in used
        self._needs_headers = "headers" in used
        self._ns: dict[str, Any] = {"__builtins__": builtins, **MODULES}

    def evaluate(self, topic: str, partition: int, record: Record) -> Any:
        """The expression's value for ``record``; a failure is a :class:`StreamError` naming it."""
        ns = self._ns
        value = record.value
        ns["key"] = record.key
        ns["value"] = value
        ns["topic"] = topic
        ns["partition"] = partition
        ns["offset"] = record.offset
        ns["timestamp"] = record.timestamp
        if self._needs_text:
            ns["text"] = None if value is None else value.decode("utf-8", "replace")
        if self._needs_headers:
            ns["headers"] = dict(record.headers)
        try:
            return eval(self.code, ns)  # the user's own expression: evaluating it is the feature
        except Exception as exc:
            raise StreamError(
                f"{self.option} {self.source!r} failed on record {topic}-{partition}@{record.offset}: "
                f"{type(exc).__name__}: {exc}") from None


def to_bytes(result: Any, what: str) -> bytes | None:
    """An expression's result as record bytes: bytes as they are, str as UTF-8, None as null,
    numbers, booleans, lists and dicts as JSON."""
    if result is None or isinstance(result, bytes):
        return result
    if isinstance(result, str):
        return result.encode()
    if isinstance(result, (bytearray, memoryview)):
        return bytes(result)
    if isinstance(result, (bool, int, float, list, dict)):
        try:
            return json.dumps(result, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise StreamError(f"{what} is not JSON-serialisable: {exc}") from None
    raise StreamError(f"{what} is a {type(result).__name__}; return bytes, str, None, a number, a list or "
                      "a dict (written as JSON), or a (key, value) tuple")


def map_result(result: Any, key: bytes | None, where: str) -> tuple[bytes | None, bytes | None]:
    """(key, value) of a map expression's result: a 2-tuple sets both, anything else is the value."""
    if isinstance(result, tuple):
        if len(result) != 2:
            raise StreamError(f"the result for {where} is a tuple of {len(result)}; a tuple must be (key, value)")
        return to_bytes(result[0], f"the key for {where}"), to_bytes(result[1], f"the value for {where}")
    return key, to_bytes(result, f"the result for {where}")
