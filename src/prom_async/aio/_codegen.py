"""
Wrappers compiled for the signature of the function they wrap.

A wrapper written as ``async def wrapper(*args, **kwargs)`` packs and unpacks
the arguments on every call, which costs about as much as the measurement
itself. Compiling the wrapper with the wrapped function's own parameter list
forwards the arguments as plain names instead.

A :class:`Probe` says what to run around the call: source lines before it
(``enter``), lines for when it ends however it ends (``always``), lines for
when an exception of the probe's types passes (``on_error``), and what to do
with an awaitable that a plain function returns (``defer``). In the probe's
source, ``{args}`` stands for the forwarded arguments and ``{target}`` for
the wrapped callable; every other name the source uses starts with ``_pa_``
and is bound in the wrapper's namespace. Where the wrapped function has a
parameter of that prefix, the wrapper's names take another (``_pa1_``, ...),
so no parameter can shadow them.

Each wrapper is compiled under a file name of its own, with its source in
:mod:`linecache`, so a traceback through it shows its lines and says what it
wraps.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import itertools
import linecache
import types

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple


class Probe(NamedTuple):
    """
    What an instrument runs around each call.

    Attributes:
        enter: Statements before the call.
        always: Statements run however the call ends, or ``""``.
        on_error: Statements run when an exception of type ``_pa_exc``
            (bound in *names*) passes, as ``_pa_error``, or ``""``.
        defer: Statements that return a coroutine measuring
            ``_pa_result``, an awaitable that a plain function returned,
            in place of ``always``.
        names: The values of the ``_pa_`` names the statements use.
    """

    enter: str
    always: str
    on_error: str
    defer: str
    names: Mapping[str, object]


_PREFIX = "_pa_"

# The builtins the templates use, bound under names no parameter can take.
_BUILTINS = {
    f"{_PREFIX}{name}": getattr(builtins, name)
    for name in ("BaseException", "GeneratorExit", "StopAsyncIteration")
}

_COROUTINE = """\
async def {name}({params}):
{enter}
    try:
        return await {target}({args})
{leave}
"""

_GENERATOR = """\
def {name}({params}):
{enter}
    try:
        return (yield from {target}({args}))
    except _pa_GeneratorExit:
        raise
{leave}
"""

# Hand-written delegation, since ``yield from`` has no async counterpart:
# values, asend(), athrow() and aclose() all reach the wrapped generator.
_ASYNC_GENERATOR = """\
async def {name}({params}):
    _pa_agen = {target}({args})
{enter}
    try:
        _pa_value = await _pa_agen.asend(None)
        while True:
            try:
                _pa_sent = yield _pa_value
            except _pa_GeneratorExit:
                await _pa_agen.aclose()
                raise
            except _pa_BaseException as _pa_thrown:
                _pa_value = await _pa_agen.athrow(_pa_thrown)
            else:
                _pa_value = await _pa_agen.asend(_pa_sent)
    except _pa_StopAsyncIteration:
        return
    except _pa_GeneratorExit:
        raise
{leave}
"""

# A plain function: a plain value is measured over the call; an awaitable it
# returns (a function that delegates) is measured until it is done, by the
# coroutine the probe's ``defer`` returns in its place.
_FUNCTION = """\
def {name}({params}):
{enter}
    try:
        _pa_result = {target}({args})
{raised}
    if _pa_isawaitable(_pa_result):
{defer}
{always}
    return _pa_result
"""


class Kind(NamedTuple):
    template: str
    describes: str


COROUTINE = Kind(_COROUTINE, "coroutine function")
FUNCTION = Kind(_FUNCTION, "function")
GENERATOR = Kind(_GENERATOR, "generator function")
ASYNC_GENERATOR = Kind(_ASYNC_GENERATOR, "async generator function")


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


def _signature_of(  # noqa: C901
    function: types.FunctionType, prefix: str
) -> _Signature:
    # one branch per kind of parameter: splitting it would hide the order
    """
    The parameter list of *function*, read from its code object, and the
    argument list that forwards every parameter to it; its defaults are
    bound under names that start with *prefix*.
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
            default = f"{prefix}default_{index}"
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
            default = f"{prefix}kwdefault_{index}"
            defaults[default] = keyword_defaults[name]
            params.append(f"{name}={default}")
        else:
            params.append(name)
        forward.append(f"{name}={name}")
    if var_keyword:
        params.append(f"**{var_keyword}")
        forward.append(f"**{var_keyword}")
    return _Signature(", ".join(params), ", ".join(forward), defaults)


def _leave(probe: Probe) -> str:
    """
    The clauses that close the ``try`` around a call that is awaited or
    iterated in the wrapper itself.
    """
    clauses = []
    if probe.on_error:
        clauses.append(
            "except _pa_exc as _pa_error:\n"
            f"{_indented(probe.on_error, 1)}\n    raise"
        )
    if probe.always:
        clauses.append(f"finally:\n{_indented(probe.always, 1)}")
    return "\n".join(clauses)


def _raised(probe: Probe) -> str:
    """
    The clauses that close the ``try`` around a plain function's call: what
    ``always`` does on return is written after it, since a returned
    awaitable is measured on.
    """
    clauses = []
    if probe.on_error:
        clauses.append(
            "except _pa_exc as _pa_error:\n"
            f"{_indented(probe.on_error, 1)}\n"
            f"{_indented(probe.always, 1)}\n    raise"
        )
    if probe.always:
        clauses.append(
            "except _pa_BaseException:\n"
            f"{_indented(probe.always, 1)}\n    raise"
        )
    return "\n".join(clauses) or "finally:\n    pass"


_serial = itertools.count(1)


def _build(
    kind: Kind,
    probe: Probe,
    signature: _Signature,
    target: object,
    describes: str,
    *,
    prefix: str = _PREFIX,
) -> types.FunctionType:
    def ours(code: str) -> str:
        # Before the parameters go in: only our own names have the prefix.
        return code.replace(_PREFIX, prefix)

    fields = {"target": f"{prefix}target", "args": signature.forward}
    source = ours(kind.template).format(
        name=f"{prefix}wrapper",
        params=signature.params,
        enter=_indented(ours(probe.enter).format(**fields), 1),
        leave=_indented(ours(_leave(probe)).format(**fields), 1),
        raised=_indented(ours(_raised(probe)).format(**fields), 1),
        defer=_indented(ours(probe.defer).format(**fields), 2),
        always=_indented(ours(probe.always).format(**fields), 1),
        **fields,
    )
    namespace: dict[str, object] = {
        ours(name): value
        for name, value in {
            **_BUILTINS,
            f"{_PREFIX}isawaitable": inspect.isawaitable,
            **probe.names,
        }.items()
    }
    namespace.update(signature.defaults)
    namespace[f"{prefix}target"] = target
    filename = f"<prom_async.aio.{describes} #{next(_serial)}>"
    code = compile(source, filename, "exec")
    linecache.cache[filename] = (
        len(source),
        None,
        source.splitlines(keepends=True),
        filename,
    )
    exec(code, namespace)  # noqa: S102 -- our own template
    built: types.FunctionType = namespace[f"{prefix}wrapper"]  # type: ignore[assignment]
    return built


def _free_prefix(names: tuple[str, ...]) -> str:
    """
    A prefix for the wrapper's own names that no name in *names* has.
    """
    for serial in itertools.count():
        prefix = f"_pa{serial or ''}_"
        if not any(name.startswith(prefix) for name in names):
            return prefix
    raise AssertionError  # pragma: no cover -- count() never ends


def _indented(lines: str, depth: int) -> str:
    indent = "    " * depth
    return "\n".join(indent + line for line in lines.splitlines()) or (
        indent + "pass"
    )


def _described(verb: str, kind: Kind, target: object) -> str:
    """
    What a wrapper's file name says: ``time wrapper of the coroutine
    function app.handle``.
    """
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None) or repr(target)
    where = f"{module}.{qualname}" if module else qualname
    return f"{verb} wrapper of the {kind.describes} {where}"


def wrap_function(
    target: types.FunctionType, kind: Kind, probe: Probe, verb: str
) -> types.FunctionType:
    """
    Return a function with *target*'s parameters that runs *probe* around
    each call of *target*.
    """
    prefix = _free_prefix(target.__code__.co_varnames)
    wrapper = _build(
        kind,
        probe,
        _signature_of(target, prefix),
        target,
        _described(verb, kind, target),
        prefix=prefix,
    )
    functools.update_wrapper(wrapper, target)
    return wrapper


def wrap_callable(
    target: Callable[..., Any], kind: Kind, probe: Probe, verb: str
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
    wrapper = _build(
        kind, probe, signature, None, _described(verb, kind, target)
    )
    return wrapt.FunctionWrapper(target, wrapper)
