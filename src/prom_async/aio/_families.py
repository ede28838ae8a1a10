"""
Metric families that prom_async creates for the user, shared per registry.

An application built twice in one process (once per test, or two apps that
share the global registry) asks for the same families twice. Creating them
again would make prometheus_client raise ``Duplicated timeseries``; here the
second request gets the family the first one created, and a request for the
same name with another shape (another type, label names or options) is a
clear error.
"""

from __future__ import annotations

import threading
import weakref

from typing import TYPE_CHECKING, Any, TypeVar


if TYPE_CHECKING:
    from collections.abc import Sequence

    from prometheus_client import CollectorRegistry


__all__ = ["family"]

_M = TypeVar("_M")

_lock = threading.Lock()
_Shape = tuple[type, tuple[str, ...], tuple[tuple[str, Any], ...]]
_created: weakref.WeakKeyDictionary[
    CollectorRegistry, dict[str, tuple[Any, _Shape]]
] = weakref.WeakKeyDictionary()


def family(
    kind: type[_M],
    name: str,
    documentation: str,
    labelnames: Sequence[str],
    *,
    registry: CollectorRegistry,
    namespace: str = "",
    **options: Any,
) -> _M:
    """
    The metric *kind* (``Histogram``, ``Gauge``, ...) named *name* in
    *registry*: the one created by an earlier call, or a new one.

    Raises:
        ValueError: An earlier call created *name* in *registry* with
            another kind, other label names or other options.
    """
    full_name = f"{namespace}_{name}" if namespace else name
    shape: _Shape = (kind, tuple(labelnames), tuple(sorted(options.items())))
    with _lock:
        by_name = _created.setdefault(registry, {})
        known = by_name.get(full_name)
        if known is not None:
            metric, known_shape = known
            if known_shape != shape:
                raise ValueError(
                    f"{full_name} already exists in this registry as a "
                    f"{known_shape[0].__name__} with label names "
                    f"{known_shape[1]} and options {dict(known_shape[2])}; "
                    f"it cannot also be a {kind.__name__} with label names "
                    f"{shape[1]} and options {options}: give one of them "
                    "another namespace= or registry="
                )
            return metric  # type: ignore[no-any-return]
        metric = kind(  # type: ignore[call-arg]
            name,
            documentation,
            labelnames,
            namespace=namespace,
            registry=registry,
            **options,
        )
        by_name[full_name] = (metric, shape)
        return metric
