"""
Wrappers compiled for the signature of the function they wrap.

A wrapper written as ``async def wrapper(*args, **kwargs)`` packs and unpacks
the arguments on every call, which costs about as much as the measurement
itself. Compiling the wrapper with the wrapped function's own parameter list
forwards the arguments as plain names instead.

A :class:`Probe` says what to run around the call: source lines before it
(``enter``), the clauses that close the ``try`` around it (``leave``), and the
names that source uses. The names ``ARGS`` and ``TARGET`` in the probe's
source stand for the forwarded arguments and the wrapped callable.
"""

from __future__ import annotations

import functools
import inspect
import types

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple


class Probe(NamedTuple):
    enter: str
    leave: str
    names: Mapping[str, object]


_PREFIX = "_pa_"

_COROUTINE = """\
async def {name}({params}):
{enter}
    try:
        return await TARGET(ARGS)
{leave}
"""

_FUNCTION = """\
def {name}({params}):
{enter}
    try:
        return TARGET(ARGS)
{leave}
"""

_GENERATOR = """\
def {name}({params}):
{enter}
    try:
        return (yield from TARGET(ARGS))
    except GeneratorExit:
        raise
{leave}
"""

# Hand-written delegation, since ``yield from`` has no async counterpart:
# values, asend(), athrow() and aclose() all reach the wrapped generator.
_ASYNC_GENERATOR = """\
async def {name}({params}):
    _pa_agen = TARGET(ARGS)
{enter}
    try:
        _pa_value = await _pa_agen.asend(None)
        while True:
            try:
                _pa_sent = yield _pa_value
            except GeneratorExit:
                await _pa_agen.aclose()
                raise
            except BaseException as _pa_thrown:
                _pa_value = await _pa_agen.athrow(_pa_thrown)
            else:
                _pa_value = await _pa_agen.asend(_pa_sent)
    except StopAsyncIteration:
        return
    except GeneratorExit:
        raise
{leave}
"""


class Kind(NamedTuple):
    template: str


COROUTINE = Kind(_COROUTINE)
FUNCTION = Kind(_FUNCTION)
GENERATOR = Kind(_GENERATOR)
ASYNC_GENERATOR = Kind(_ASYNC_GENERATOR)


def kind_of(target: Callable[..., Any]) -> Kind:
    """
    Tell what calling *target* gives: a coroutine, an async generator, a
    generator or a plain value.
    """
    candidates = [target]
    if not inspect.isfunction(target) and not isinstance(target, type):
        # the bound __call__ of a callable object, whose kind is the object's
        candidates.append(getattr(target, "__call__", target))  # noqa: B004
    for candidate in candidates:
        if inspect.iscoroutinefunction(candidate):
            return COROUTINE
        if inspect.isasyncgenfunction(candidate):
            return ASYNC_GENERATOR
        if inspect.isgeneratorfunction(candidate):
            return GENERATOR
    return FUNCTION


class _Signature(NamedTuple):
    params: str
    forward: str
    defaults: dict[str, object]


_GENERIC = _Signature(
    params="*_pa_args, **_pa_kwargs",
    forward="*_pa_args, **_pa_kwargs",
    defaults={},
)


def _signature_of(function: types.FunctionType) -> _Signature:  # noqa: C901
    # one branch per kind of parameter: splitting it would hide the order
    """
    The parameter list of *function*, read from its code object, and the
    argument list that forwards every parameter to it.
    """
    code = function.__code__
    positional = code.co_varnames[: code.co_argcount]
    keyword_only = code.co_varnames[
        code.co_argcount : code.co_argcount + code.co_kwonlyargcount
    ]
    rest = code.co_argcount + code.co_kwonlyargcount
    var_positional = var_keyword = None
    if code.co_flags & inspect.CO_VARARGS:
        var_positional = code.co_varnames[rest]
        rest += 1
    if code.co_flags & inspect.CO_VARKEYWORDS:
        var_keyword = code.co_varnames[rest]

    defaults: dict[str, object] = {}
    positional_defaults = function.__defaults__ or ()
    first_default = len(positional) - len(positional_defaults)
    params: list[str] = []
    forward: list[str] = []
    for index, name in enumerate(positional):
        if index >= first_default:
            default = f"{_PREFIX}default_{index}"
            defaults[default] = positional_defaults[index - first_default]
            params.append(f"{name}={default}")
        else:
            params.append(name)
        forward.append(name)
        if index + 1 == code.co_posonlyargcount:
            params.append("/")
    if var_positional:
        params.append(f"*{var_positional}")
        forward.append(f"*{var_positional}")
    elif keyword_only:
        params.append("*")
    keyword_defaults = function.__kwdefaults__ or {}
    for index, name in enumerate(keyword_only):
        if name in keyword_defaults:
            default = f"{_PREFIX}kwdefault_{index}"
            defaults[default] = keyword_defaults[name]
            params.append(f"{name}={default}")
        else:
            params.append(name)
        forward.append(f"{name}={name}")
    if var_keyword:
        params.append(f"**{var_keyword}")
        forward.append(f"**{var_keyword}")
    return _Signature(", ".join(params), ", ".join(forward), defaults)


@functools.lru_cache(maxsize=512)
def _compile(source: str) -> types.CodeType:
    return compile(source, "<prom_async wrapper>", "exec")


def _build(
    kind: Kind,
    probe: Probe,
    signature: _Signature,
    target: object,
    name: str,
) -> types.FunctionType:
    indent = "    "

    def substituted(code: str) -> str:
        # Only in the template and the probe: a parameter may be named ARGS.
        return code.replace("TARGET", f"{_PREFIX}target").replace(
            "ARGS", signature.forward
        )

    source = substituted(kind.template).format(
        name=name,
        params=signature.params,
        enter=_indented(substituted(probe.enter), indent),
        leave=_indented(substituted(probe.leave), indent),
    )
    namespace: dict[str, object] = {
        **probe.names,
        **signature.defaults,
        f"{_PREFIX}target": target,
    }
    exec(_compile(source), namespace)  # noqa: S102 -- our own template
    built: types.FunctionType = namespace[name]  # type: ignore[assignment]
    return built


def _indented(lines: str, indent: str) -> str:
    return "\n".join(indent + line for line in lines.splitlines()) or (
        indent + "pass"
    )


def wrap_function(
    target: types.FunctionType, kind: Kind, probe: Probe
) -> types.FunctionType:
    """
    Return a function with *target*'s parameters that runs *probe* around
    each call of *target*.
    """
    signature = _signature_of(target)
    if any(name.startswith(_PREFIX) for name in target.__code__.co_varnames):
        signature = _GENERIC
    wrapper = _build(kind, probe, signature, target, f"{_PREFIX}wrapper")
    functools.update_wrapper(wrapper, target)
    return wrapper


def wrap_callable(
    target: Callable[..., Any], kind: Kind, probe: Probe
) -> Callable[..., Any]:
    """
    Wrap any other callable (a callable object, a ``functools.partial``, a
    wrapt proxy) in a :class:`wrapt.FunctionWrapper`, which binds it to an
    instance the way *target* itself would be bound.
    """
    import wrapt  # noqa: PLC0415 -- only needed off the fast path

    signature = _Signature(
        params=f"{_PREFIX}target, _pa_instance, _pa_args, _pa_kwargs",
        forward="*_pa_args, **_pa_kwargs",
        defaults={},
    )
    wrapper = _build(kind, probe, signature, None, f"{_PREFIX}wrapper")
    return wrapt.FunctionWrapper(target, wrapper)
