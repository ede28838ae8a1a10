from __future__ import annotations

from collections.abc import Iterator

import pytest

from blockbuster import BlockBuster, blockbuster_ctx
from prometheus_client import CollectorRegistry


pytest_plugins = ["fixtures_consul", "fixtures_servers"]


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """
    Fail any blocking call made inside a running event loop.
    """
    with blockbuster_ctx("prom_async") as bb:
        yield bb


@pytest.fixture
def registry() -> CollectorRegistry:
    """
    A fresh registry, so no test sees another's samples.
    """
    return CollectorRegistry()
