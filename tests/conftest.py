from __future__ import annotations

import importlib.util

from collections.abc import Iterator

import pytest

from blockbuster import BlockBuster, blockbuster_ctx
from prometheus_client import CollectorRegistry


# The plugins need the optional dependencies; without them (tox's "minimal"
# environment) the wrappers' tests run alone.
pytest_plugins = [
    plugin
    for plugin, needs in (
        ("fixtures_consul", "consul"),
        ("fixtures_servers", "aiohttp"),
    )
    if importlib.util.find_spec(needs) is not None
]


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
