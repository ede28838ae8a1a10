"""
gunicorn server hooks: the base that installs them in a configuration
module, and the worker slots that give each worker a stable number.

gunicorn is not imported: a hook is called with its arbiter and, for the
worker hooks, a worker object, which are read through the small protocols
below.
"""

from __future__ import annotations

import logging
import os
import weakref

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol


__all__ = [
    "ArbiterLike",
    "GunicornHooks",
    "WorkerLike",
    "WorkerSlots",
    "in_gunicorn",
    "worker_slot",
]

log = logging.getLogger("prom_async.aio.prefork")


class WorkerLike(Protocol):
    """
    What the hooks read of a gunicorn worker (the ``worker`` argument of
    gunicorn's worker hooks): a ``gunicorn.workers.base.Worker``.

    .. versionadded:: 0.2.0
    """

    @property
    def pid(self) -> int:
        """
        The worker's process ID.
        """


class ArbiterLike(Protocol):
    """
    What the hooks read of gunicorn's arbiter (the ``server`` argument of
    every hook): a ``gunicorn.arbiter.Arbiter``.

    .. versionadded:: 0.2.0
    """

    @property
    def WORKERS(self) -> Mapping[int, Any]:  # noqa: N802 -- gunicorn's name
        """
        The live workers, by process ID.
        """


_current_slot: int | None = None
#: The master's record of each live worker's slot. Kept here, not in a
#: WorkerSlots: gunicorn's SIGHUP loads the configuration again, and the
#: new object must know the slots of the workers that still run.
_slots: weakref.WeakKeyDictionary[WorkerLike, int] = (
    weakref.WeakKeyDictionary()
)


def in_gunicorn() -> bool:
    """
    Whether this process was started by gunicorn (its arbiter sets
    ``SERVER_SOFTWARE`` to ``gunicorn/<version>``).
    """
    return os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/")


def worker_slot() -> int | None:
    """
    This worker's slot: a number from 0 that no other live worker of the
    same gunicorn has, and that a replacement takes over from the worker it
    replaces.

    Known in workers of a gunicorn whose configuration installs
    :class:`WorkerSlots`; :data:`None` anywhere else (the master, a process
    not started by gunicorn).

    .. versionadded:: 0.2.0
    """
    return _current_slot


class GunicornHooks:
    """
    gunicorn server hooks, as methods named after gunicorn's settings.

    Assign the methods in your gunicorn configuration module
    (``child_exit = hooks.child_exit``), or let :meth:`install` assign all of
    them.

    .. versionadded:: 0.2.0
    """

    hook_names: ClassVar[tuple[str, ...]] = ()
    """
    The names of the hooks, as gunicorn's settings name them.
    """

    def install(self, namespace: dict[str, Any]) -> None:
        """
        Assign every hook in *namespace*, a gunicorn configuration module's
        ``globals()``.

        A hook that *namespace* already defines is kept: it is called after
        this object's. Call :meth:`install` after the hooks you define.

        Args:
            namespace: The configuration module's ``globals()``.

        Raises:
            TypeError: *namespace* defines a hook name as something that is
                not callable.
        """
        for name in self.hook_names:
            ours: Callable[..., None] = getattr(self, name)
            theirs = namespace.get(name)
            if theirs is None:
                namespace[name] = ours
            elif not callable(theirs):
                raise TypeError(
                    f"{name} in the configuration is {theirs!r}, not a "
                    "function: gunicorn calls it as a hook"
                )
            else:
                namespace[name] = _chain(name, ours, theirs)


def _chain(
    name: str, first: Callable[..., None], then: Callable[..., object]
) -> Callable[..., None]:
    def hook(*args: Any) -> None:
        first(*args)
        then(*args)

    hook.__name__ = hook.__qualname__ = name
    return hook


class WorkerSlots(GunicornHooks):
    """
    Give each gunicorn worker a slot (see :func:`worker_slot`), so that it
    can listen on a port of its own that stays the same across restarts:
    ``base_port + slot``.

    In the gunicorn configuration module::

        from prom_async.aio.prefork import WorkerSlots

        WorkerSlots().install(globals())

    Its hooks are ``pre_fork`` (the master picks the lowest slot no live
    worker has) and ``post_fork`` (the new worker learns it). Slots run
    from 0 to the number of workers minus one, but while gunicorn replaces
    all workers at once (``SIGHUP``), the new ones take the next slots, up
    to twice the number of workers.

    .. versionadded:: 0.2.0
    """

    hook_names: ClassVar[tuple[str, ...]] = ("pre_fork", "post_fork")

    def pre_fork(self, server: ArbiterLike, worker: WorkerLike) -> None:
        """
        gunicorn's ``pre_fork`` hook: choose the slot of *worker*.
        """
        taken = {_slots.get(other) for other in server.WORKERS.values()}
        slot = next(n for n in range(len(taken) + 1) if n not in taken)
        _slots[worker] = slot

    def post_fork(self, server: ArbiterLike, worker: WorkerLike) -> None:  # noqa: ARG002 -- gunicorn's signature
        """
        gunicorn's ``post_fork`` hook: the new worker takes its slot.

        Raises:
            RuntimeError: ``pre_fork`` did not run for *worker*.
        """
        global _current_slot  # noqa: PLW0603 -- one slot per process
        try:
            _current_slot = _slots[worker]
        except KeyError:
            raise RuntimeError(
                "WorkerSlots.post_fork ran without its pre_fork: install "
                "both hooks (WorkerSlots().install(globals()))"
            ) from None
        log.debug("worker %d has slot %d", worker.pid, _current_slot)
