"""
:func:`assert_sample` and :func:`fresh_registry`.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from ._testing_snapshot import equal, format_sample, label_set, take


__all__ = ["assert_sample", "fresh_registry"]


def fresh_registry() -> CollectorRegistry:
    """
    A new, empty registry that behaves like the global one.

    Unlike a bare ``CollectorRegistry()``, it describes the collectors
    registered in it (``auto_describe=True``, as
    :data:`prometheus_client.REGISTRY` does), so that registering a custom
    collector twice raises ``Duplicated timeseries`` here as it would in
    production.

    .. versionadded:: 0.2.0
    """
    return CollectorRegistry(auto_describe=True)


def assert_sample(
    registry: CollectorRegistry,
    name: str,
    labels: Mapping[str, str] | None,
    value: float | None,
) -> None:
    """
    Fail unless *registry* has the sample *name* with exactly *labels* and
    *value*.

    The sample is looked up as
    ``CollectorRegistry.get_sample_value`` does (all
    of its labels given); values are compared up to float rounding (a
    relative 1e-9). It raises ``AssertionError`` if the sample has another
    value, is absent, or exists when *value* is ``None``, or if no metric
    has a sample of this name; the message lists the family's samples.

    Args:
        registry: The registry to collect.
        name: The sample's name, like ``http_requests_total``.
        labels: All of its labels; ``None`` for none.
        value: The value expected; ``None`` for "no such sample" (of a
            metric that exists: a name no metric has always fails).

    .. versionadded:: 0.2.0
    """
    labels = dict(labels or {})
    snapshot = take(registry)
    family = snapshot.family_of(name)
    if family is None:
        known = ", ".join(sorted(snapshot.sample_names())) or "(nothing)"
        raise AssertionError(
            f"no metric has a sample named {name!r}; the registry has: {known}"
        )
    actual = family.samples.get((name, label_set(labels)))
    if actual is None and value is None:
        return
    if actual is not None and value is not None and equal(actual, value):
        return
    expected = "absent" if value is None else repr(float(value))
    found = format_sample(name, label_set(labels), actual)
    lines = [
        f"{found}, expected {expected}",
        f"{family.name} ({family.type}):",
        *(f"  {line}" for line in family.lines()),
    ]
    raise AssertionError("\n".join(lines))
