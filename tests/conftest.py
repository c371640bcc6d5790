"""Shared pytest configuration."""

from __future__ import annotations

import pytest

# Integration modules that bring up labs of their own (or none) and never touch the
# session's shared lab: with `-n 2 --dist loadgroup` they run beside the rest.
STANDALONE = ("test_fresh_host.py", "test_examples.py", "test_byo.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Everything under tests/integration needs the real lab: mark it so
    # `-m "not integration"` reliably leaves it out.
    for item in items:
        path = str(item.path).replace("\\", "/")
        if "tests/integration/" in path:
            item.add_marker(pytest.mark.integration)
            # Every test of the shared lab in one process, in order (pytest-xdist).
            group = "standalone" if item.path.name in STANDALONE else "shared-lab"
            item.add_marker(pytest.mark.xdist_group(group))
        if "tests/swarm/" in path:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.swarm)
