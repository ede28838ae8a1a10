"""
time, count_exceptions and track_inprogress, for every shape of code.
"""

from __future__ import annotations

import inspect
import logging
import sys
import types

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from time import perf_counter
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from . import _codegen, _exemplars
from ._client_internals import needs_label_values, unbound_label_names


if TYPE_CHECKING:
    from ..types import (
        ExceptionTypes,
        ExemplarSource,
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

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")
_Descriptor = TypeVar(
    "_Descriptor", bound="classmethod[Any, Any, Any] | staticmethod[Any, Any]"
)


class _Nothing:
    """
    Stands in for a metric whose label values could not be chosen: the
    sample is skipped.
    """

    __slots__ = ()

    def observe(self, value: float, /) -> None:
        pass

    def inc(self, amount: float = 1, /) -> None:
        pass

    def dec(self, amount: float = 1, /) -> None:
        pass


_NOTHING = _Nothing()


class _Unstarted:
    """
    Closes the coroutine a plain function returned if the wrapper's
    coroutine that measures it never starts (its task was cancelled
    first), as a task closes a coroutine it never started.
    """

    __slots__ = ("_awaitable",)

    def __init__(self, awaitable: object) -> None:
        self._awaitable = awaitable

    def __del__(self) -> None:
        awaitable = self._awaitable
        if (
            inspect.iscoroutine(awaitable)
            and inspect.getcoroutinestate(awaitable) == inspect.CORO_CREATED
        ):
            awaitable.close()


class _Failures:
    """
    Logs, once, that an instrument's own code failed around one wrapped
    target; the call itself is never affected.
    """

    __slots__ = ("_logged", "_what")

    def __init__(self, what: str) -> None:
        self._what = what
        self._logged = False

    def failed(self, part: str, error: Exception) -> None:
        if self._logged:
            return
        self._logged = True
        log.error(
            "%s of %s raised; the call's own result or exception is "
            "passed on and its sample is skipped (logged once)",
            part,
            self._what,
            exc_info=error,
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
            _check_labels_fit(self._verb, self._labels, target)
            kind = _codegen.kind_of(target)
            probe = self._probe(_Failures(f"{self._verb}() of {target!r}"))
            if type(target) is types.FunctionType:
                return _codegen.wrap_function(target, kind, probe, self._verb)
            return _codegen.wrap_callable(target, kind, probe, self._verb)
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

    def _probe(self, failures: _Failures) -> _codegen.Probe:
        raise NotImplementedError  # pragma: no cover -- each instrument's own

    def _wrap_awaitable(
        self, awaitable: Awaitable[_T]
    ) -> Coroutine[Any, Any, _T]:
        raise NotImplementedError  # pragma: no cover -- each instrument's own

    def _refuse_labels_in_block(self) -> None:
        if self._labels is not None:
            raise TypeError(
                f"{self._verb}(labels=...) chooses label values from a "
                "call's arguments, and a with block has none: use a bound "
                "child, metric.labels(...), instead"
            )

    def _chooser(self, failures: _Failures) -> Callable[..., Any]:
        """
        A function of a call's arguments that returns the bound child for
        them, or a stand-in that records nothing if choosing failed.
        """
        metric, labels = self._metric, self._labels
        assert labels is not None  # noqa: S101 -- only with labels=

        def child(*args: Any, **kwargs: Any) -> Any:
            try:
                return _child_of(metric, labels(*args, **kwargs))
            except Exception as error:  # noqa: BLE001 -- the user's code
                failures.failed("labels=", error)
                return _NOTHING

        return child


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
    (sync or async) context manager. It may be entered by many tasks,
    generators and threads at once: each ``with`` block keeps its own start
    time.
    """

    __slots__ = ("_exemplars", "_observer", "_starts")
    _verb = "time"

    def __init__(
        self,
        metric: Any,
        labels: LabelsFromCall | None = None,
        exemplars: ExemplarSource | None = None,
    ) -> None:
        super().__init__(metric, labels)
        self._exemplars = exemplars
        self._observer = (
            metric
            if exemplars is None
            else _exemplars.WithExemplars(metric, exemplars)
        )
        # The start of each block under way, by the frame it runs in (a
        # frame runs one block at a time, or nested ones: a chain).
        self._starts: dict[int, tuple[float, Any]] = {}

    def _probe(self, failures: _Failures) -> _codegen.Probe:
        names: dict[str, object] = {
            "_pa_clock": perf_counter,
            "_pa_timed_since": _timed_since,
            "_pa_Unstarted": _Unstarted,
        }
        if self._labels is None:
            names["_pa_observe"] = self._observer.observe
            enter = "_pa_start = _pa_clock()"
        elif self._exemplars is None:
            names["_pa_child"] = self._chooser(failures)
            enter = (
                "_pa_observe = _pa_child({args}).observe\n"
                "_pa_start = _pa_clock()"
            )
        else:
            names["_pa_child"] = self._chooser(failures)
            names["_pa_WithExemplars"] = _exemplars.WithExemplars
            names["_pa_exemplars"] = self._exemplars
            enter = (
                "_pa_observe = _pa_WithExemplars(\n"
                "    _pa_child({args}), _pa_exemplars\n"
                ").observe\n"
                "_pa_start = _pa_clock()"
            )
        return _codegen.Probe(
            enter=enter,
            always="_pa_observe(_pa_clock() - _pa_start)",
            on_error="",
            defer=(
                "return _pa_timed_since(_pa_result, _pa_observe, _pa_start, "
                "_pa_Unstarted(_pa_result))"
            ),
            names=names,
        )

    def _wrap_awaitable(
        self, awaitable: Awaitable[_T]
    ) -> Coroutine[Any, Any, _T]:
        return _timed(awaitable, self._observer)

    def __enter__(self) -> None:
        self._refuse_labels_in_block()
        key = id(sys._getframe(1))  # noqa: SLF001 -- the block's own frame
        self._starts[key] = (perf_counter(), self._starts.get(key))

    def __exit__(self, *exc_info: object) -> None:
        self._leave(id(sys._getframe(1)))  # noqa: SLF001

    async def __aenter__(self) -> None:
        self._refuse_labels_in_block()
        key = id(sys._getframe(1))  # noqa: SLF001 -- the awaiting frame
        self._starts[key] = (perf_counter(), self._starts.get(key))

    async def __aexit__(self, *exc_info: object) -> None:
        self._leave(id(sys._getframe(1)))  # noqa: SLF001

    def _leave(self, key: int) -> None:
        now = perf_counter()
        entry = self._starts.pop(key, None)
        if entry is None:
            log.warning(
                "%r was left by a block it did not see entered "
                "(entered in another frame?); nothing is observed",
                self,
            )
            return
        start, outer = entry
        if outer is not None:
            self._starts[key] = outer
        self._observer.observe(now - start)


async def _timed(awaitable: Awaitable[_T], metric: Observer) -> _T:
    start = perf_counter()
    try:
        return await awaitable
    finally:
        metric.observe(perf_counter() - start)


async def _timed_since(
    awaitable: Awaitable[_T],
    observe: Callable[[float], object],
    start: float,
    _unstarted: _Unstarted,
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

    __slots__ = ("_exc", "_exc_labels", "_failures")
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
        self._failures = _Failures(f"{self._verb}() in a with block")

    def _probe(self, failures: _Failures) -> _codegen.Probe:
        if self._labels is None and self._exc_labels is None:
            return _codegen.Probe(
                enter="",
                always="",
                on_error="_pa_inc()",
                defer=(
                    "return _pa_counted(_pa_result, _pa_exc, _pa_metric, "
                    "_pa_Unstarted(_pa_result))"
                ),
                names={
                    "_pa_exc": self._exc,
                    "_pa_inc": self._metric.inc,
                    "_pa_metric": self._metric,
                    "_pa_counted": _counted,
                    "_pa_Unstarted": _Unstarted,
                },
            )

        def count(error: BaseException, *args: Any, **kwargs: Any) -> None:
            self._count(error, failures, args, kwargs)

        async def counted(
            awaitable: Awaitable[_T],
            _unstarted: _Unstarted,
            *args: Any,
            **kwargs: Any,
        ) -> _T:
            try:
                return await awaitable
            except self._exc as error:
                self._count(error, failures, args, kwargs)
                raise

        return _codegen.Probe(
            enter="",
            always="",
            on_error="_pa_count(_pa_error, {args})",
            defer=(
                "return _pa_counted(_pa_result, _pa_Unstarted(_pa_result), "
                "{args})"
            ),
            names={
                "_pa_exc": self._exc,
                "_pa_count": count,
                "_pa_counted": counted,
                "_pa_Unstarted": _Unstarted,
            },
        )

    def _count(
        self,
        error: BaseException,
        failures: _Failures,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        try:
            from_call = (
                None
                if self._labels is None
                else self._labels(*(args or ()), **(kwargs or {}))
            )
        except Exception as failure:  # noqa: BLE001 -- the user's code
            failures.failed("labels=", failure)
            return
        try:
            if self._exc_labels is None:
                values = from_call
            elif from_call is None:
                values = self._exc_labels(error)
            else:
                values = _joined(from_call, self._exc_labels(error))
            child = self._metric if values is None else self._child(values)
        except Exception as failure:  # noqa: BLE001 -- the user's code
            failures.failed("exc_labels=", failure)
            return
        child.inc()

    def _child(self, values: LabelValues) -> Any:
        return _child_of(self._metric, values)

    def _wrap_awaitable(
        self, awaitable: Awaitable[_T]
    ) -> Coroutine[Any, Any, _T]:
        if self._exc_labels is None:
            return _counted(awaitable, self._exc, self._metric)
        return self._counted(awaitable)

    async def _counted(self, awaitable: Awaitable[_T]) -> _T:
        try:
            return await awaitable
        except self._exc as error:
            self._count(error, self._failures)
            raise

    def __enter__(self) -> None:
        self._refuse_labels_in_block()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: object,
    ) -> None:
        if exc is not None and isinstance(exc, self._exc):
            self._count(exc, self._failures)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: object,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)


async def _counted(
    awaitable: Awaitable[_T],
    exc: ExceptionTypes,
    metric: Incrementer,
    _unstarted: _Unstarted | None = None,
) -> _T:
    try:
        return await awaitable
    except exc:
        metric.inc()
        raise


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

    def _probe(self, failures: _Failures) -> _codegen.Probe:
        if self._labels is None:
            return _codegen.Probe(
                enter="_pa_inc()",
                always="_pa_dec()",
                on_error="",
                defer=(
                    "_pa_dec()\nreturn _pa_tracked(_pa_result, _pa_metric, "
                    "_pa_Unstarted(_pa_result))"
                ),
                names={
                    "_pa_inc": self._metric.inc,
                    "_pa_dec": self._metric.dec,
                    "_pa_metric": self._metric,
                    "_pa_tracked": _tracked,
                    "_pa_Unstarted": _Unstarted,
                },
            )
        return _codegen.Probe(
            enter="_pa_gauge = _pa_child({args})\n_pa_gauge.inc()",
            always="_pa_gauge.dec()",
            on_error="",
            defer=(
                "_pa_gauge.dec()\nreturn _pa_tracked(_pa_result, _pa_gauge, "
                "_pa_Unstarted(_pa_result))"
            ),
            names={
                "_pa_child": self._chooser(failures),
                "_pa_tracked": _tracked,
                "_pa_Unstarted": _Unstarted,
            },
        )

    def _wrap_awaitable(
        self, awaitable: Awaitable[_T]
    ) -> Coroutine[Any, Any, _T]:
        return _tracked(awaitable, self._metric)

    def __enter__(self) -> None:
        self._refuse_labels_in_block()
        self._metric.inc()

    def __exit__(self, *exc_info: object) -> None:
        self._metric.dec()

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)


async def _tracked(
    awaitable: Awaitable[_T],
    gauge: IncDecrementer,
    _unstarted: _Unstarted | None = None,
) -> _T:
    gauge.inc()
    try:
        return await awaitable
    finally:
        gauge.dec()


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
        if unbound_label_names(metric) == ():
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
    if names := unbound_label_names(metric):
        raise ValueError(
            f"{verb}() was given {metric!r}, which has label names "
            f"{names}: bind values with metric.labels(...), "
            "or choose them per call with labels="
        )


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


def _check_labels_fit(
    verb: str, labels: Callable[..., Any] | None, target: Callable[..., Any]
) -> None:
    """
    Refuse a *labels* callable that cannot take the arguments that every
    call of *target* passes on to it.
    """
    if labels is None:
        return
    try:
        wanted = inspect.signature(labels)
        given = inspect.signature(target)
    except (TypeError, ValueError):  # No signature to compare: trust it.
        return
    args: list[object] = []
    kwargs: dict[str, object] = {}
    for parameter in given.parameters.values():
        if parameter.kind in {
            parameter.POSITIONAL_ONLY,
            parameter.POSITIONAL_OR_KEYWORD,
        }:
            args.append(parameter.name)
        elif parameter.kind is parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = parameter.name
    try:
        wanted.bind(*args, **kwargs)
    except TypeError as error:
        raise TypeError(
            f"{verb}(labels={labels!r}) is called with the arguments of "
            f"{target!r}{given}, and cannot take them: {error}"
        ) from None


# What the awaitable forms check once per kind of object, not per call: the
# classes of metrics that have the methods an instrument needs (mapped to
# whether they are prometheus_client's, whose instances may still have label
# names to bind), and awaitable classes. Both are few in a program; the caps
# only bound odd ones.
_CHECKED_CAP = 256
_observer_types: dict[type, bool] = {}
_incrementer_types: dict[type, bool] = {}
_gauge_types: dict[type, bool] = {}
_awaitable_types: set[type] = {types.CoroutineType}


def _remember(
    checked: dict[type, bool], metric: object, future: object
) -> None:
    """
    Remember the classes of a *metric* and a *future* that passed the
    checks.
    """
    if len(checked) < _CHECKED_CAP:
        checked[metric.__class__] = unbound_label_names(metric) is not None
    if len(_awaitable_types) < _CHECKED_CAP and inspect.isawaitable(future):
        _awaitable_types.add(future.__class__)


@overload
def time(
    metric: Observer,
    future: None = None,
    *,
    exemplar: bool | ExemplarSource | None = None,
) -> Timer: ...


@overload
def time(
    metric: Labelled,
    *,
    labels: LabelsFromCall,
    exemplar: bool | ExemplarSource | None = None,
) -> Timer: ...


@overload
def time(
    metric: Observer,
    future: Awaitable[_T],
    *,
    exemplar: bool | ExemplarSource | None = None,
) -> Coroutine[Any, Any, _T]: ...


def time(
    metric: Observer | Labelled,
    future: Awaitable[_T] | None = None,
    *,
    labels: LabelsFromCall | None = None,
    exemplar: bool | ExemplarSource | None = None,
) -> Timer | Coroutine[Any, Any, _T]:
    """
    Observe the time something takes, in seconds, with
    ``metric.observe()``.

    Args:
        metric: A Histogram or Summary, a bound child of one, or anything with
            an ``observe(float)`` method (:class:`~prom_async.types.Observer`).
        future: An awaitable to time. The clock starts when the returned
            coroutine starts running (it is awaited, or its task runs), and
            stops when *future* returns, raises, or is cancelled. A task
            cancelled before it ever ran observes nothing.
        labels: Called with the arguments of each call of the decorated
            function; returns the label values for this call (a sequence in
            label-name order, a mapping by name, or one string). *metric*
            must then have label names.
        exemplar: Attach an exemplar to each observation: ``True``
            for the current OpenTelemetry trace (``trace_id`` and
            ``span_id`` of the current sampled span; needs the ``otel``
            extra), or a callable that returns the exemplar's labels (or
            :data:`None` for none). An exemplar that cannot be kept (over
            OpenMetrics' 128 characters, or in multiprocess mode) is left
            out; the observation is always made.

    Returns:
        A :class:`Timer` to use as a decorator or a context
        manager, or with *future*, a coroutine that awaits it and returns its
        result.

    Raises:
        TypeError: *metric* cannot observe, *labels* is not callable, or the
            target is neither callable nor awaitable.
        ValueError: a prometheus_client *metric* has label names but no
            *labels* was given, or the other way round.

    A decorated function keeps its kind: an ``async def`` is timed from the
    call until its coroutine returns, raises, or is cancelled; a plain
    ``def`` for the call, and on until the awaitable it returns (if it does)
    is done; a generator or async generator from its first iteration until
    it is exhausted or closed.
    """
    if (
        labels is None
        and exemplar is None
        and future.__class__ in _awaitable_types
        and (labelled := _observer_types.get(metric.__class__)) is not None
        and (not labelled or not needs_label_values(metric))
    ):
        return _timed(future, metric)  # type: ignore[arg-type]
    _check_labels("time", "labels", labels)
    _check_metric(
        "time",
        metric,
        ("observe",),
        "a Histogram or Summary",
        labels is not None,
    )
    timer = Timer(metric, labels, _exemplars.exemplar_source(exemplar))
    if future is None:
        return timer
    timed = timer(future)
    if exemplar is None:
        _remember(_observer_types, metric, future)
    return timed


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
        An :class:`ExceptionCounter` to use as a decorator or a context
        manager, or with *future*, a coroutine that awaits it and returns its
        result.

    Raises:
        TypeError: *metric* cannot count, *exc* is not an exception class or
            a tuple of them, a label callable is not callable, or the target
            is neither callable nor awaitable.
        ValueError: a prometheus_client *metric* has label names but no label
            callable was given, or the other way round.
    """
    if (
        exc is Exception
        and labels is None
        and exc_labels is None
        and future.__class__ in _awaitable_types
        and (labelled := _incrementer_types.get(metric.__class__)) is not None
        and (not labelled or not needs_label_values(metric))
    ):
        return _counted(future, exc, metric)  # type: ignore[arg-type]
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
    counted = counter(future)
    if exc is Exception and exc_labels is None:
        _remember(_incrementer_types, metric, future)
    return counted


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
        future: An awaitable to track; the gauge is up from when the
            returned coroutine starts running until *future* is done.
        labels: Called with the arguments of each call of the decorated
            function; returns label values as for :func:`time`.

    Returns:
        An :class:`InProgressTracker` to use as a decorator or a context
        manager, or with *future*, a coroutine that awaits it and returns its
        result.

    Raises:
        TypeError: *metric* lacks ``inc()`` or ``dec()``, *labels* is not
            callable, or the target is neither callable nor awaitable.
        ValueError: a prometheus_client *metric* has label names but no
            *labels* was given, or the other way round.
    """
    if (
        labels is None
        and future.__class__ in _awaitable_types
        and (labelled := _gauge_types.get(metric.__class__)) is not None
        and (not labelled or not needs_label_values(metric))
    ):
        return _tracked(future, metric)  # type: ignore[arg-type]
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
    tracked = tracker(future)
    _remember(_gauge_types, metric, future)
    return tracked
