"""Shared pytest configuration."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything under tests/integration needs the real lab: mark it so
    # `-m "not integration"` reliably leaves it out.
    for item in items:
        path = str(item.path).replace("\\", "/")
        if "tests/integration/" in path:
            item.add_marker(pytest.mark.integration)
        if "tests/swarm/" in path:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.swarm)
