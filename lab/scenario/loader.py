"""Read a scenario file as plain data plus the line of every key and list item.

Line numbers let schema and plan errors point at the exact place:
``scenarios/x.yaml:14: steps[2].timeout: '10 seconds' is not a number``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab.scenario.errors import ScenarioError

PathKey = tuple[str | int, ...]


class LineLoader(yaml.SafeLoader):
    """A SafeLoader that also records, per document path, the 1-based line it starts on."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[PathKey, int] = {}
        self.duplicates: list[tuple[PathKey, int]] = []

    def record(self, node: yaml.Node, path: PathKey = ()) -> None:
        """Walk the composed node tree, keeping ``node.start_mark.line`` per path."""
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = (*path, key)
                if key in seen:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                    continue
                seen.add(key)
                # The key's line: for block values it is where a reader looks.
                self.lines[child] = key_node.start_mark.line + 1
                self.record(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self.record(item, (*path, index))


@dataclass(frozen=True)
class Document:
    """A loaded scenario file: its data and where each piece of it is."""

    file: str
    data: Any
    lines: Mapping[PathKey, int]

    def line(self, path: Sequence[str | int]) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        key = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get((), 1)

    def where(self, path: Sequence[str | int]) -> str:
        """``file:line: path`` for messages."""
        label = format_path(path)
        return (
            f"{self.file}:{self.line(path)}: {label}" if label else f"{self.file}:{self.line(path)}"
        )


def format_path(path: Sequence[str | int]) -> str:
    """``("steps", 2, "timeout")`` -> ``steps[2].timeout``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def parse_text(text: str, *, file: str) -> Document:
    """Parse YAML text into a :class:`Document`; ScenarioError with the line on bad YAML."""
    loader = LineLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ScenarioError([f"{file}:1: the file is empty"])
        loader.record(node)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ScenarioError([f"{file}:{line}: not valid YAML: {exc.problem or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise ScenarioError([f"{file}:1: not valid YAML: {exc}"]) from exc
    finally:
        loader.dispose()
    if loader.duplicates:
        raise ScenarioError(
            [
                f"{file}:{line}: {format_path(path)}: key given twice"
                for path, line in loader.duplicates
            ]
        )
    return Document(file=file, data=data, lines=dict(loader.lines))


def load_file(path: Path, *, label: str | None = None) -> Document:
    """Read and parse one scenario file (``label`` is how messages name it)."""
    name = label or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError([f"{name}: cannot read: {exc}"]) from exc
    return parse_text(text, file=name)
