from __future__ import annotations

import asyncio
import functools
import inspect
import sys
import threading
import traceback

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import wrapt

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from prom_async.aio import (
    ExceptionCounter,
    InProgressTracker,
    Timer,
    _decorators,
    count_exceptions,
    time,
    track_inprogress,
)
from prom_async.testing import assert_sample, capture_metrics


class FakeClock:
    """
    The clock the wrappers read, moved by hand.
    """

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(_decorators, "perf_counter", fake)
    return fake


@pytest.fixture
def histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("work_seconds", "Work.", registry=registry)


@pytest.fixture
def counter(registry: CollectorRegistry) -> Counter:
    return Counter("work_errors", "Errors.", registry=registry)


@pytest.fixture
def gauge(registry: CollectorRegistry) -> Gauge:
    return Gauge("work_inprogress", "In progress.", registry=registry)


def observed(
    registry: CollectorRegistry, labels: dict[str, str] | None = None
) -> tuple[float | None, float | None]:
    return (
        registry.get_sample_value("work_seconds_count", labels),
        registry.get_sample_value("work_seconds_sum", labels),
    )


def errors(
    registry: CollectorRegistry, labels: dict[str, str] | None = None
) -> float | None:
    return registry.get_sample_value("work_errors_total", labels)


def inprogress(
    registry: CollectorRegistry, labels: dict[str, str] | None = None
) -> float | None:
    return registry.get_sample_value("work_inprogress", labels)


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0)


class TestTime:
    async def test_coroutine_function_from_call_to_return(
        self, registry, histogram, clock
    ):
        """An async def is timed until its coroutine returns."""

        @time(histogram)
        async def work(x):
            clock.advance(2.5)
            await asyncio.sleep(0)
            clock.advance(0.5)
            return x * 2

        assert 42 == await work(21)
        assert (1.0, 3.0) == observed(registry)

    async def test_exception_passes_through_and_is_observed(
        self, registry, histogram, clock
    ):
        """A raising call is observed and its exception is the same object."""
        error = ValueError("boom")

        @time(histogram)
        async def work():
            clock.advance(1)
            raise error

        with pytest.raises(ValueError) as caught:
            await work()

        assert error is caught.value
        assert (1.0, 1.0) == observed(registry)

    async def test_cancelled_call_is_observed(
        self, registry, histogram, clock
    ):
        """A call cancelled while it waits is observed too."""
        started = asyncio.Event()

        @time(histogram)
        async def work():
            clock.advance(4)
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(work())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        assert (1.0, 4.0) == observed(registry)

    def test_sync_function(self, registry, histogram, clock):
        """A plain def is timed and returns its plain value."""

        @time(histogram)
        def work(x):
            clock.advance(0.25)
            return x + 1

        assert 2 == work(1)
        assert not inspect.iscoroutinefunction(work)
        assert (1.0, 0.25) == observed(registry)

    async def test_async_generator_first_iteration_to_exhaustion(
        self, registry, histogram, clock
    ):
        """An async generator is timed from its first iteration to its end."""

        @time(histogram)
        async def numbers():
            for n in range(3):
                clock.advance(1)
                yield n

        generator = numbers()
        clock.advance(50)
        assert (0.0, 0.0) == observed(registry)
        assert [0, 1, 2] == [n async for n in generator]
        assert (1.0, 3.0) == observed(registry)
        assert inspect.isasyncgenfunction(numbers)

    async def test_async_generator_closed_early(
        self, registry, histogram, clock
    ):
        """aclose() ends the measurement and reaches the wrapped generator."""
        closed = []

        @time(histogram)
        async def numbers():
            try:
                while True:
                    clock.advance(1)
                    yield 1
            finally:
                closed.append(True)

        generator = numbers()
        assert 1 == await generator.__anext__()
        assert 1 == await generator.__anext__()
        await generator.aclose()

        assert [True] == closed
        assert (1.0, 2.0) == observed(registry)

    async def test_async_generator_asend_and_athrow_reach_the_generator(
        self, histogram
    ):
        """Values sent and exceptions thrown in reach the wrapped generator."""

        @time(histogram)
        async def echo():
            received = None
            while True:
                try:
                    received = yield received
                except KeyError:
                    received = "caught"

        generator = echo()
        assert None is await generator.asend(None)
        assert "hi" == await generator.asend("hi")
        assert "caught" == await generator.athrow(KeyError())
        await generator.aclose()

    def test_generator(self, registry, histogram, clock):
        """A generator is timed from its first iteration to its end."""

        @time(histogram)
        def numbers():
            clock.advance(2)
            yield 1
            clock.advance(2)
            yield 2

        assert [1, 2] == list(numbers())
        assert (1.0, 4.0) == observed(registry)

    async def test_coroutine_object_from_wrapping(
        self, registry, histogram, clock
    ):
        """time(m, coroutine) starts the clock when it starts running."""

        async def work():
            clock.advance(1)
            return "done"

        timed = time(histogram, work())
        clock.advance(2)

        assert "done" == await timed
        assert (1.0, 1.0) == observed(registry)

    async def test_future_and_task(self, registry, histogram):
        """Futures and tasks are awaited, with their results passed on."""
        future = asyncio.get_running_loop().create_future()
        future.set_result(1)
        task = asyncio.create_task(asyncio.sleep(0, 2))

        assert 1 == await time(histogram, future)
        assert 2 == await time(histogram, task)
        assert 2.0 == observed(registry)[0]

    async def test_wrapped_awaitable_can_become_a_task(self, histogram):
        """The awaitable form returns a coroutine that create_task accepts."""
        task = asyncio.create_task(time(histogram, asyncio.sleep(0, "x")))

        assert "x" == await task

    def test_with_block(self, registry, histogram, clock):
        """`with time(m):` observes the block, also when it raises."""
        with time(histogram):
            clock.advance(1.5)
        with pytest.raises(KeyError), time(histogram):
            clock.advance(1)
            raise KeyError

        assert (2.0, 2.5) == observed(registry)

    async def test_async_with_concurrent_tasks(
        self, registry, histogram, clock
    ):
        """One Timer entered by concurrent tasks keeps a start per task."""
        timer = time(histogram)
        first_in = asyncio.Event()
        second_in = asyncio.Event()

        async def first():
            async with timer:
                first_in.set()
                await second_in.wait()
                clock.advance(1)

        async def second():
            await first_in.wait()
            clock.advance(10)
            async with timer:
                second_in.set()
                clock.advance(0)

        await asyncio.gather(first(), second())

        # first: 10 + 1 = 11 s, second: 0 s (it entered after the 10 s).
        assert (2.0, 11.0) == observed(registry)

    def test_nested_with_blocks(self, registry, histogram, clock):
        """Nested blocks on one Timer each observe their own span."""
        timer = time(histogram)
        with timer:
            clock.advance(1)
            with timer:
                clock.advance(2)
            clock.advance(3)

        assert (2.0, 8.0) == observed(registry)

    def test_bound_child(self, registry, clock):
        """A child bound with .labels() works as the metric."""
        labelled = Histogram("work_seconds", "", ["method"], registry=registry)

        @time(labelled.labels("GET"))
        def work():
            clock.advance(1)

        work()

        assert (1.0, 1.0) == observed(registry, {"method": "GET"})

    def test_any_observer(self, clock):
        """Any object with observe() is a metric."""

        class Recorder:
            def __init__(self) -> None:
                self.values: list[float] = []

            def observe(self, value: float) -> None:
                self.values.append(value)

        recorder = Recorder()
        with time(recorder):
            clock.advance(7)

        assert [7.0] == recorder.values

    def test_returns_a_timer(self, histogram):
        """Without a target, time() returns a reusable Timer."""
        assert isinstance(time(histogram), Timer)


class TestCountExceptions:
    async def test_counts_and_reraises(self, registry, counter):
        """An exception is counted and re-raised as the same object."""
        error = ValueError()

        @count_exceptions(counter)
        async def work():
            raise error

        with pytest.raises(ValueError) as caught:
            await work()

        assert error is caught.value
        assert 1.0 == errors(registry)

    async def test_success_is_not_counted(self, registry, counter):
        """A call that returns counts nothing and passes its result."""

        @count_exceptions(counter)
        async def work():
            return "ok"

        assert "ok" == await work()
        assert 0.0 == errors(registry)

    async def test_only_the_given_types(self, registry, counter):
        """Only exceptions of the given types (a tuple works) are counted."""

        @count_exceptions(counter, exc=(KeyError, IndexError))
        async def work(error):
            raise error

        for error in (KeyError(), IndexError(), ValueError()):
            with pytest.raises(type(error)):
                await work(error)

        assert 2.0 == errors(registry)

    async def test_cancellation_not_counted_by_default(
        self, registry, counter
    ):
        """A cancelled call is not an error unless BaseException is asked."""
        started = asyncio.Event()

        async def wait_forever():
            started.set()
            await asyncio.Event().wait()

        default = asyncio.create_task(
            count_exceptions(counter)(wait_forever)()
        )
        await started.wait()
        default.cancel()
        with pytest.raises(asyncio.CancelledError):
            await default
        assert 0.0 == errors(registry)

        started.clear()
        everything = asyncio.create_task(
            count_exceptions(counter, exc=BaseException)(wait_forever)()
        )
        await started.wait()
        everything.cancel()
        with pytest.raises(asyncio.CancelledError):
            await everything
        assert 1.0 == errors(registry)

    def test_sync_function(self, registry, counter):
        """A plain def's exceptions are counted."""

        @count_exceptions(counter)
        def work():
            raise RuntimeError

        with pytest.raises(RuntimeError):
            work()

        assert 1.0 == errors(registry)

    async def test_async_generator(self, registry, counter):
        """Exceptions raised during iteration are counted; aclose() is not."""

        @count_exceptions(counter, exc=BaseException)
        async def numbers(fail):
            yield 1
            if fail:
                raise ValueError
            yield 2

        with pytest.raises(ValueError):
            async for _ in numbers(fail=True):
                pass
        generator = numbers(fail=False)
        await generator.__anext__()
        await generator.aclose()

        assert 1.0 == errors(registry)

    async def test_awaitable(self, registry, counter):
        """count_exceptions(m, awaitable) counts what the awaitable raises."""

        async def fail():
            raise ValueError

        with pytest.raises(ValueError):
            await count_exceptions(counter, fail())

        assert 1.0 == errors(registry)

    async def test_with_blocks(self, registry, counter):
        """Sync and async with blocks count and re-raise."""
        with pytest.raises(KeyError), count_exceptions(counter):
            raise KeyError
        with pytest.raises(KeyError):
            async with count_exceptions(counter):
                raise KeyError
        with count_exceptions(counter):
            pass

        assert 2.0 == errors(registry)

    async def test_exception_type_as_label(self, registry):
        """exc_labels chooses label values from the exception."""
        labelled = Counter("work_errors", "", ["error"], registry=registry)

        @count_exceptions(labelled, exc_labels=lambda e: [type(e).__name__])
        async def work(error):
            raise error

        for error in (KeyError(), KeyError(), IndexError()):
            with pytest.raises(LookupError):
                await work(error)

        assert 2.0 == errors(registry, {"error": "KeyError"})
        assert 1.0 == errors(registry, {"error": "IndexError"})

    async def test_call_and_exception_labels_joined(self, registry):
        """Labels from the arguments and from the exception are joined."""
        labelled = Counter(
            "work_errors", "", ["route", "error"], registry=registry
        )

        @count_exceptions(
            labelled,
            labels=lambda route: {"route": route},
            exc_labels=lambda e: {"error": type(e).__name__},
        )
        async def work(route):
            raise ValueError

        with pytest.raises(ValueError):
            await work("/cats")

        assert 1.0 == errors(
            registry, {"route": "/cats", "error": "ValueError"}
        )

    def test_exc_labels_in_with_block(self, registry):
        """A with block can label by the exception, too."""
        labelled = Counter("work_errors", "", ["error"], registry=registry)

        with (
            pytest.raises(OSError),
            count_exceptions(
                labelled, exc_labels=lambda e: (type(e).__name__,)
            ),
        ):
            raise OSError

        assert 1.0 == errors(registry, {"error": "OSError"})

    def test_returns_an_exception_counter(self, counter):
        """Without a target, count_exceptions() returns an ExceptionCounter."""
        assert isinstance(count_exceptions(counter), ExceptionCounter)


class TestTrackInprogress:
    async def test_up_while_awaiting_down_after(self, registry, gauge):
        """The gauge is 1 during the await and 0 after the return."""
        release = asyncio.Event()

        @track_inprogress(gauge)
        async def work():
            await release.wait()
            return "done"

        task = asyncio.create_task(work())
        await until(lambda: inprogress(registry) == 1.0)
        release.set()

        assert "done" == await task
        assert 0.0 == inprogress(registry)

    async def test_down_after_exception_and_cancellation(
        self, registry, gauge
    ):
        """The gauge goes down when the call raises or is cancelled."""

        @track_inprogress(gauge)
        async def work(fail):
            if fail:
                raise ValueError
            await asyncio.Event().wait()

        with pytest.raises(ValueError):
            await work(fail=True)
        task = asyncio.create_task(work(fail=False))
        await until(lambda: inprogress(registry) == 1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        assert 0.0 == inprogress(registry)

    async def test_async_generator(self, registry, gauge):
        """An async generator is in progress while it is iterated."""

        @track_inprogress(gauge)
        async def numbers():
            yield inprogress(registry)
            yield inprogress(registry)

        generator = numbers()
        assert 0.0 == inprogress(registry)
        assert [1.0, 1.0] == [n async for n in generator]
        assert 0.0 == inprogress(registry)

    def test_sync_function(self, registry, gauge):
        """A plain def is in progress during the call."""

        @track_inprogress(gauge)
        def work():
            return inprogress(registry)

        assert 1.0 == work()
        assert 0.0 == inprogress(registry)

    async def test_awaitable_counts_while_running(self, registry, gauge):
        """track_inprogress(m, awaitable) is up while it runs."""
        seen = []

        async def work():
            seen.append(inprogress(registry))
            return "x"

        tracked = track_inprogress(gauge, work())

        assert 0.0 == inprogress(registry)
        assert "x" == await tracked
        assert [1.0] == seen
        assert 0.0 == inprogress(registry)

    async def test_with_blocks(self, registry, gauge):
        """Sync and async with blocks are in progress inside."""
        with track_inprogress(gauge):
            assert 1.0 == inprogress(registry)
        async with track_inprogress(gauge):
            assert 1.0 == inprogress(registry)

        assert 0.0 == inprogress(registry)

    def test_returns_an_inprogress_tracker(self, gauge):
        """Without a target, track_inprogress() returns a tracker."""
        assert isinstance(track_inprogress(gauge), InProgressTracker)


class TestLabelsPerCall:
    async def test_time_labels_from_arguments(self, registry, clock):
        """labels= picks the label values from each call's arguments."""
        labelled = Histogram("work_seconds", "", ["method"], registry=registry)

        @time(labelled, labels=lambda method, path: [method])
        async def handle(method, path):
            clock.advance(1)

        await handle("GET", "/")
        await handle("POST", path="/")
        await handle("GET", "/x")

        assert (2.0, 2.0) == observed(registry, {"method": "GET"})
        assert (1.0, 1.0) == observed(registry, {"method": "POST"})

    async def test_track_labels_by_name(self, registry):
        """A mapping names the labels; the same child goes up and down."""
        labelled = Gauge("work_inprogress", "", ["queue"], registry=registry)

        @track_inprogress(labelled, labels=lambda queue: {"queue": queue})
        async def consume(queue):
            return inprogress(registry, {"queue": queue})

        assert 1.0 == await consume("mail")
        assert 0.0 == inprogress(registry, {"queue": "mail"})

    def test_a_string_is_one_value(self, registry):
        """A labels callable may return a single string."""
        labelled = Counter("work_errors", "", ["kind"], registry=registry)

        @count_exceptions(labelled, labels=lambda kind: kind)
        def work(kind):
            raise ValueError

        with pytest.raises(ValueError):
            work("disk")

        assert 1.0 == errors(registry, {"kind": "disk"})

    def test_methods_see_self(self, registry):
        """On a method, the labels callable gets self like the method."""
        labelled = Gauge("work_inprogress", "", ["name"], registry=registry)

        class Worker:
            name = "w1"

            @track_inprogress(labelled, labels=lambda self: [self.name])
            def work(self):
                return inprogress(registry, {"name": self.name})

        assert 1.0 == Worker().work()


class TestDecoratedFunctions:
    def test_keeps_identity(self, histogram):
        """Name, docstring, signature and __wrapped__ are kept."""

        async def fetch(url: str, *, retries: int = 3) -> bytes:
            """Fetch a URL."""
            return b""

        decorated = time(histogram)(fetch)

        assert inspect.iscoroutinefunction(decorated)
        assert "fetch" == decorated.__name__
        assert "Fetch a URL." == decorated.__doc__
        assert fetch is decorated.__wrapped__
        assert inspect.signature(fetch) == inspect.signature(decorated)

    async def test_every_parameter_kind_is_forwarded(self, histogram):
        """Positional-only, defaults, *args, keyword-only and **kwargs pass."""
        default = object()

        @time(histogram)
        async def call(a, b=default, /, c=3, *rest, d, e=5, **extra):
            return a, b, c, rest, d, e, extra

        assert (1, default, 3, (), 4, 5, {}) == await call(1, d=4)
        assert (1, 2, 3, (9,), 4, 6, {"z": 0}) == await call(
            1, 2, 3, 9, d=4, e=6, z=0
        )
        with pytest.raises(TypeError):
            await call(1)

    async def test_parameter_named_like_internals(self, histogram):
        """A parameter whose name the wrapper uses inside still works."""

        @time(histogram)
        async def call(_pa_target, _pa_start=2):
            return _pa_target + _pa_start

        assert 3 == await call(1)

    async def test_methods(self, registry, histogram):
        """Methods, classmethods and staticmethods, either order, bind."""

        class Service:
            @time(histogram)
            async def method(self):
                return self

            @time(histogram)
            @classmethod
            async def outer_classmethod(cls):
                return cls

            @classmethod
            @time(histogram)
            async def inner_classmethod(cls):
                return cls

            @time(histogram)
            @staticmethod
            async def outer_staticmethod():
                return "static"

            @staticmethod
            @time(histogram)
            async def inner_staticmethod():
                return "static"

        service = Service()

        assert service is await service.method()
        assert Service is await Service.outer_classmethod()
        assert Service is await service.inner_classmethod()
        assert "static" == await Service.outer_staticmethod()
        assert "static" == await service.inner_staticmethod()
        assert 5.0 == observed(registry)[0]

    async def test_stacks_with_wrapt_decorators(self, registry, histogram):
        """Above and below a wrapt decorator, the instance binding holds."""
        seen = []

        @wrapt.decorator
        async def remember(wrapped, instance, args, kwargs):
            seen.append(instance)
            return await wrapped(*args, **kwargs)

        class Service:
            @time(histogram)
            @remember
            async def below(self, x):
                return x

            @remember
            @time(histogram)
            async def above(self, x):
                return x

        service = Service()

        assert 1 == await service.below(1)
        assert 2 == await service.above(2)
        assert [service, service] == seen
        assert inspect.iscoroutinefunction(Service.below)
        assert inspect.iscoroutinefunction(service.above)
        assert 2.0 == observed(registry)[0]

    async def test_stacks_with_functools_decorators(self, registry, histogram):
        """Under and over functools.wraps decorators, calls pass through."""

        def logged(function):
            @functools.wraps(function)
            async def wrapper(*args, **kwargs):
                return await function(*args, **kwargs)

            return wrapper

        @time(histogram)
        @logged
        @count_exceptions(Counter("e", "", registry=registry))
        async def work(x):
            return x

        assert 5 == await work(5)
        assert "work" == work.__name__
        assert 1.0 == observed(registry)[0]

    async def test_all_three_stacked(
        self, registry, histogram, counter, gauge
    ):
        """time, count_exceptions and track_inprogress stack on one call."""

        @time(histogram)
        @count_exceptions(counter)
        @track_inprogress(gauge)
        async def work():
            assert 1.0 == inprogress(registry)
            raise ValueError

        with pytest.raises(ValueError):
            await work()

        assert 1.0 == observed(registry)[0]
        assert 1.0 == errors(registry)
        assert 0.0 == inprogress(registry)

    async def test_callable_object(self, registry, histogram):
        """An object with an async __call__ is awaited like a function."""

        class Handler:
            async def __call__(self, x):
                return x

        decorated: Any = time(histogram)(Handler())

        assert 3 == await decorated(3)
        assert 1.0 == observed(registry)[0]

    async def test_partial(self, registry, histogram):
        """A functools.partial of an async def is timed as a coroutine."""

        async def add(a, b):
            return a + b

        decorated = time(histogram)(functools.partial(add, 1))

        assert 3 == await decorated(2)
        assert 1.0 == observed(registry)[0]

    async def test_parameters_named_like_template_words(self, histogram):
        """Parameters named TARGET or ending in ARGS are forwarded as is."""

        @time(histogram)
        async def call(TARGET, NUM_ARGS=2, *, MAX_ARGS):  # noqa: N803
            return TARGET, NUM_ARGS, MAX_ARGS

        assert (1, 2, 3) == await call(1, MAX_ARGS=3)
        assert (1, 5, 3) == await call(TARGET=1, NUM_ARGS=5, MAX_ARGS=3)
        assert inspect.signature(call.__wrapped__) == inspect.signature(
            call, follow_wrapped=False
        )


class TestBadInput:
    def test_not_a_metric(self, counter, histogram):
        """A metric without the needed method fails when decorating."""
        with pytest.raises(TypeError, match=r"observe\(\)"):
            time(counter)
        with pytest.raises(TypeError, match=r"inc\(\)"):
            count_exceptions(object())
        with pytest.raises(TypeError, match=r"dec\(\)"):
            track_inprogress(counter)

    def test_exc_not_an_exception(self, counter):
        """exc must be an exception class or a tuple of them."""
        for wrong in ("ValueError", ValueError(), (KeyError, int), int):
            with pytest.raises(TypeError, match="exception class"):
                count_exceptions(counter, exc=wrong)

    def test_target_neither_callable_nor_awaitable(self, histogram):
        """Decorating something that cannot run fails at once."""
        with pytest.raises(TypeError, match="callable or an awaitable"):
            time(histogram)(42)
        with pytest.raises(TypeError, match="callable or an awaitable"):
            time(histogram, 42)

    def test_labelled_metric_without_labels(self, registry):
        """A metric with label names needs labels= or a bound child."""
        labelled = Histogram("work_seconds", "", ["method"], registry=registry)

        with pytest.raises(ValueError, match="label names"):
            time(labelled)

    def test_labels_on_metric_without_label_names(self, histogram):
        """labels= on a metric without label names fails at once."""
        with pytest.raises(ValueError, match="no label names"):
            time(histogram, labels=lambda: ["x"])

    def test_labels_not_callable(self, registry):
        """labels= must be callable."""
        labelled = Histogram("work_seconds", "", ["method"], registry=registry)

        with pytest.raises(TypeError, match="callable"):
            time(labelled, labels=["GET"])

    async def test_labels_without_a_call(self, registry):
        """labels= cannot label a with block or an awaitable."""
        labelled = Histogram("work_seconds", "", ["method"], registry=registry)
        timer = time(labelled, labels=lambda: ["GET"])
        coroutine = asyncio.sleep(0)

        with pytest.raises(TypeError, match="with block"), timer:
            pass
        with pytest.raises(TypeError, match="awaitable"):
            timer(coroutine)
        await coroutine


class TestGenerators:
    def test_generator_send_and_close(self, registry, histogram):
        """send() and close() reach a wrapped generator."""
        closed = []

        @time(histogram)
        def echo() -> Iterator[Any]:
            received = None
            try:
                while True:
                    received = yield received
            finally:
                closed.append(True)

        generator = echo()
        next(generator)
        assert "a" == generator.send("a")
        generator.close()

        assert [True] == closed
        assert 1.0 == observed(registry)[0]

    async def test_async_generator_abandoned_then_closed(self, histogram):
        """An async generator left half-way is closed cleanly."""

        @track_inprogress(Gauge("g", "", registry=CollectorRegistry()))
        async def numbers() -> AsyncIterator[int]:
            yield 1
            yield 2

        generator = numbers()
        assert 1 == await generator.__anext__()
        await generator.aclose()


class TestPlainFunctionReturningAwaitable:
    async def test_time_until_the_awaitable_is_done(
        self, registry, histogram, clock
    ):
        """A def that returns an awaitable is timed until it is done."""

        async def work():
            clock.advance(2)
            return "done"

        @time(histogram)
        def delegate():
            clock.advance(1)
            return work()

        pending = delegate()

        assert 0.0 == observed(registry)[0]
        assert "done" == await pending
        assert (1.0, 3.0) == observed(registry)

    async def test_track_while_the_awaitable_runs(self, registry, gauge):
        """A def that returns an awaitable is in progress while it runs."""
        seen = []

        async def work():
            seen.append(inprogress(registry))

        @track_inprogress(gauge)
        def delegate():
            seen.append(inprogress(registry))
            return work()

        await delegate()

        assert [1.0, 1.0] == seen
        assert 0.0 == inprogress(registry)

    async def test_count_exceptions_of_the_awaitable(self, registry, counter):
        """Exceptions raised by the returned awaitable are counted."""

        async def fail():
            raise ValueError

        @count_exceptions(counter)
        def delegate():
            return fail()

        with capture_metrics(registry) as changes:
            pending = delegate()
            changes.assert_unchanged("work_errors_total")
            with pytest.raises(ValueError):
                await pending

        changes.assert_changed("work_errors_total", by=1)

    async def test_executor_future(self, registry, histogram):
        """loop.run_in_executor's future, returned by a def, is awaited."""

        @time(histogram)
        def offload():
            return asyncio.get_running_loop().run_in_executor(None, sum, [2])

        assert 2 == await offload()
        assert_sample(registry, "work_seconds_count", {}, 1.0)

    async def test_labels_reach_the_awaitable(self, registry):
        """Label values chosen from the call label the awaitable's sample."""
        labelled = Counter("work_errors", "", ["path"], registry=registry)

        async def fail():
            raise KeyError

        @count_exceptions(labelled, labels=lambda path: [path])
        def delegate(path):
            return fail()

        with pytest.raises(KeyError):
            await delegate("/a")

        assert 1.0 == errors(registry, {"path": "/a"})

    def test_plain_values_stay_plain(self, registry, histogram, gauge):
        """A def returning a plain value returns it, measured over the call."""
        assert 3 == time(histogram)(lambda: 3)()
        assert [1] == track_inprogress(gauge)(lambda: [1])()

        assert 1.0 == observed(registry)[0]
        assert 0.0 == inprogress(registry)


class TestCancelledBeforeStart:
    async def test_many_tasks_cancelled_at_once(self, registry, gauge):
        """Tasks cancelled before their first step leave the gauge at 0."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(100)]
        tasks = [
            asyncio.create_task(track_inprogress(gauge, future))
            for future in futures
        ]
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)

        assert all(isinstance(r, asyncio.CancelledError) for r in results)
        assert 0.0 == inprogress(registry)

    async def test_wait_for_zero(self, registry, gauge, histogram):
        """wait_for(..., 0) around the awaitable forms leaves no trace."""
        loop = asyncio.get_running_loop()
        for _ in range(3):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    track_inprogress(gauge, loop.create_future()), 0
                )
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(
                    time(histogram, loop.create_future()), 0
                )

        assert 0.0 == inprogress(registry)
        # Cancelled before they started, they never ran: nothing to time.
        assert 0.0 == observed(registry)[0]

    async def test_decorated_call_cancelled_before_start(
        self, registry, gauge
    ):
        """A decorated coroutine cancelled before it starts is never up."""

        @track_inprogress(gauge)
        async def work():
            await asyncio.sleep(0)

        task = asyncio.create_task(work())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        assert 0.0 == inprogress(registry)

    async def test_returned_awaitable_cancelled_before_start(
        self, registry, gauge
    ):
        """A def's returned awaitable cancelled unstarted leaves gauge at 0."""

        @track_inprogress(gauge)
        def delegate():
            return asyncio.sleep(1)

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(delegate(), 0)

        assert 0.0 == inprogress(registry)


class TestWithBlocks:
    def test_interleaved_generators_keep_their_own_starts(
        self, registry, histogram, clock
    ):
        """A shared Timer in two generators of one thread times each."""
        timer = time(histogram)

        def block():
            with timer:
                yield

        first, second = block(), block()
        next(first)  # enters at 100.0
        clock.advance(0.1)
        next(second)  # enters at 100.1
        clock.advance(0.2)
        next(first, None)  # leaves at 100.3: 0.3 s
        clock.advance(0.2)
        next(second, None)  # leaves at 100.5: 0.4 s

        def bucket(le):
            return registry.get_sample_value("work_seconds_bucket", {"le": le})

        assert (2.0, pytest.approx(0.7)) == observed(registry)
        assert (0.0, 2.0) == (bucket("0.25"), bucket("0.5"))

    def test_block_finished_in_another_thread(self, registry, histogram):
        """A generator's block resumed in another thread is observed there."""
        timer = time(histogram)

        def block():
            with timer:
                yield

        generator = block()
        next(generator)
        finished = []

        def finish():
            finished.extend(generator)

        thread = threading.Thread(target=finish)
        thread.start()
        thread.join()

        assert [] == finished
        assert 1.0 == observed(registry)[0]

    def test_exit_without_enter_never_raises(
        self, registry, histogram, caplog
    ):
        """A Timer left without being entered logs and observes nothing."""
        timer = time(histogram)

        timer.__exit__(None, None, None)

        assert 0.0 == observed(registry)[0]
        assert "did not see entered" in caplog.text

    def test_memory_stays_flat(self, histogram):
        """A million blocks leave nothing behind."""
        timer = time(histogram)
        for _ in range(1000):
            with timer:
                pass
        before = sys.getallocatedblocks()
        for _ in range(1_000_000):
            with timer:
                pass
        after = sys.getallocatedblocks()

        assert after - before < 1000
        assert {} == timer._starts


class TestLabelCallables:
    def test_labels_that_cannot_take_the_arguments(self, registry):
        """A labels= callable that cannot take the arguments is refused."""
        labelled = Histogram("work_seconds", "", ["path"], registry=registry)

        with pytest.raises(TypeError, match="cannot take them"):

            @time(labelled, labels=lambda: ["x"])
            def handle(request): ...

        with pytest.raises(TypeError, match="cannot take them"):

            @track_inprogress(
                Gauge("g", "", ["a"], registry=registry),
                labels=lambda a: [a],
            )
            def both(a, *, b): ...

    def test_labels_taking_any_arguments(self, registry):
        """*args/**kwargs and defaults in labels= are accepted."""
        labelled = Histogram("work_seconds", "", ["path"], registry=registry)

        @time(labelled, labels=lambda *args, **kwargs: [str(len(args))])
        def handle(a, b=2, *, c): ...

        @time(labelled, labels=lambda a, b=0, c=1: [a])
        def other(a, b, *, c): ...

        handle(1, c=3)
        other("x", 1, c=2)

        assert 1.0 == observed(registry, {"path": "2"})[0]
        assert 1.0 == observed(registry, {"path": "x"})[0]

    async def test_raising_labels_never_change_the_call(
        self, registry, caplog
    ):
        """A raising labels= skips the sample and logs once; the call runs."""
        labelled = Histogram("work_seconds", "", ["path"], registry=registry)
        gauge = Gauge("g", "", ["path"], registry=registry)

        def broken(path):
            raise RuntimeError("no labels today")

        @time(labelled, labels=broken)
        @track_inprogress(gauge, labels=broken)
        async def handle(path):
            return path * 2

        assert "aa" == await handle("a")
        assert "bb" == await handle("b")

        # One record per wrapper, each with the error's traceback.
        assert 2 == len(caplog.records)
        assert all(
            isinstance(r.exc_info[1], RuntimeError) for r in caplog.records
        )
        assert [] == [
            s for m in registry.collect() for s in m.samples if s.labels
        ]

    async def test_wrong_number_of_label_values(self, registry, caplog):
        """Label values the metric refuses are logged, never raised."""
        labelled = Counter("work_errors", "", ["a", "b"], registry=registry)

        @count_exceptions(labelled, labels=lambda: ["only one"])
        async def fail():
            raise ValueError("the application's own")

        with pytest.raises(ValueError, match="the application's own"):
            await fail()

        assert "labels=" in caplog.text

    async def test_raising_exc_labels_keep_the_exception(
        self, registry, caplog
    ):
        """An exc_labels= error never replaces the application's error."""
        labelled = Counter("work_errors", "", ["kind"], registry=registry)

        def broken(error):
            raise LookupError("exc_labels bug")

        @count_exceptions(labelled, exc_labels=broken)
        def fail():
            raise ValueError("the application's own")

        for _ in range(2):
            with pytest.raises(ValueError, match="the application's own"):
                fail()
        with (
            pytest.raises(ValueError, match="the application's own"),
            count_exceptions(labelled, exc_labels=broken),
        ):
            raise ValueError("the application's own")

        # Once for the decorated function, once for the with block.
        assert 2 == len(caplog.records)
        assert all(
            isinstance(r.exc_info[1], LookupError) for r in caplog.records
        )
        assert [] == list(labelled.collect()[0].samples)


class TestTracebacks:
    def test_wrapper_frames_show_their_source(self, histogram):
        """A traceback through a wrapper names it and shows its line."""

        @time(histogram)
        def fail(x):
            raise ValueError(x)

        with pytest.raises(ValueError) as caught:
            fail(1)
        text = "".join(traceback.format_exception(caught.value))

        assert "time wrapper of the function" in text
        assert "TestTracebacks.test_wrapper_frames_show_their_source" in text
        assert "_pa_result = _pa_target(x)" in text

    def test_each_wrapper_has_its_own_file_name(self, histogram):
        """Two wrappers never share a file name."""

        def one(): ...

        names = {time(histogram)(one).__code__.co_filename for _ in range(3)}

        assert 3 == len(names)

    def test_builtin_names_as_parameters(self, histogram):
        """Parameters named like the builtins the templates use work."""

        @time(histogram)
        def numbers(GeneratorExit, BaseException, StopAsyncIteration):  # noqa: A002, N803
            yield GeneratorExit
            yield BaseException + StopAsyncIteration

        generator = numbers(1, 2, 3)
        assert [1, 5] == list(generator)


class TestAwaitableForms:
    async def test_repeated_calls_take_the_checked_path(self, registry):
        """The second call with the same kinds of objects gives the same."""
        histogram = Histogram("work_seconds", "", registry=registry)
        counter = Counter("work_errors", "", registry=registry)
        gauge = Gauge("work_inprogress", "", registry=registry)

        async def fail():
            raise ValueError

        for _ in range(2):
            assert 1 == await time(histogram, asyncio.sleep(0, 1))
            assert 2 == await track_inprogress(gauge, asyncio.sleep(0, 2))
            with pytest.raises(ValueError):
                await count_exceptions(counter, fail())

        assert 2.0 == observed(registry)[0]
        assert 2.0 == errors(registry)
        assert 0.0 == inprogress(registry)

    async def test_labelled_parent_refused_after_a_checked_call(
        self, registry
    ):
        """A labelled parent of a class seen before is still refused."""
        plain = Histogram("plain_seconds", "", registry=registry)
        labelled = Histogram("work_seconds", "", ["path"], registry=registry)
        counter = Counter("work_errors", "", ["path"], registry=registry)
        gauge = Gauge("work_inprogress", "", ["path"], registry=registry)
        await time(plain, asyncio.sleep(0))
        await time(labelled.labels("/"), asyncio.sleep(0))
        await count_exceptions(counter.labels("/"), asyncio.sleep(0))
        await track_inprogress(gauge.labels("/"), asyncio.sleep(0))

        for instrument, metric in (
            (time, labelled),
            (count_exceptions, counter),
            (track_inprogress, gauge),
        ):
            coroutine = asyncio.sleep(0)
            with pytest.raises(ValueError, match="label names"):
                instrument(metric, coroutine)
            await coroutine

        assert 1.0 == observed(registry, {"path": "/"})[0]

    async def test_exc_labels_on_an_awaitable(self, registry):
        """count_exceptions(m, aw, exc_labels=...) labels by the error."""
        labelled = Counter("work_errors", "", ["kind"], registry=registry)

        async def fail():
            raise KeyError

        with pytest.raises(KeyError):
            await count_exceptions(
                labelled, fail(), exc_labels=lambda e: [type(e).__name__]
            )
        assert 1.0 == await count_exceptions(
            labelled, asyncio.sleep(0, 1.0), exc_labels=lambda e: ["x"]
        )

        assert 1.0 == errors(registry, {"kind": "KeyError"})

    async def test_with_no_room_left_to_remember(
        self, registry, histogram, monkeypatch
    ):
        """Past the cap, every call is checked in full, and still works."""
        monkeypatch.setattr(_decorators, "_CHECKED_CAP", 0)
        monkeypatch.setattr(_decorators, "_observer_types", {})

        assert 1 == await time(histogram, asyncio.sleep(0, 1))
        assert 1 == await time(histogram, asyncio.sleep(0, 1))

        assert {} == _decorators._observer_types
        assert 2.0 == observed(registry)[0]

    def test_a_callable_as_second_argument_is_decorated(
        self, registry, histogram
    ):
        """time(m, function) decorates the function, as time(m)(function)."""
        timed = time(histogram, lambda: 5)

        assert 5 == timed()
        assert 1.0 == observed(registry)[0]


class TestJoinedLabels:
    async def test_strings_and_sequences_join(self, registry):
        """A single string from either callable is one value."""
        labelled = Counter(
            "work_errors", "", ["path", "kind"], registry=registry
        )

        @count_exceptions(
            labelled, labels=lambda path: path, exc_labels=lambda e: "boom"
        )
        def fail(path):
            raise ValueError

        with pytest.raises(ValueError):
            fail("/a")

        assert 1.0 == errors(registry, {"path": "/a", "kind": "boom"})

    def test_mapping_and_sequence_do_not_mix(self, registry, caplog):
        """Values by name and by position cannot be joined: logged, skipped."""
        labelled = Counter(
            "work_errors", "", ["path", "kind"], registry=registry
        )

        @count_exceptions(
            labelled,
            labels=lambda path: {"path": path},
            exc_labels=lambda e: ["boom"],
        )
        def fail(path):
            raise ValueError

        with pytest.raises(ValueError):
            fail("/a")

        assert "both by name" in caplog.text
        assert [] == list(labelled.collect()[0].samples)

    def test_raising_call_labels_when_counting(self, registry, caplog):
        """A labels= that raises while counting is logged; the error stays."""
        labelled = Counter("work_errors", "", ["path"], registry=registry)

        def broken(path):
            raise RuntimeError("labels bug")

        @count_exceptions(labelled, labels=broken)
        def fail(path):
            raise ValueError("the application's own")

        with pytest.raises(ValueError, match="the application's own"):
            fail("/a")

        assert "labels bug" in caplog.text


class TestLabelsFit:
    def test_metric_without_labels_method(self):
        """labels= needs a metric with a labels() method."""

        class Plain:
            def observe(self, value): ...

        with pytest.raises(TypeError, match=r"labels\(\) method"):
            time(Plain(), labels=lambda: ["x"])

    def test_callables_without_signature_are_trusted(self, registry):
        """A labels= whose signature cannot be read is not checked."""
        labelled = Histogram("work_seconds", "", ["path"], registry=registry)

        @time(labelled, labels=str)
        def handle(path): ...

        handle("/a")

        assert 1.0 == observed(registry, {"path": "/a"})[0]

    def test_variadic_targets(self, registry):
        """*args and **kwargs of the target are not required of labels=."""
        labelled = Histogram("work_seconds", "", ["path"], registry=registry)

        @time(labelled, labels=lambda path, *args, **kwargs: [path])
        def handle(path, *args, **kwargs): ...

        handle("/a", 1, x=2)

        assert 1.0 == observed(registry, {"path": "/a"})[0]
