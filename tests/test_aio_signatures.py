"""
Wrapped functions behave like the originals, whatever their signature.
"""

from __future__ import annotations

import asyncio
import inspect
import keyword

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from prom_async.aio import count_exceptions, time, track_inprogress


# Names that could collide with what the wrapper uses inside: the builtins
# its templates raise and catch, the templates' own placeholders, names the
# wrapper binds, and ordinary builtins.
RISKY_NAMES = [
    "BaseException",
    "GeneratorExit",
    "StopAsyncIteration",
    "TARGET",
    "ARGS",
    "target",
    "args",
    "kwargs",
    "name",
    "params",
    "enter",
    "leave",
    "raised",
    "defer",
    "always",
    "_pa_target",
    "_pa_start",
    "_pa_result",
    "type",
    "len",
    "object",
    "print",
    "self",
]

names = st.one_of(
    st.sampled_from(RISKY_NAMES),
    st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
        lambda n: not keyword.iskeyword(n)
    ),
)

SHAPES = ["coroutine", "function", "generator", "async generator"]


class Signature:
    """
    A random parameter list, its source, and a call that fits it.
    """

    def __init__(self, data: st.DataObject) -> None:
        chosen = data.draw(
            st.lists(names, min_size=0, max_size=7, unique=True), "names"
        )
        self.kinds: list[tuple[str, str, bool]] = []
        rest = list(chosen)
        defaults_started = False
        for part in ("positional-only", "positional"):
            count = data.draw(st.integers(0, len(rest)), part)
            for name in rest[:count]:
                defaults_started = defaults_started or data.draw(st.booleans())
                self.kinds.append((part, name, defaults_started))
            rest = rest[count:]
        self.var_positional = (
            rest.pop(0) if rest and data.draw(st.booleans()) else None
        )
        self.var_keyword = (
            rest.pop() if rest and data.draw(st.booleans()) else None
        )
        for name in rest:
            self.kinds.append(("keyword-only", name, data.draw(st.booleans())))

    def source(self, shape: str) -> str:
        params = []
        positional_only = [k for k in self.kinds if k[0] == "positional-only"]
        for index, (part, name, has_default) in enumerate(self.kinds):
            if part == "keyword-only" and (
                index == 0 or self.kinds[index - 1][0] != "keyword-only"
            ):
                params.append(
                    f"*{self.var_positional}" if self.var_positional else "*"
                )
            params.append(f"{name}={index * 10}" if has_default else name)
            if part == "positional-only" and name == positional_only[-1][1]:
                params.append("/")
        if self.var_positional and not any(
            k[0] == "keyword-only" for k in self.kinds
        ):
            params.append(f"*{self.var_positional}")
        if self.var_keyword:
            params.append(f"**{self.var_keyword}")
        every = [k[1] for k in self.kinds]
        every += [n for n in (self.var_positional, self.var_keyword) if n]
        seen = "{" + ", ".join(f"{n!r}: {n}" for n in every) + "}"
        body = {
            "coroutine": f"async def original({', '.join(params)}):\n"
            f"    return {seen}\n",
            "function": f"def original({', '.join(params)}):\n"
            f"    return {seen}\n",
            "generator": f"def original({', '.join(params)}):\n"
            f"    yield {seen}\n    return 'done'\n",
            "async generator": f"async def original({', '.join(params)}):\n"
            f"    yield {seen}\n",
        }
        return body[shape]

    def call(self, data: st.DataObject) -> tuple[list[Any], dict[str, Any]]:
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        by_position = True
        for part, name, has_default in self.kinds:
            value = data.draw(st.integers(), name)
            if has_default and data.draw(st.booleans()):
                by_position = False
                continue
            if part == "positional-only" or (
                part == "positional"
                and by_position
                and data.draw(st.booleans())
            ):
                args.append(value)
            else:
                by_position = False
                kwargs[name] = value
        if self.var_positional and by_position:
            args += data.draw(st.lists(st.integers(), max_size=2), "extra")
        if self.var_keyword:
            taken = {k[1] for k in self.kinds}
            for extra in data.draw(
                st.lists(names, max_size=2, unique=True), "extra keywords"
            ):
                if extra not in taken and extra not in kwargs:
                    kwargs[extra] = 0
        return args, kwargs


def instruments(registry: CollectorRegistry) -> list[Any]:
    return [
        time(Histogram("seconds", "", registry=registry)),
        count_exceptions(Counter("errors", "", registry=registry)),
        track_inprogress(Gauge("inprogress", "", registry=registry)),
    ]


async def outcome(shape: str, function: Any, args: list[Any], kwargs: Any):
    try:
        result = function(*args, **kwargs)
    except TypeError as error:
        return ("TypeError", str(error).split("() ", 1)[-1])
    if shape == "coroutine":
        return await result
    if shape == "function":
        return result
    if shape == "generator":
        return list(result)
    return [value async for value in result]


class TestAnySignature:
    @settings(max_examples=300, deadline=None)
    @given(data=st.data(), shape=st.sampled_from(SHAPES))
    def test_wrapped_behaves_like_the_original(self, data, shape):
        """Every kind of parameter, named anything, reaches the original."""
        signature = Signature(data)
        namespace: dict[str, Any] = {}
        exec(signature.source(shape), namespace)
        original = namespace["original"]
        registry = CollectorRegistry()
        instrument = data.draw(st.sampled_from(instruments(registry)))
        wrapped = instrument(original)
        args, kwargs = signature.call(data)

        expected = asyncio.run(outcome(shape, original, args, kwargs))
        actual = asyncio.run(outcome(shape, wrapped, args, kwargs))

        assert expected == actual
        assert inspect.signature(original) == inspect.signature(wrapped)
        assert 0.0 == (registry.get_sample_value("inprogress") or 0.0)
