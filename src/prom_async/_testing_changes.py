"""
:func:`capture_metrics`: what a block of code changed in a registry.
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING, NamedTuple

from prometheus_client import REGISTRY, CollectorRegistry

from ._testing_snapshot import (
    LabelSet,
    Snapshot,
    check_summable,
    equal,
    format_sample,
    is_created,
    label_set,
    moves_by_itself,
    take,
)


if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self


__all__ = ["MetricChanges", "SampleChange", "capture_metrics"]


class SampleChange(NamedTuple):
    """
    One sample whose value a block changed.

    .. versionadded:: 0.2.0
    """

    #: The sample's name, like ``http_requests_total``.
    name: str
    #: All of the sample's labels.
    labels: dict[str, str]
    #: Its value before the block; ``None`` if it did not exist.
    before: float | None
    #: Its value after the block; ``None`` if it no longer exists.
    after: float | None

    @property
    def delta(self) -> float:
        """
        *after* minus *before*, an absent sample counting as 0.
        """
        return (self.after or 0.0) - (self.before or 0.0)


class MetricChanges:
    """
    What changed in a registry while a :func:`capture_metrics` block ran.

    Every method looks a sample up by its name (``http_requests_total``,
    ``request_seconds_count``, ``request_seconds_bucket``) and by labels:
    the samples whose labels *include* those given are added up, as
    PromQL's ``sum`` would (name ``le`` or ``quantile`` to pick one bucket
    or quantile: adding those up is refused with :exc:`ValueError`). The
    name is positional-only, so a label may be called ``name``.

    Inside the block, each call collects the registry anew (the changes so
    far); after the block, the answers are those of the moment it ended.

    A name that no metric of the registry has, before or after, raises
    ``LookupError`` listing the names it has: a typo does not read as
    "unchanged". Before the ``with`` block starts, every method raises
    :exc:`RuntimeError`.

    .. versionadded:: 0.2.0
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._before: Snapshot | None = None
        self._after: Snapshot | None = None

    def __enter__(self) -> Self:
        self._before = take(self._registry)
        self._after = None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._after = take(self._registry)

    def _snapshots(self, name: str | None) -> tuple[Snapshot, Snapshot]:
        if self._before is None:
            raise RuntimeError(
                "nothing captured yet: use `with capture_metrics(...) as "
                "changes:` around the code"
            )
        before = self._before
        after = take(self._registry) if self._after is None else self._after
        known = before.sample_names() | after.sample_names()
        if name is not None and name not in known:
            raise LookupError(
                f"no metric has a sample named {name!r}; the registry has: "
                f"{', '.join(sorted(known)) or '(nothing)'}"
            )
        return before, after

    def value(self, name: str, /, **labels: str) -> float:
        """
        How much the matching samples changed: after minus before.

        This is the delta for every kind of sample, gauges too (use
        :meth:`after` for a gauge's value). A sample created by the block
        counts as 0 before; a labelled metric whose labels were never used
        changed by ``0.0``.

        Args:
            name: The sample's name.
            labels: Labels the samples have (some or all of them).

        Returns:
            The sum of the matching samples' values after the block, minus
            that before.

        Raises:
            ValueError: The samples matched differ in ``le`` or
                ``quantile``.

        .. versionadded:: 0.2.0
        """
        before, after = self._snapshots(name)
        old = before.matching(name, labels)
        new = after.matching(name, labels)
        check_summable(name, labels, old.keys() | new.keys())
        return math.fsum(new.values()) - math.fsum(old.values())

    def before(self, name: str, /, **labels: str) -> float | None:
        """
        The matching samples' value before the block.

        Args:
            name: The sample's name.
            labels: Labels the samples have (some or all of them).

        Returns:
            Their sum, or ``None`` if none existed (as
            ``CollectorRegistry.get_sample_value``).

        Raises:
            ValueError: The samples matched differ in ``le`` or
                ``quantile``.

        .. versionadded:: 0.2.0
        """
        return self._raw(0, name, labels)

    def after(self, name: str, /, **labels: str) -> float | None:
        """
        The matching samples' value after the block (so far, inside it).

        Args:
            name: The sample's name.
            labels: Labels the samples have (some or all of them).

        Returns:
            Their sum, or ``None`` if none exists.

        Raises:
            ValueError: The samples matched differ in ``le`` or
                ``quantile``.

        .. versionadded:: 0.2.0
        """
        return self._raw(1, name, labels)

    def _raw(
        self, moment: int, name: str, labels: dict[str, str]
    ) -> float | None:
        found = self._snapshots(name)[moment].matching(name, labels)
        check_summable(name, labels, found)
        return math.fsum(found.values()) if found else None

    def changed(self) -> list[SampleChange]:
        """
        Every sample whose value the block changed, sorted by name and
        labels.

        Left out: the ``_created`` timestamps (they change whenever a
        labelled child is first used) and the families of
        ``prometheus_client``'s default collectors in the global registry
        (``process_*``, ``python_gc_*``, ``python_info``), which change by
        themselves; :meth:`value` still answers for them.

        A sample that appeared or went away counts as 0 where it was
        absent, so one that appeared at 0 did not change.

        .. versionadded:: 0.2.0
        """
        before, after = self._snapshots(None)
        old, new = _values(before), _values(after)
        changes = (
            SampleChange(name, dict(labels), old.get(key), new.get(key))
            for key in sorted(old.keys() | new.keys())
            for name, labels in (key,)
        )
        return [
            change
            for change in changes
            if not equal(change.before or 0.0, change.after or 0.0)
        ]

    def assert_changed(
        self, name: str, /, by: float | None = None, **labels: str
    ) -> None:
        """
        Fail unless the matching samples changed (by *by*, if given).

        Values are compared up to float rounding (a relative 1e-9). The
        ``AssertionError`` shows the whole family before and after. A label
        called ``by`` can only be given with *by*.

        Args:
            name: The sample's name.
            by: The change expected; any change but 0 if not given.
            labels: Labels the samples have (some or all of them).

        Raises:
            ValueError: The samples matched differ in ``le`` or
                ``quantile``.

        .. versionadded:: 0.2.0
        """
        delta = self.value(name, **labels)
        if by is None and not equal(delta, 0.0):
            return
        if by is not None and equal(delta, by):
            return
        wanted = "to change" if by is None else f"to change by {by!r}"
        self._fail(
            f"expected {_shown(name, labels)} {wanted}, but it changed by "
            f"{delta!r}",
            name,
        )

    def assert_unchanged(
        self, name: str | None = None, /, **labels: str
    ) -> None:
        """
        Fail if the matching samples changed; without a name, if any sample
        of the registry changed (of those :meth:`changed` looks at).

        The ``AssertionError`` shows the whole family before and after, or
        without a name every change.

        Args:
            name: The sample's name.
            labels: Labels the samples have (some or all of them).

        Raises:
            TypeError: Labels without a name.
            ValueError: The samples matched differ in ``le`` or
                ``quantile``.

        .. versionadded:: 0.2.0
        """
        if name is None:
            if labels:
                raise TypeError("labels need a sample name")
            changes = self.changed()
            if changes:
                lines = [
                    f"  {format_sample(c.name, label_set(c.labels), c.before)}"
                    f" -> {c.after!r}"
                    for c in changes
                ]
                raise AssertionError(
                    "expected no sample to change, but these did:\n"
                    + "\n".join(lines)
                )
            return
        delta = self.value(name, **labels)
        if not equal(delta, 0.0):
            self._fail(
                f"expected {_shown(name, labels)} unchanged, but it changed "
                f"by {delta!r}",
                name,
            )

    def _fail(self, headline: str, name: str) -> None:
        before, after = self._snapshots(name)
        lines = [headline]
        for moment, snapshot in (("before", before), ("after", after)):
            family = snapshot.family_of(name)
            if family is None:
                lines.append(f"{moment}: (not registered)")
                continue
            lines.append(f"{family.name} ({family.type}) {moment}:")
            lines.extend(f"  {line}" for line in family.lines())
        raise AssertionError("\n".join(lines))


def _shown(name: str, labels: dict[str, str]) -> str:
    return format_sample(name, label_set(labels), None).rpartition(" ")[0]


def _values(snapshot: Snapshot) -> dict[tuple[str, LabelSet], float]:
    return {
        key: value
        for family in snapshot.families.values()
        if not moves_by_itself(family)
        for key, value in family.samples.items()
        if not is_created(family, key[0])
    }


def capture_metrics(registry: CollectorRegistry = REGISTRY) -> MetricChanges:
    """
    Capture what a ``with`` block changes in *registry*.

    .. code-block:: python

        with capture_metrics(registry) as changes:
            await client.get("/x")
        changes.assert_changed("http_requests_total", by=1, route="/x")

    The registry is collected when the block starts and when it ends (also
    when it raises); each collection runs every collector of the registry
    once, in the calling thread.

    Args:
        registry: The registry to watch; the global one by default.

    Returns:
        A context manager; ``with`` gives the changes, to query inside the
        block or after it.

    .. versionadded:: 0.2.0
    """
    return MetricChanges(registry)
