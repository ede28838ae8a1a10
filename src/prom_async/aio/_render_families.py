"""
Walk a registry's metric families lazily, pausing so other threads run.

``prometheus_client``'s encoders take anything with a ``collect()`` method
and read each family's ``name``, ``documentation``, ``type``, ``unit`` and
``samples`` once.  :class:`LazyRegistry` hands them families whose samples
are produced one by one while the encoder consumes them, instead of lists
built up front.  Each sample then dies young, so a render of a large
registry promotes nothing to the garbage collector's old generations and
triggers no full collection (which would stop every thread, the event loop's
included, for tens of milliseconds).  Every few samples the walk checks the
clock and, after a slice of work, sleeps briefly: the thread gives up the
GIL on its own instead of holding it for the whole switch interval.

Reading ``prometheus_client``'s own metrics lazily uses its internals (see
:mod:`._client_internals`); wherever they are missing or overridden, the
public ``collect()`` is used, and the samples come out the same.  Families
of such metrics also carry the metric itself, for
:class:`~._render_lines.LineEncoder` to encode directly.

A walk notes in its :class:`Progress` which collector it is reading, so that
a render that overruns its deadline can say where it is stuck.
"""

from __future__ import annotations

import time

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

from ._client_internals import lazy_metric, registry_contents


if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from ._render_lines import LineEncoder


__all__ = ["LazyRegistry", "Pacer", "Progress", "encode_by_family"]


class Pacer:
    """
    Count work and sleep briefly after each slice of it.

    Args:
        slice_seconds: How long to work before pausing.
        pause_seconds: How long to sleep, releasing the GIL.
        check_every: How many ticks between looks at the clock.
        clock: Where the time comes from.
        sleep: How to pause.
    """

    __slots__ = (
        "_check_every",
        "_clock",
        "_deadline",
        "_pause",
        "_sleep",
        "_slice",
        "_until_check",
    )

    def __init__(
        self,
        slice_seconds: float = 0.001,
        pause_seconds: float = 0.00005,
        check_every: int = 32,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._slice = slice_seconds
        self._pause = pause_seconds
        self._check_every = check_every
        self._clock = clock
        self._sleep = sleep
        self._until_check = check_every
        self._deadline = clock() + slice_seconds

    def tick(self, count: int = 1) -> None:
        """
        Count *count* units of work; pause if the slice is used up.
        """
        self._until_check -= count
        if self._until_check > 0:
            return
        self._until_check = self._check_every
        if self._clock() >= self._deadline:
            self._sleep(self._pause)
            self._deadline = self._clock() + self._slice


class Progress:
    """
    Where a walk of a registry is: the collector it is reading, if known.

    The walk's thread writes it; anyone may read it (one attribute, so a
    reader sees either the last collector or the one before).
    """

    __slots__ = ("collector",)

    def __init__(self) -> None:
        self.collector: object | None = None


class _Family:
    """
    What an encoder reads of a metric family, with samples still to come.

    *source* is the stock metric the family comes from, if it does.
    """

    __slots__ = ("documentation", "name", "samples", "source", "type", "unit")

    def __init__(  # noqa: PLR0917 -- the fields, in the library's order
        self,
        name: str,
        documentation: str,
        type: str,  # noqa: A002 -- the attribute the encoders read
        unit: str,
        samples: Iterable[Sample],
        source: object = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.type = type
        self.unit = unit
        self.samples = samples
        self.source = source

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.type!r})"


class LazyRegistry:
    """
    A registry view whose ``collect()`` yields families lazily and paced.

    Args:
        registry: The registry to walk.
        names: Only samples with these names, like ``name[]``; or
            :data:`None` for all.
        pacer: Paces the walk; a fresh :class:`Pacer` per ``collect()``
            when :data:`None`.
        progress: Told which collector the walk reads; with ``name[]``
            (*names*) or a registry that overrides ``collect()``, none is
            known.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        names: frozenset[str] | None = None,
        pacer: Pacer | None = None,
        progress: Progress | None = None,
    ) -> None:
        self._registry = registry
        self._names = names
        self._pacer = pacer
        self.progress = Progress() if progress is None else progress

    def collect(self) -> Iterator[_Family]:
        """
        Yield the registry's families, each with lazily produced samples.
        """
        return self.families(self._pacer or Pacer())

    def families(self, pacer: Pacer) -> Iterator[_Family]:
        """
        Yield the registry's families, paced by *pacer*.
        """
        if self._names is None:
            families: Iterable[Any] = _walk(self._registry, self.progress)
        else:
            families = self._registry.restricted_registry(
                self._names
            ).collect()
        for family in families:
            pacer.tick()
            yield _Family(
                family.name,
                family.documentation,
                family.type,
                family.unit,
                _paced(family.samples, pacer),
                getattr(family, "source", None),
            )


class _Families:
    """
    A collector of families that have been collected already.
    """

    __slots__ = ("_families",)

    def __init__(self, families: tuple[Any, ...]) -> None:
        self._families = families

    def collect(self) -> tuple[Any, ...]:
        return self._families


def encode_by_family(
    encoder: Callable[[Any], bytes],
    registry: LazyRegistry,
    lines: LineEncoder | None = None,
    pacer: Pacer | None = None,
) -> bytes:
    """
    Encode *registry* one family at a time, as *encoder* would at once.

    The exposition formats are the concatenation of each family's lines
    plus a trailer (``# EOF`` for OpenMetrics), so encoding family by family
    gives the same bytes, while no single step builds and joins the lines of
    the whole registry holding the GIL: the pieces are joined as bytes,
    which CPython does without the GIL.  Should a piece not end with what
    *encoder* produces for no families, the registry is encoded at once.

    With *lines*, the families of stock metrics are encoded by it when it
    reproduces *encoder*; the others by *encoder*.
    """
    trailer = encoder(_Families(()))
    layout = None if lines is None else lines.layout(encoder)
    pacer = pacer or Pacer()
    pieces: list[bytes] = []
    for family in registry.families(pacer):
        if layout is not None and family.source is not None:
            assert lines is not None  # noqa: S101 -- layout says so
            encoded = lines.encode(family, family.source, layout, pacer.tick)
            if encoded is not None:
                pieces.extend(encoded)
                continue
        piece = encoder(_Families((family,)))
        if not piece.endswith(trailer):
            return encoder(registry)
        pieces.append(piece[: len(piece) - len(trailer)])
    pieces.append(trailer)
    return b"".join(pieces)


def _paced(samples: Iterable[Sample], pacer: Pacer) -> Iterator[Sample]:
    for sample in samples:
        pacer.tick()
        yield sample


def _walk(registry: CollectorRegistry, progress: Progress) -> Iterator[Any]:
    """
    Yield what ``registry.collect()`` yields, reading metrics lazily; tell
    *progress* which collector each family comes from.
    """
    contents = registry_contents(registry)
    if contents is None:
        yield from registry.collect()
        return
    collectors, target_info = contents
    if target_info:
        yield target_info
    for collector in collectors:
        progress.collector = collector
        lazy = lazy_metric(collector)
        if lazy is None:
            yield from collector.collect()
        else:
            metric = lazy.family
            yield _Family(
                metric.name,
                metric.documentation,
                metric.type,
                metric.unit,
                _renamed(lazy.prefix, lazy.samples),
                collector,
            )
    progress.collector = None


def _renamed(
    prefix: str, produce: Callable[[], Iterable[Sample]]
) -> Iterator[Sample]:
    # The metric's own samples carry only the suffix, as collect() sees them.
    # They are produced once read: a family encoded from its source is not.
    # Positional: a Sample has five fields before prometheus_client 0.22.
    for sample in produce():
        yield Sample(prefix + sample[0], *sample[1:])
