"""The test tooling: the dependency floor, binary markers, report header."""

from __future__ import annotations

import importlib.metadata
import os
import re

from pathlib import Path

import pytest

from packaging.requirements import Requirement
from packaging.version import Version

import conftest


try:
    import tomllib
except ImportError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib


ROOT = Path(__file__).parent.parent
CONSTRAINTS = ROOT / "tests" / "constraints-oldest.txt"
#: The extras users install; the rest (tests, docs, ...) are for us.
RUNTIME_EXTRAS = ("aiohttp", "consul", "auth", "otel")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def floors() -> dict[str, str]:
    """
    The ``>=`` floor of every runtime dependency and runtime extra.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in RUNTIME_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    found = {}
    for line in requirements:
        requirement = Requirement(line)
        (floor,) = (
            spec.version
            for spec in requirement.specifier
            if spec.operator == ">="
        )
        found[normalized(requirement.name)] = floor
    return found


def pins() -> dict[str, str]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            found[normalized(name)] = version
    return found


class TestDependencyFloor:
    def test_constraints_pin_every_floor(self):
        """tests/constraints-oldest.txt pins each declared floor exactly."""
        assert {name: Version(floor) for name, floor in floors().items()} == {
            name: Version(pin) for name, pin in pins().items()
        }

    def test_installed_versions(self):
        """The installed dependencies satisfy the floors; in tox's oldest
        env they are the floors."""
        oldest = os.environ.get("PROM_ASYNC_OLDEST") == "1"
        for name, floor in floors().items():
            installed = Version(importlib.metadata.version(name))
            if oldest:
                assert Version(floor) == installed, name
            else:
                assert installed >= Version(floor), name


def item_marked(*names: str) -> pytest.Item:
    class Item:
        def iter_markers(self):
            return iter(getattr(pytest.mark, name).mark for name in names)

    return Item()  # type: ignore[return-value]


@pytest.fixture
def absent_prometheus(monkeypatch, tmp_path):
    """
    The prometheus marker's binaries are missing.
    """
    monkeypatch.setitem(
        conftest.BINARIES,
        "prometheus",
        ("prometheus", (tmp_path / "prometheus", tmp_path / "promtool")),
    )


class TestBinaryMarkers:
    def test_skips_when_absent(self, absent_prometheus, monkeypatch, tmp_path):
        """Outside CI, a marked test whose binary is absent is skipped,
        with what to install."""
        monkeypatch.delenv("CI", raising=False)

        with pytest.raises(pytest.skip.Exception) as skipped:
            conftest.pytest_runtest_setup(item_marked("prometheus"))

        assert (
            f"{tmp_path}/prometheus, {tmp_path}/promtool missing: "
            'apt-get install prometheus, or deselect with -m "not prometheus"'
        ) == str(skipped.value)

    @pytest.mark.parametrize("value", ["true", "1", "yes"])
    def test_fails_in_ci(self, absent_prometheus, monkeypatch, value):
        """In CI, the absent binary fails the test: CI never skips."""
        monkeypatch.setenv("CI", value)

        with pytest.raises(pytest.fail.Exception, match="CI never skips"):
            conftest.pytest_runtest_setup(item_marked("prometheus"))

    @pytest.mark.parametrize("value", ["", "0", "false"])
    def test_ci_off(self, absent_prometheus, monkeypatch, value):
        """CI set to nothing, 0 or false is not CI."""
        monkeypatch.setenv("CI", value)

        with pytest.raises(pytest.skip.Exception):
            conftest.pytest_runtest_setup(item_marked("prometheus"))

    def test_runs_when_present(self, monkeypatch, tmp_path):
        """A marked test whose binaries exist runs, as do unmarked ones."""
        binary = tmp_path / "victoria-metrics"
        binary.touch()
        monkeypatch.setitem(
            conftest.BINARIES,
            "victoria_metrics",
            ("victoria-metrics", (binary,)),
        )
        monkeypatch.setenv("CI", "true")

        conftest.pytest_runtest_setup(item_marked("victoria_metrics"))
        conftest.pytest_runtest_setup(item_marked("asyncio"))

    def test_fixtures_mark_their_tests(self, request):
        """Every fixture that starts a binary names a marker that says
        which."""
        markers = request.config.getini("markers")

        assert set(conftest.FIXTURE_MARKERS.values()) == {
            line.split(":")[0] for line in markers
        } & set(conftest.BINARIES)


class TestReportHeader:
    def test_versions(self):
        """The header gives the version of each dependency, or says it is
        not installed."""
        header = conftest.pytest_report_header()

        assert (
            "prometheus_client "
            f"{importlib.metadata.version('prometheus_client')}"
        ) in header
        for name in conftest.DEPENDENCIES:
            assert name in header
