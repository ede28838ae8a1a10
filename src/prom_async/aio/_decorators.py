"""
time, count_exceptions and track_inprogress, for every shape of code.
"""

from __future__ import annotations

import contextvars
import inspect
import types

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import _codegen


if TYPE_CHECKING:
    from ..types import (
        ExceptionTypes,
        IncDecrementer,
        Incrementer,
        Labelled,
        LabelsFromCall,
        LabelsFromException,
        LabelValues,
        Observer,
    )


__all__ = [
    "ExceptionCounter",
    "InProgressTracker",
    "Timer",
    "count_exceptions",
    "time",
    "track_inprogress",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")
_Descriptor = TypeVar(
    "_Descriptor", bound="classmethod[Any, Any, Any] | staticmethod[Any, Any]"
)


class _Instrument:
    """
    What the three instruments share: applying themselves to a callable, a
    ``classmethod``/``staticmethod`` or an awaitable.
    """

    __slots__ = ("_labels", "_metric")

    _verb: str

    def __init__(
        self, metric: Any, labels: LabelsFromCall | None = None
    ) -> None:
        self._metric = metric
        self._labels = labels

    def __repr__(self) -> str:
        return f"<prom_async {self._verb}({self._metric!r})>"

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, target: _Descriptor, /
    ) -> _Descriptor: ...

    @overload
    def __call__(self, target: Callable[_P, _R], /) -> Callable[_P, _R]: ...

    @overload
    def __call__(
        self, target: Awaitable[_T], /
    ) -> Coroutine[Any, Any, _T]: ...

    def __call__(self, target: Any, /) -> Any:
        """
        Instrument *target*: a function (sync or async, generator or not), a
        method, a ``classmethod``/``staticmethod``, a callable object, or an
        awaitable.
        """
        if isinstance(target, (classmethod, staticmethod)):
            return type(target)(self(target.__func__))
        if callable(target):
            kind = _codegen.kind_of(target)
            probe = self._probe()
            if type(target) is types.FunctionType:
                return _codegen.wrap_function(target, kind, probe)
            return _codegen.wrap_callable(target, kind, probe)
        if inspect.isawaitable(target):
            if self._labels is not None:
                raise TypeError(
                    f"{self._verb}(labels=...) chooses label values from a "
                    "call's arguments, and an awaitable has none: pass a "
                    "bound child, metric.labels(...), instead"
                )
            return self._wrap_awaitable(target)
        raise TypeError(
            f"{self._verb}() instruments a callable or an awaitable, "
            f"not {target!r}"
        )

    def _probe(self) -> _codegen.Probe:
        raise NotImplementedError

    def _wrap_awaitable(
        self, awaitable: Awaitable[_T]
    ) -> Coroutine[Any, Any, _T]:
        raise NotImplementedError

    def _refuse_labels_in_block(self) -> None:
        if self._labels is not None:
            raise TypeError(
                f"{self._verb}(labels=...) chooses label values from a "
                "call's arguments, and a with block has none: use a bound "
                "child, metric.labels(...), instead"
            )

    def _child(self, values: LabelValues) -> Any:
        return _child_of(self._metric, values)


def _child_of(metric: Any, values: LabelValues) -> Any:
    if isinstance(values, str):
        return metric.labels(values)
    if isinstance(values, Mapping):
        return metric.labels(**values)
    return metric.labels(*values)


class Timer(_Instrument):
    """
    Observes how long something takes, in seconds.

    Returned by :func:`time`. Use it as a decorator, on an awaitable, or as a
    (sync or async) context manager. It may be entered by many tasks and
    threads at once: each ``with`` block keeps its own start time.
    """

    __slots__ = ("_starts",)
    _verb = "time"

    def __init__(
        self, metric: Any, labels: LabelsFromCall | None = None
    ) -> None:
        super().__init__(metric, labels)
        self._starts: contextvars.ContextVar[tuple[float, Any]] = (
            contextvars.ContextVar("prom_async_timer_starts")
        )

    def _probe(self) -> _codegen.Probe:
        names: dict[str, object] = {"_pa_clock": perf_counter}
        if self._labels is None:
            names["_pa_observe"] = self._metric.observe
            enter = "_pa_start = _pa_clock()"
        else:
            names["_pa_labels"] = self._labels
            names["_pa_child"] = self._child
            enter = (
                "_pa_observe = _pa_child(_pa_labels(ARGS)).observe\n"
                "_pa_start = _pa_clock()"
            )
        leave = "finally:\n    _pa_observe(_pa_clock() - _pa_start)"
        return _codegen.Probe(enter, leave, names)

    def _wrap_awaitable(
        self, awaitable: Awaitable[_T]
    ) -> Coroutine[Any, Any, _T]:
        return _timed(awaitable, self._metric.observe, perf_counter())

    def __enter__(self) -> None:
        self._refuse_labels_in_block()
        self._starts.set((perf_counter(), self._starts.get(None)))

    def __exit__(self, *exc_info: object) -> None:
        start, outer = self._starts.get()
        self._metric.observe(perf_counter() - start)
        self._starts.set(outer)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)


async def _timed(
    awaitable: Awaitable[_T], observe: Callable[[float], object], start: float
) -> _T:
    try:
        return await awaitable
    finally:
        observe(perf_counter() - start)


class ExceptionCounter(_Instrument):
    """
    Counts the exceptions of the given types that pass through.

    Returned by :func:`count_exceptions`. Use it as a decorator, on an
    awaitable, or as a (sync or async) context manager. Exceptions are
    re-raised unchanged.
    """

    __slots__ = ("_exc", "_exc_labels")
    _verb = "count_exceptions"

    def __init__(
        self,
        metric: Any,
        exc: ExceptionTypes,
        labels: LabelsFromCall | None = None,
        exc_labels: LabelsFromException | None = None,
    ) -> None:
        super().__init__(metric, labels)
        self._exc = exc
        self._exc_labels = exc_labels

    def _probe(self) -> _codegen.Probe:
        if self._labels is None and self._exc_labels is None:
            return _codegen.Probe(
                "",
                "except _pa_exc:\n    _pa_inc()\n    raise",
                {"_pa_exc": self._exc, "_pa_inc": self._metric.inc},
            )
        from_call = "None" if self._labels is None else "_pa_labels(ARGS)"
        return _codegen.Probe(
            "",
            "except _pa_exc as _pa_error:\n"
            f"    _pa_count(_pa_error, {from_call})\n"
            "    raise",
            {
                "_pa_exc": self._exc,
                "_pa_count": self._count,
                "_pa_labels": self._labels,
            },
        )

    def _count(
        self, error: BaseException, from_call: LabelValues | None
    ) -> None:
        if self._exc_labels is None:
            values = from_call
        elif from_call is None:
            values = self._exc_labels(error)
        else:
            values = _joined(from_call, self._exc_labels(error))
        if values is None:
            self._metric.inc()
        else:
            self._child(values).inc()

    def _wrap_awaitable(
        self, awaitable: Awaitable[_T]
    ) -> Coroutine[Any, Any, _T]:
        return self._counted(awaitable)

    async def _counted(self, awaitable: Awaitable[_T]) -> _T:
        with self:
            return await awaitable

    def __enter__(self) -> None:
        self._refuse_labels_in_block()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: object,
    ) -> None:
        if exc is not None and isinstance(exc, self._exc):
            self._count(exc, None)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: object,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)


def _joined(first: LabelValues, second: LabelValues) -> LabelValues:
    if isinstance(first, str):
        first = (first,)
    if isinstance(second, str):
        second = (second,)
    if isinstance(first, Mapping) and isinstance(second, Mapping):
        return {**first, **second}
    if not isinstance(first, Mapping) and not isinstance(second, Mapping):
        return (*first, *second)
    raise TypeError(
        "labels= and exc_labels= must both return label values by position "
        "(sequences) or both by name (mappings)"
    )


class InProgressTracker(_Instrument):
    """
    Keeps a gauge up by one while something runs.

    Returned by :func:`track_inprogress`. Use it as a decorator, on an
    awaitable, or as a (sync or async) context manager. The gauge always goes
    down again: on return, on an exception and on cancellation.
    """

    __slots__ = ()
    _verb = "track_inprogress"

    def _probe(self) -> _codegen.Probe:
        if self._labels is None:
            return _codegen.Probe(
                "_pa_inc()",
                "finally:\n    _pa_dec()",
                {"_pa_inc": self._metric.inc, "_pa_dec": self._metric.dec},
            )
        return _codegen.Probe(
            "_pa_gauge = _pa_child(_pa_labels(ARGS))\n_pa_gauge.inc()",
            "finally:\n    _pa_gauge.dec()",
            {"_pa_child": self._child, "_pa_labels": self._labels},
        )

    def _wrap_awaitable(
        self, awaitable: Awaitable[_T]
    ) -> Coroutine[Any, Any, _T]:
        self._metric.inc()
        return _tracked(awaitable, self._metric.dec)

    def __enter__(self) -> None:
        self._refuse_labels_in_block()
        self._metric.inc()

    def __exit__(self, *exc_info: object) -> None:
        self._metric.dec()

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)


async def _tracked(awaitable: Awaitable[_T], dec: Callable[[], object]) -> _T:
    try:
        return await awaitable
    finally:
        dec()


def _check_metric(
    verb: str,
    metric: object,
    methods: tuple[str, ...],
    what: str,
    labels_wanted: bool,
) -> None:
    if labels_wanted:
        if not callable(getattr(metric, "labels", None)):
            raise TypeError(
                f"{verb}() was given labels=, so it needs a metric with "
                f"label names and a labels() method, got {metric!r}"
            )
        if _label_names(metric) == ():
            raise ValueError(
                f"{verb}() was given labels=, but {metric!r} has no label "
                "names"
            )
        return
    missing = [m for m in methods if not callable(getattr(metric, m, None))]
    if missing:
        needed = " and ".join(f"{m}()" for m in methods)
        raise TypeError(
            f"{verb}() needs a metric with {needed} ({what}), got {metric!r}"
        )
    if _label_names(metric):
        raise ValueError(
            f"{verb}() was given {metric!r}, which has label names "
            f"{_label_names(metric)}: bind values with metric.labels(...), "
            "or choose them per call with labels="
        )


def _label_names(metric: object) -> tuple[str, ...] | None:
    """
    The label names still to be bound on a prometheus_client metric, or
    None for any other object.
    """
    names = getattr(metric, "_labelnames", None)
    if not isinstance(names, tuple):
        return None
    if getattr(metric, "_labelvalues", ()):
        return ()
    return names


def _check_exception_types(exc: object) -> None:
    classes = exc if isinstance(exc, tuple) else (exc,)
    if not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in classes
    ):
        raise TypeError(
            "count_exceptions(exc=...) takes an exception class or a tuple "
            f"of them, got {exc!r}"
        )


def _check_labels(verb: str, name: str, labels: object) -> None:
    if labels is not None and not callable(labels):
        raise TypeError(
            f"{verb}({name}=...) takes a callable that returns label values, "
            f"got {labels!r}"
        )


@overload
def time(metric: Observer, future: None = None) -> Timer: ...


@overload
def time(metric: Labelled, *, labels: LabelsFromCall) -> Timer: ...


@overload
def time(
    metric: Observer, future: Awaitable[_T]
) -> Coroutine[Any, Any, _T]: ...


def time(
    metric: Observer | Labelled,
    future: Awaitable[_T] | None = None,
    *,
    labels: LabelsFromCall | None = None,
) -> Timer | Coroutine[Any, Any, _T]:
    """
    Observe the time something takes, in seconds, with
    ``metric.observe()``.

    Args:
        metric: A Histogram or Summary, a bound child of one, or anything with
            an ``observe(float)`` method (:class:`~prom_async.types.Observer`).
        future: An awaitable to time. The clock starts when :func:`time` is
            called, so a task or future that is already running is timed
            from this call on, and a coroutine from this call until it is
            finished. It is observed whether it returns, raises, or is
            cancelled.
        labels: Called with the arguments of each call of the decorated
            function; returns the label values for this call (a sequence in
            label-name order, a mapping by name, or one string). *metric*
            must then have label names.

    Returns:
        Without *future*: a :class:`Timer`, to use as a decorator or a
        context manager. With *future*: a coroutine that awaits it and
        returns its result.

    Raises:
        TypeError: *metric* cannot observe, *labels* is not callable, or the
            target is neither callable nor awaitable.
        ValueError: a prometheus_client *metric* has label names but no
            *labels* was given, or the other way round.

    A decorated function keeps its kind: an ``async def`` is timed from the
    call until its coroutine returns, raises, or is cancelled; a plain
    ``def`` for the call; a generator or async generator from its first
    iteration until it is exhausted or closed.
    """
    _check_labels("time", "labels", labels)
    _check_metric(
        "time",
        metric,
        ("observe",),
        "a Histogram or Summary",
        labels is not None,
    )
    timer = Timer(metric, labels)
    if future is None:
        return timer
    return timer(future)


@overload
def count_exceptions(
    metric: Incrementer,
    future: None = None,
    *,
    exc: ExceptionTypes = Exception,
) -> ExceptionCounter: ...


@overload
def count_exceptions(
    metric: Labelled,
    future: None = None,
    *,
    exc: ExceptionTypes = Exception,
    labels: LabelsFromCall | None = None,
    exc_labels: LabelsFromException | None = None,
) -> ExceptionCounter: ...


@overload
def count_exceptions(
    metric: Incrementer,
    future: Awaitable[_T],
    *,
    exc: ExceptionTypes = Exception,
) -> Coroutine[Any, Any, _T]: ...


@overload
def count_exceptions(
    metric: Labelled,
    future: Awaitable[_T],
    *,
    exc: ExceptionTypes = Exception,
    exc_labels: LabelsFromException,
) -> Coroutine[Any, Any, _T]: ...


def count_exceptions(
    metric: Incrementer | Labelled,
    future: Awaitable[_T] | None = None,
    *,
    exc: ExceptionTypes = Exception,
    labels: LabelsFromCall | None = None,
    exc_labels: LabelsFromException | None = None,
) -> ExceptionCounter | Coroutine[Any, Any, _T]:
    """
    Call ``metric.inc()`` for each exception of type *exc* that passes
    through, then re-raise it.

    Args:
        metric: A Counter, a bound child of one, or anything with an
            ``inc()`` method (:class:`~prom_async.types.Incrementer`).
        future: An awaitable to watch.
        exc: An exception class or a tuple of them. The default,
            :class:`Exception`, leaves out :class:`asyncio.CancelledError`,
            :class:`KeyboardInterrupt`, :class:`SystemExit` and
            :class:`GeneratorExit`: a cancelled call is not an error. Pass
            :class:`BaseException` to count those too, but for closing a
            decorated generator or async generator, which is never counted.
            (prometheus-async counts every :class:`BaseException` by
            default.)
        labels: Called with the arguments of each call of the decorated
            function (only when an exception is counted); returns label
            values as for :func:`time`.
        exc_labels: Called with the exception; returns label values, for
            example ``lambda e: [type(e).__name__]``. With *labels* too, the
            values are joined: sequences one after the other (call
            arguments first), mappings merged.

    Returns:
        Without *future*: an :class:`ExceptionCounter`, to use as a decorator
        or a context manager. With *future*: a coroutine that awaits it and
        returns its result.

    Raises:
        TypeError: *metric* cannot count, *exc* is not an exception class or
            a tuple of them, a label callable is not callable, or the target
            is neither callable nor awaitable.
        ValueError: a prometheus_client *metric* has label names but no label
            callable was given, or the other way round.
    """
    _check_exception_types(exc)
    _check_labels("count_exceptions", "labels", labels)
    _check_labels("count_exceptions", "exc_labels", exc_labels)
    _check_metric(
        "count_exceptions",
        metric,
        ("inc",),
        "a Counter",
        labels is not None or exc_labels is not None,
    )
    counter = ExceptionCounter(metric, exc, labels, exc_labels)
    if future is None:
        return counter
    return counter(future)


@overload
def track_inprogress(
    metric: IncDecrementer, future: None = None
) -> InProgressTracker: ...


@overload
def track_inprogress(
    metric: Labelled, *, labels: LabelsFromCall
) -> InProgressTracker: ...


@overload
def track_inprogress(
    metric: IncDecrementer, future: Awaitable[_T]
) -> Coroutine[Any, Any, _T]: ...


def track_inprogress(
    metric: IncDecrementer | Labelled,
    future: Awaitable[_T] | None = None,
    *,
    labels: LabelsFromCall | None = None,
) -> InProgressTracker | Coroutine[Any, Any, _T]:
    """
    Call ``metric.inc()`` when something starts and ``metric.dec()`` when it
    ends, however it ends.

    Args:
        metric: A Gauge, a bound child of one, or anything with ``inc()`` and
            ``dec()`` (:class:`~prom_async.types.IncDecrementer`).
        future: An awaitable to track; the gauge goes up when
            :func:`track_inprogress` is called.
        labels: Called with the arguments of each call of the decorated
            function; returns label values as for :func:`time`.

    Returns:
        Without *future*: an :class:`InProgressTracker`, to use as a decorator
        or a context manager. With *future*: a coroutine that awaits it and
        returns its result.

    Raises:
        TypeError: *metric* lacks ``inc()`` or ``dec()``, *labels* is not
            callable, or the target is neither callable nor awaitable.
        ValueError: a prometheus_client *metric* has label names but no
            *labels* was given, or the other way round.
    """
    _check_labels("track_inprogress", "labels", labels)
    _check_metric(
        "track_inprogress",
        metric,
        ("inc", "dec"),
        "a Gauge",
        labels is not None,
    )
    tracker = InProgressTracker(metric, labels)
    if future is None:
        return tracker
    return tracker(future)
