"""
prom_async.aio.push.Pusher: a batch job's registry, pushed when it ends.
"""

from __future__ import annotations

import asyncio
import gzip
import logging

import aiohttp
import pytest

from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from prometheus_client.exposition import generate_latest

from fixtures_pushgateway import GatewayDouble
from fixtures_servers import eventually
from prom_async.aio.push import Pusher, PushError


class JobError(Exception):
    pass


def methods(double: GatewayDouble) -> list[str]:
    return [request.method for request in double.requests]


def push_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "prom_async.aio.push"]


class TestPusher:
    async def test_pushes_when_the_block_ends(
        self, gateway_double: GatewayDouble
    ):
        """The registry is PUT once, when the block ends."""
        async with Pusher(
            gateway_double.url, "batch", grouping_key={"run": "1"}
        ) as pusher:
            Gauge("rows", "Rows.", registry=pusher.registry).set(7)
            pushed_before_end = list(gateway_double.requests)

        (request,) = gateway_double.requests
        assert [] == pushed_before_end
        assert ("PUT", "/metrics/job/batch/run/1") == (
            request.method,
            request.raw_path,
        )
        assert generate_latest(pusher.registry) == gzip.decompress(
            request.body
        )

    async def test_pushes_when_the_block_raises(
        self, gateway_double: GatewayDouble
    ):
        """A job that raises is pushed too, and its exception propagates
        unchanged."""
        error = JobError("disk full")

        with pytest.raises(JobError) as caught:
            async with Pusher(gateway_double.url, "batch") as pusher:
                Gauge("failed", "Failed.", registry=pusher.registry).set(1)
                raise error

        assert error is caught.value
        assert ["PUT"] == methods(gateway_double)
        assert b"failed 1.0" in gzip.decompress(
            gateway_double.requests[0].body
        )

    async def test_failed_push_after_failed_job(
        self, gateway_double: GatewayDouble, caplog
    ):
        """When the job raised and the final push fails, the job's
        exception propagates and the push's failure is logged."""
        gateway_double.answers = [(400, "bad metrics")]

        with (
            caplog.at_level(logging.ERROR, "prom_async.aio.push"),
            pytest.raises(JobError),
        ):
            async with Pusher(gateway_double.url, "batch"):
                raise JobError

        (record,) = push_records(caplog)
        assert "The final PUT of job 'batch'" in record.getMessage()
        assert "JobError()" in record.getMessage()
        assert isinstance(record.exc_info[1], PushError)

    async def test_failed_push_after_good_job_raises(
        self, gateway_double: GatewayDouble
    ):
        """When the job succeeded, a final push that fails raises."""
        gateway_double.answers = [(400, "bad metrics")]

        with pytest.raises(PushError, match="bad metrics"):
            async with Pusher(gateway_double.url, "batch"):
                pass

    async def test_cancelled_job_is_pushed(
        self, gateway_double: GatewayDouble
    ):
        """A job cancelled while it runs is pushed, and stays cancelled."""
        started = asyncio.Event()

        async def job():
            async with Pusher(gateway_double.url, "batch"):
                started.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(job())
        await started.wait()
        task.cancel()

        with pytest.raises(asyncio.CancelledError):
            await task
        assert ["PUT"] == methods(gateway_double)

    async def test_pushes_every_interval(self, gateway_double: GatewayDouble):
        """With interval, the registry is also pushed while the job runs."""
        async with Pusher(gateway_double.url, "batch", interval=0.01):
            await eventually(
                lambda: len(gateway_double.requests) >= 3,
                what="three periodic pushes",
            )
            periodic = len(gateway_double.requests)

        # The final push comes after every periodic one.
        assert {"PUT"} == set(methods(gateway_double))
        assert len(gateway_double.requests) > periodic

    async def test_periodic_failure_is_logged_job_goes_on(
        self, gateway_double: GatewayDouble, caplog
    ):
        """A periodic push that fails is logged; the job goes on and the
        next push is made."""
        gateway_double.answers = [(400, "bad")]

        with caplog.at_level(logging.WARNING, "prom_async.aio.push"):
            async with Pusher(gateway_double.url, "batch", interval=0.01):
                await eventually(
                    lambda: len(gateway_double.requests) >= 2,
                    what="a push after the failed one",
                )

        first = push_records(caplog)[0]
        assert "A periodic push of job 'batch'" in first.getMessage()
        assert isinstance(first.exc_info[1], PushError)

    async def test_delete_on_exit(self, gateway_double: GatewayDouble):
        """delete_on_exit: the group is deleted, not pushed, when the
        block ends."""
        async with Pusher(
            gateway_double.url,
            "batch",
            interval=0.01,
            delete_on_exit=True,
        ):
            await eventually(
                lambda: gateway_double.requests, what="a periodic push"
            )

        assert "DELETE" == methods(gateway_double)[-1]
        assert {"PUT"} == set(methods(gateway_double)[:-1])
        assert b"" == gateway_double.requests[-1].body

    async def test_push_inside_the_block(self, gateway_double: GatewayDouble):
        """push() pushes at once, inside the block."""
        async with Pusher(gateway_double.url, "batch") as pusher:
            await pusher.push()
            pushed = len(gateway_double.requests)

        assert (1, 2) == (pushed, len(gateway_double.requests))

    async def test_one_session_for_the_block(
        self, gateway_double: GatewayDouble
    ):
        """Every push of a block goes over one session (one connection),
        which is closed when the block ends."""
        async with Pusher(gateway_double.url, "batch") as pusher:
            await pusher.push()
            await pusher.push()
            session = pusher._block.connection.session

        assert 1 == len(
            {request.client_port for request in gateway_double.requests}
        )
        assert session.closed

    async def test_given_session_stays_open(
        self, gateway_double: GatewayDouble
    ):
        """A session= of the application is used and never closed."""
        async with aiohttp.ClientSession() as session:
            async with Pusher(
                gateway_double.url, "batch", session=session
            ) as pusher:
                used = pusher._block.connection.session

            assert not session.closed
        assert session is used

    async def test_reusable_after_the_block(
        self, gateway_double: GatewayDouble
    ):
        """A Pusher can serve one block after another."""
        pusher = Pusher(gateway_double.url, "batch")
        async with pusher:
            pass
        async with pusher:
            pass

        assert ["PUT", "PUT"] == methods(gateway_double)


class TestPusherRegistry:
    def test_dedicated_by_default(self):
        """Without registry=, a new empty registry, not the global one."""
        pusher = Pusher("gateway", "batch")

        assert isinstance(pusher.registry, CollectorRegistry)
        assert pusher.registry is not REGISTRY
        assert b"" == generate_latest(pusher.registry)

    def test_given(self, registry):
        """registry= is the one pushed."""
        assert registry is Pusher("gw", "b", registry=registry).registry

    def test_global_on_request(self):
        """registry=REGISTRY pushes the global one."""
        assert REGISTRY is Pusher("gw", "b", registry=REGISTRY).registry


class TestPusherAttributes:
    def test_url(self):
        """url is the group's URL."""
        pusher = Pusher("gw:9091", "b", grouping_key={"i": "a/b"})

        assert "http://gw:9091/metrics/job/b/i@base64/YS9i" == pusher.url

    def test_repr(self):
        """The repr names the group."""
        assert "<Pusher http://gw/metrics/job/b>" == repr(Pusher("gw", "b"))


class TestPusherMisuse:
    def test_sync_with(self):
        """`with Pusher(...)` says to use `async with`."""
        with (
            pytest.raises(TypeError, match="use `async with Pusher"),
            Pusher("gw", "b"),
        ):
            pass  # pragma: no cover -- never entered

    async def test_push_outside_the_block(self):
        """push() outside `async with` raises, naming it."""
        with pytest.raises(RuntimeError, match="inside `async with Pusher"):
            await Pusher("gw", "b").push()

    async def test_nested_blocks(self, gateway_double: GatewayDouble):
        """The same Pusher in two blocks at once raises."""
        pusher = Pusher(gateway_double.url, "batch")
        async with pusher:
            with pytest.raises(RuntimeError, match="already in use"):
                async with pusher:
                    pass  # pragma: no cover -- never entered

    async def test_closed_session_at_entry(self):
        """A given session closed before the block starts raises there."""
        session = aiohttp.ClientSession()
        pusher = Pusher("gw", "b", session=session)
        await session.close()

        with pytest.raises(RuntimeError, match="is closed"):
            async with pusher:
                pass  # pragma: no cover -- never entered

    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            ({"interval": 0}, ValueError, "interval must be a positive"),
            ({"interval": "5"}, ValueError, "interval must be a positive"),
            ({"interval": True}, ValueError, "interval must be a positive"),
            ({"registry": object()}, TypeError, "must be a CollectorRegistry"),
            ({"delete_on_exit": 1}, TypeError, "delete_on_exit must be"),
            ({"grouping_key": {"a-b": 1}}, ValueError, "invalid grouping"),
            ({"timeout": 0}, ValueError, "timeout must be positive"),
        ],
    )
    def test_bad_options(self, options, error, message):
        """Wrong options raise when the Pusher is made."""
        with pytest.raises(error, match=message):
            Pusher("gw", "b", **options)

    def test_gateway_without_host(self):
        """A gateway URL without a host raises when the Pusher is made."""
        with pytest.raises(ValueError, match="names no host"):
            Pusher("http://", "b")
