"""
Expositions, as a scrape returns them: parsed, compared, linted.
"""

from __future__ import annotations

import shutil
import subprocess

from dataclasses import dataclass, field
from typing import Final

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import (
    text_string_to_metric_families as parse_text,
)

from ._testing_snapshot import format_sample, label_set


__all__ = ["assert_exposition", "lint_exposition", "parse_exposition"]

#: The types whose families have ``_created`` samples (in the text format,
#: a gauge family of their own).
_WITH_CREATED: Final = frozenset({"counter", "histogram", "summary"})
_LINT_TIMEOUT: Final = 60.0


def _text(exposition: str | bytes) -> str:
    if isinstance(exposition, bytes):
        return exposition.decode()
    return exposition


def parse_exposition(exposition: str | bytes) -> list[Metric]:
    """
    Parse what a ``/metrics`` endpoint returned.

    An exposition whose last line is ``# EOF`` is parsed as OpenMetrics
    (``prometheus_client.openmetrics.parser``), any other as the
    Prometheus text format (``prometheus_client.parser``).

    Args:
        exposition: The body of the response, as text or bytes (UTF-8).

    Returns:
        Its metric families (``prometheus_client``'s ``Metric``), in
        order.

    Raises:
        ValueError: It does not parse.

    .. versionadded:: 0.2.0
    """
    text = _text(exposition)
    if text.rstrip().endswith("# EOF"):
        # prometheus_client's OpenMetrics parser has no annotations.
        return list(parse_openmetrics(text))  # type: ignore[no-untyped-call]
    return list(parse_text(text))


@dataclass
class _Family:
    type: str
    documentation: str
    samples: set[str] = field(default_factory=set)

    def lines(self, name: str) -> list[str]:
        return [
            f"# HELP {name} {self.documentation}",
            f"# TYPE {name} {self.type}",
            *sorted(self.samples),
        ]


def _families(
    exposition: str | bytes, side: str, created: bool
) -> dict[str, _Family]:
    try:
        metrics = parse_exposition(exposition)
    except ValueError as error:
        raise ValueError(
            f"the {side} exposition does not parse: {error}"
        ) from error
    created_names = {
        f"{metric.name}_created"
        for metric in metrics
        if metric.type in _WITH_CREATED and not created
    }
    families: dict[str, _Family] = {}
    for metric in metrics:
        if metric.name in created_names:
            continue
        family = families.setdefault(
            metric.name, _Family(metric.type, metric.documentation)
        )
        family.samples.update(
            format_sample(sample.name, label_set(sample.labels), sample.value)
            for sample in metric.samples
            if sample.name not in created_names
        )
    return families


def assert_exposition(
    actual: str | bytes,
    expected: str | bytes,
    *,
    exact: bool = False,
    created: bool = False,
) -> None:
    """
    Fail unless *actual* exposes what *expected* does, in any order.

    Both are parsed (see :func:`parse_exposition`; each may be either
    format, but a family is compared as its format names and types it, so
    write *expected* in the format *actual* was served in). Each family of
    *expected* must be in *actual* with the same type, help and samples
    (names, labels and values); timestamps and exemplars are not compared.
    Families that only *actual* has are allowed, unless *exact*: a scrape of
    the global registry also holds the ``process_`` and ``python_``
    families.

    Args:
        actual: What a scrape returned.
        expected: What it should have returned.
        exact: Whether *actual* may hold no other families.
        created: Whether to compare the ``_created`` samples too (they are
            timestamps, so by default they are left out of both).

    If they differ, it raises ``AssertionError``; the message lists each
    line expected but missing (``-``) and each line there but not expected
    (``+``), by family.

    Raises:
        ValueError: One of them does not parse.

    .. versionadded:: 0.2.0
    """
    theirs = _families(actual, "actual", created)
    ours = _families(expected, "expected", created)
    names = sorted(ours.keys() | theirs.keys() if exact else ours.keys())
    differences: list[str] = []
    for name in names:
        want, got = ours.get(name), theirs.get(name)
        kind = (want or theirs[name]).type
        differences.extend(_difference(name, kind, want, got))
    if differences:
        raise AssertionError(
            "the expositions differ (- expected, + actual):\n"
            + "\n".join(differences)
        )


def _difference(
    name: str, kind: str, want: _Family | None, got: _Family | None
) -> list[str]:
    wanted = [] if want is None else want.lines(name)
    there = [] if got is None else got.lines(name)
    missing = [f"  - {line}" for line in wanted if line not in there]
    extra = [f"  + {line}" for line in there if line not in wanted]
    if not missing and not extra:
        return []
    return [f"{name} ({kind}):", *missing, *extra]


def lint_exposition(
    exposition: str | bytes, *, promtool: str = "promtool"
) -> list[str] | None:
    """
    What ``promtool check metrics`` says of an exposition.

    It checks the Prometheus text format against Prometheus' naming
    conventions: help text, units, ``_total`` on counters and the like.
    This runs a subprocess and waits for it: in async code, call it through
    ``asyncio.to_thread``; promtool taking over 60 seconds raises
    ``subprocess.TimeoutExpired``.

    Args:
        exposition: The exposition, in the text format.
        promtool: The promtool to run: a name looked up on ``PATH``, or a
            path.

    Returns:
        Each problem promtool reports, one line each (empty if none); or
        ``None`` if *promtool* is not found, so that a test can skip:
        ``if problems is None: pytest.skip("no promtool")``.

    .. versionadded:: 0.2.0
    """
    path = shutil.which(promtool)
    if path is None:
        return None
    result = subprocess.run(  # noqa: S603 -- the caller's promtool
        [path, "check", "metrics"],
        input=_text(exposition),
        capture_output=True,
        text=True,
        timeout=_LINT_TIMEOUT,
        check=False,
    )
    if result.returncode == 0:
        return []
    problems = [
        line.strip()
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip()
    ]
    return problems or [f"{promtool} exited with {result.returncode}"]
