"""Shared pytest configuration."""

from __future__ import annotations

import gc
from collections.abc import Generator

import pytest

# Integration modules that bring up labs of their own (or none) and never touch the
# session's shared lab: with `-n 2 --dist loadgroup` they run beside the rest.
STANDALONE = ("test_fresh_host.py", "test_examples.py", "test_byo.py")


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, object, object]:
    # Collection imports every test module and builds thousands of items: the cyclic
    # GC's full passes over that growing heap cost each xdist worker ~0.5-1 s of
    # CPU. Collect with it off, then freeze what collection built (it lives for the
    # whole session), so the runs' collections only scan what the tests allocate.
    gc.disable()
    try:
        return (yield)
    finally:
        gc.enable()
        gc.freeze()


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
