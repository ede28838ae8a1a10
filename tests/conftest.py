from __future__ import annotations

import importlib.metadata
import importlib.util
import os

from collections.abc import Iterator
from pathlib import Path

import pytest

from blockbuster import BlockBuster, blockbuster_ctx
from prometheus_client import CollectorRegistry


# The plugins need the optional dependencies; without them (tox's "minimal"
# environment) the wrappers' tests run alone. fixtures_servers comes first:
# the others import it, and pytest rewrites the asserts of a plugin only if
# it is not imported yet.
pytest_plugins = [
    plugin
    for plugin, needs in (
        ("fixtures_servers", "aiohttp"),
        ("fixtures_consul", "consul"),
        ("fixtures_pushgateway", "aiohttp"),
    )
    if importlib.util.find_spec(needs) is not None
]

#: The distributions whose versions the report header shows.
DEPENDENCIES = (
    "prometheus_client",
    "aiohttp",
    "wrapt",
    "py-consul",
    "bcrypt",
    "gunicorn",
)

#: For each marker of a test that runs Debian's binaries: the package that
#: installs them, and the binaries.
BINARIES = {
    "prometheus": (
        "prometheus",
        (Path("/usr/bin/prometheus"), Path("/usr/bin/promtool")),
    ),
    "victoria_metrics": (
        "victoria-metrics",
        (Path("/usr/bin/victoria-metrics"),),
    ),
    "pushgateway": (
        "prometheus-pushgateway",
        (Path("/usr/bin/prometheus-pushgateway"),),
    ),
}

#: Fixtures that start those binaries: a test using one gets its marker.
FIXTURE_MARKERS = {
    "prometheus": "prometheus",
    "victoria_metrics_factory": "victoria_metrics",
    "pushgateway": "pushgateway",
}


def pytest_report_header() -> str:
    versions = []
    for name in DEPENDENCIES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return "dependencies: " + ", ".join(versions)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = FIXTURE_MARKERS.get(fixture)
            if marker is not None:
                item.add_marker(marker)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in {"", "0", "false"}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """
    Skip a test whose binaries are absent; in CI, fail it instead: CI
    installs them and never skips.
    """
    for name in sorted({marker.name for marker in item.iter_markers()}):
        if name not in BINARIES:
            continue
        package, binaries = BINARIES[name]
        missing = [str(path) for path in binaries if not path.is_file()]
        if not missing:
            continue
        reason = f"{', '.join(missing)} missing: apt-get install {package}"
        if in_ci():
            pytest.fail(f"{reason} (CI never skips it)", pytrace=False)
        pytest.skip(f'{reason}, or deselect with -m "not {name}"')


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
