"""The scenario file schema (JSON Schema 2020-12) and line-aware validation.

Structure only; cross-references (a check naming a step that does not exist,
shaping option values) are checked by :mod:`lab.scenario.plan`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

import jsonschema
from jsonschema import Draft202012Validator

from lab.report.metrics import METRIC_NAMES
from lab.scenario.errors import ScenarioError
from lab.scenario.loader import Document, format_path

SHAPING_FIELDS: Final = (
    "delay",
    "jitter",
    "loss",
    "duplicate",
    "reorder",
    "corrupt",
    "rate",
    "loss_burst",
    "loss_model",
    "loss_correlation",
    "delay_distribution",
    "delay_correlation",
    "reorder_gap",
    "queue_limit",
    "seed",
    "mss",
    "slice_delay",
)
SERVICE_ACTIONS: Final = ("kill", "restart", "pause", "unpause", "stop", "start")
PAIR_ACTIONS: Final = ("partition", "heal")
LINK_ACTIONS: Final = ("shape", "unshape")
# Expanded by the plan into timed partition/heal faults; never reaches the runner.
TIMED_ACTIONS: Final = ("flap",)
FAULT_ACTIONS: Final = (*SERVICE_ACTIONS, *PAIR_ACTIONS, *LINK_ACTIONS, *TIMED_ACTIONS)
CHECK_KINDS: Final = (
    "exit_code",
    "same_file",
    "json_field",
    "duration",
    "stdout_contains",
    "stdout_matches",
    "order",
    "pcap",
)
WAIT_KINDS: Final = ("tcp", "udp", "http", "log", "file")
STEP_KINDS: Final = ("run", "wait_for", "copy")
MAX_GRACE: Final = 300.0  # seconds a daemon may take to stop after SIGTERM
MAX_PATTERN: Final = 1000  # characters of a regex in a scenario
OPERATORS: Final = ("==", "!=", "<=", ">=", "<", ">", "between")

_NAME = {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]*$"}
_SERVICE = {"type": "string", "minLength": 1}
_NUMBER_VALUE = {"type": ["number", "string"]}
_SEED = {"type": "integer", "minimum": 0, "maximum": 2**64 - 1}
_SHAPING = (
    {name: _NUMBER_VALUE for name in SHAPING_FIELDS}
    | {"seed": _SEED}
    | {"profile": {"type": "string"}}
)
_PAIR = {"type": "array", "items": _SERVICE, "minItems": 2, "maxItems": 2}
_CONGESTION_NAME = {"type": "string", "minLength": 1}
_FLAP = {
    "type": "object",
    "required": ["between", "down", "up", "times"],
    "additionalProperties": False,
    "properties": {
        "between": _PAIR,
        "down": {"type": "number", "exclusiveMinimum": 0},
        "up": {"type": "number", "exclusiveMinimum": 0},
        "times": {"type": "integer", "minimum": 1, "maximum": 1000},
    },
}
_FILE_REF = {"type": "string", "pattern": r"^[^:/\s]+:/.+$"}
_POSITIVE = {"type": "number", "exclusiveMinimum": 0}

# Where a check reads text or JSON from: one of these keys.
_SOURCE_PROPS: dict[str, Any] = {
    "capture": {"type": "string", "minLength": 1},
    "url": {"type": "string", "pattern": r"^https?://"},
    "via": _SERVICE,
    "logs": _SERVICE,
    "stream": {"enum": ["stdout", "stderr", "both"]},
    "within": _POSITIVE,
}

_COMMON_CHECK = {"kind": {"enum": list(CHECK_KINDS)}, "name": {"type": "string", "minLength": 1}}

_CHECK_KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "exit_code": {
        "required": ["step", "equals"],
        "properties": {"step": {"type": "string"}, "equals": {"type": "integer"}},
    },
    "same_file": {
        "required": ["a", "b"],
        "properties": {"a": _FILE_REF, "b": _FILE_REF},
    },
    "json_field": {
        "required": ["path", "op", "value"],
        "properties": {
            **_SOURCE_PROPS,
            "path": {"type": "string"},
            "op": {"enum": list(OPERATORS)},
            "value": {},
        },
    },
    "duration": {
        "required": ["step"],
        "anyOf": [{"required": ["min"]}, {"required": ["max"]}],
        "properties": {
            "step": {"type": "string"},
            "min": {"type": "number", "minimum": 0},
            "max": {"type": "number", "minimum": 0},
        },
    },
    "stdout_matches": {
        "required": ["regex"],
        "properties": {
            **_SOURCE_PROPS,
            "regex": {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN},
            "count": {"type": "integer", "minimum": 0},
        },
    },
    "stdout_contains": {
        "required": ["text"],
        "properties": {
            **_SOURCE_PROPS,
            "text": {"type": "string", "minLength": 1},
            "count": {"type": "integer", "minimum": 0},
        },
    },
    "order": {
        "required": ["lines"],
        "properties": {
            **_SOURCE_PROPS,
            "lines": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 2},
        },
    },
    # A metric of the packets captured on a link [from, to] (lab.report.metrics).
    "pcap": {
        "required": ["link", "metric", "op", "value"],
        "properties": {
            "link": _PAIR,
            "metric": {"enum": list(METRIC_NAMES)},
            "op": {"enum": list(OPERATORS)},
            "value": {"type": ["number", "array"]},
        },
    },
}


def _check_schema() -> dict[str, Any]:
    branches = []
    for kind, spec in _CHECK_KIND_SCHEMAS.items():
        then = {
            **spec,
            "properties": {**_COMMON_CHECK, **spec["properties"]},
            "additionalProperties": False,
        }
        branches.append(
            {"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]}, "then": then}
        )
    return {
        "type": "object",
        "required": ["kind"],
        "properties": _COMMON_CHECK,
        "allOf": branches,
    }


# A step runs a command (``run``; ``daemon: true`` keeps it running until the others
# are done), waits for something (``wait_for``) or copies files (``copy``).
_RUN_STEP: dict[str, Any] = {
    "required": ["service", "run", "timeout"],
    "properties": {
        "name": _NAME,
        "service": _SERVICE,
        "run": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "timeout": _POSITIVE,
        "parallel": _NAME,
        "background": {"type": "boolean"},
        "daemon": {"type": "boolean"},
        "grace": {"type": "number", "minimum": 0, "maximum": MAX_GRACE},
        "expect_exit": {"type": ["integer", "null"]},
        "capture": _NAME,
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_ENDPOINT = {"type": "string", "pattern": r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$"}
_WAIT = {
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": [kind]} for kind in WAIT_KINDS],
    "properties": {
        "tcp": _ENDPOINT,
        "udp": _ENDPOINT,
        "http": {"type": "string", "pattern": r"^https?://"},
        "log": {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN},
        "file": _FILE_REF,
        "from": _SERVICE,
        "service": _SERVICE,
        "daemon": _NAME,
        "stream": {"enum": ["stdout", "stderr", "both"]},
        "status": {"type": "integer", "minimum": 100, "maximum": 599},
        "send": {"type": "string", "maxLength": 65000},
        "expect": {"type": "string", "minLength": 1, "maxLength": MAX_PATTERN},
        "interval": _POSITIVE,
    },
}
_WAIT_STEP: dict[str, Any] = {
    "required": ["wait_for", "timeout"],
    "properties": {"name": _NAME, "wait_for": _WAIT, "timeout": _POSITIVE, "parallel": _NAME},
}
_COPY_STEP: dict[str, Any] = {
    "required": ["copy"],
    "properties": {
        "name": _NAME,
        "copy": {
            "type": "object",
            "required": ["from", "to"],
            "additionalProperties": False,
            "properties": {
                "from": {"type": "string", "minLength": 1},
                "to": {"type": "string", "minLength": 1},
            },
        },
        "timeout": _POSITIVE,
        "parallel": _NAME,
    },
}


def _step_schema() -> dict[str, Any]:
    """One of the three step kinds, chosen by which of run / wait_for / copy it has."""
    branches = []
    earlier: list[str] = []
    for key, spec in (("run", _RUN_STEP), ("wait_for", _WAIT_STEP), ("copy", _COPY_STEP)):
        condition: dict[str, Any] = {"required": [key]}
        if earlier:  # a step with two of the keys is read as the first kind: one message
            condition["not"] = {"anyOf": [{"required": [other]} for other in earlier]}
        then = {**spec, "additionalProperties": False}
        branches.append({"if": condition, "then": then})
        earlier.append(key)
    return {
        "type": "object",
        "anyOf": [{"required": [key]} for key in STEP_KINDS],
        "allOf": branches,
    }


SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "socketlab scenario",
    "type": "object",
    "required": ["name", "description", "steps", "checks"],
    "additionalProperties": False,
    "properties": {
        "name": _NAME,
        "description": {"type": "string", "minLength": 1},
        "seed": _SEED,
        "congestion": {
            "anyOf": [
                _CONGESTION_NAME,
                {"type": "object", "additionalProperties": _CONGESTION_NAME, "minProperties": 1},
            ],
            "description": "an algorithm (cubic) or a mapping of service to algorithm",
        },
        "links": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["from", "to"],
                "additionalProperties": False,
                "properties": {"from": _SERVICE, "to": _SERVICE, **_SHAPING},
            },
        },
        "steps": {"type": "array", "minItems": 1, "items": _step_schema()},
        "faults": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["at"],
                "additionalProperties": False,
                "properties": {
                    "at": {"type": "number", "minimum": 0},
                    "after": {"type": "string", "minLength": 1},
                    **{action: _SERVICE for action in SERVICE_ACTIONS},
                    "partition": _PAIR,
                    "heal": {
                        "anyOf": [_PAIR, {"const": "all"}],
                        "description": "a pair of services [a, b] or 'all'",
                    },
                    "shape": {
                        "type": "object",
                        "required": ["from", "to"],
                        "additionalProperties": False,
                        "properties": {"from": _SERVICE, "to": _SERVICE, **_SHAPING},
                    },
                    "unshape": {
                        "type": "object",
                        "required": ["from", "to"],
                        "additionalProperties": False,
                        "properties": {"from": _SERVICE, "to": _SERVICE},
                    },
                    "flap": _FLAP,
                },
            },
        },
        "checks": {"type": "array", "minItems": 1, "items": _check_schema()},
    },
}

_TYPE_WORDS: Final = {
    "number": "a number",
    "integer": "an integer",
    "string": "a string",
    "array": "a list",
    "object": "a mapping",
    "boolean": "true or false",
    "null": "null",
}


def _type_words(expected: Any) -> str:
    names = [expected] if isinstance(expected, str) else list(expected)
    return " or ".join(_TYPE_WORDS.get(name, name) for name in names)


def _leaf_errors(error: jsonschema.ValidationError) -> Iterator[jsonschema.ValidationError]:
    """The specific errors under an if/then or anyOf, not the umbrella one."""
    if error.context and error.validator not in {"anyOf", "oneOf"}:
        for sub in error.context:
            yield from _leaf_errors(sub)
    else:
        yield error


_SIMPLE_MESSAGES: Final[dict[str, Callable[[Any, Any], str]]] = {
    "type": lambda got, want: f"{got!r} is not {_type_words(want)}",
    "enum": lambda got, want: f"{got!r} is not one of: {', '.join(map(str, want))}",
    "minItems": lambda _, want: f"needs at least {want} item(s)",
    "maxItems": lambda _, want: f"takes at most {want} item(s)",
    "exclusiveMinimum": lambda got, want: f"{got!r} must be more than {want}",
    "minimum": lambda got, want: f"{got!r} must be at least {want}",
    "pattern": lambda got, want: f"{got!r} does not match {want!r}",
    "minLength": lambda _, __: "must not be empty",
    "maximum": lambda got, want: f"{got!r} must be at most {want}",
    "minProperties": lambda _, want: f"needs at least {want} entry",
}


def _first(items: Any) -> Any:
    return next(iter(items))


def _describe(error: jsonschema.ValidationError) -> tuple[list[str | int], str]:
    """Where (document path) and what, in words a scenario author reads easily."""
    path: list[str | int] = list(error.absolute_path)
    instance: Any = error.instance
    wanted: Any = error.validator_value
    schema: Any = error.schema
    validator = str(error.validator)
    if validator in _SIMPLE_MESSAGES:
        return path, _SIMPLE_MESSAGES[validator](instance, wanted)
    if validator == "required":
        missing = [name for name in wanted if name not in instance]
        return path, f"missing required key {missing[0]!r}" if missing else error.message
    if validator == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        extras = sorted(str(key) for key in instance if key not in known)
        if extras:
            return [*path, extras[0]], f"unknown key (known: {', '.join(known)})"
    context = error.context or []
    if validator == "anyOf" and context and all(sub.validator == "required" for sub in context):
        firsts = [_first(sub.validator_value) for sub in context]
        return path, "needs " + " or ".join(map(repr, firsts))
    if "description" in schema:
        return path, f"{instance!r} is not {schema['description']}"
    return path, error.message


def validate(document: Document) -> None:
    """Raise ScenarioError listing every schema problem, each with file and line."""
    validator = Draft202012Validator(SCHEMA)
    problems: list[tuple[int, str]] = []
    seen: set[str] = set()
    for error in validator.iter_errors(document.data):
        for leaf in _leaf_errors(error):
            path, what = _describe(leaf)
            label = format_path(path)
            message = (
                f"{document.file}:{document.line(path)}: {label + ': ' if label else ''}{what}"
            )
            if message not in seen:
                seen.add(message)
                problems.append((document.line(path), message))
    if problems:
        raise ScenarioError([message for _, message in sorted(problems)])
