"""
docs/migrating.rst, held to the facts: each "before" against the installed
prometheus-async (the benchmarks' dependency), each "now" against
prom_async.

prometheus-async's Consul client is hard-wired to 127.0.0.1:8500; the tests
point that client (its ``consul.agent_url``) at a Consul double on loopback.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import socket
import threading

from importlib.metadata import metadata, version
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yarl

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from consul_double import ConsulDouble
from fixtures_consul import ConsulDoubleFactory, sd_log_records
from fixtures_servers import eventually
from prom_async.aio import count_exceptions, time, track_inprogress
from prom_async.aio.sd import ConsulAgent
from prom_async.aio.web import (
    server_stats,
    start_http_server,
    start_http_server_in_thread,
)


pytestmark = pytest.mark.usefixtures("consul_env_cleared")

PAGE = Path(__file__).parent.parent / "docs" / "migrating.rst"
FAST = {
    "request_timeout": 2.0,
    "retry_initial_delay": 0.01,
    "retry_max_delay": 0.05,
    "resync_interval": 0.02,
}


@pytest.fixture
def theirs() -> SimpleNamespace:
    """
    prometheus-async's asyncio modules; the test is skipped without it.
    """
    pytest.importorskip("prometheus_async")
    import prometheus_async.aio  # noqa: PLC0415 -- only where installed
    import prometheus_async.aio.sd  # noqa: PLC0415
    import prometheus_async.aio.web  # noqa: PLC0415

    return SimpleNamespace(
        aio=prometheus_async.aio,
        sd=prometheus_async.aio.sd,
        web=prometheus_async.aio.web,
    )


@pytest.fixture
async def down_double(
    consul_double_factory: ConsulDoubleFactory,
) -> ConsulDouble:
    """
    A Consul double that refuses connections until ``come_up()``.
    """
    double = await consul_double_factory()
    await double.go_down()
    return double


def their_agent(theirs: SimpleNamespace, double: ConsulDouble, **options):
    """
    prometheus-async's ConsulAgent, talking to *double*.
    """
    agent = theirs.sd.ConsulAgent(**options)
    agent.consul.agent_url = yarl.URL(double.url) / "v1" / "agent"
    return agent


def our_agent(double: ConsulDouble, **options: Any) -> ConsulAgent:
    """
    Our ConsulAgent, talking to *double*.
    """
    return ConsulAgent(agent_address=double.address, **options)


def only_check(double: ConsulDouble) -> dict[str, Any]:
    """
    The definition of the one check registered with *double*.
    """
    (check,) = double.checks.values()
    definition: dict[str, Any] = check["Definition"]
    return definition


async def fails_with_cancellation(started: asyncio.Event) -> None:
    started.set()
    await asyncio.Event().wait()


async def cancel_once_started(function: Any) -> None:
    """
    Start ``function(started)`` as a task and cancel it once it runs.
    """
    started = asyncio.Event()
    task = asyncio.create_task(function(started))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class TestPage:
    def test_names_the_installed_version(self, theirs):
        """The page names the prometheus-async version its facts are
        checked against."""
        major_minor = ".".join(version("prometheus-async").split(".")[:2])

        assert f"prometheus-async {major_minor}" in PAGE.read_text()


class TestRegistrationFailure:
    async def test_before_start_raises(self, theirs, down_double):
        """prometheus-async: an unreachable agent makes start_http_server
        raise; nothing serves."""
        agent = their_agent(theirs, down_double)

        with pytest.raises(OSError, match="Cannot connect"):
            await theirs.web.start_http_server(
                addr="127.0.0.1", service_discovery=agent
            )

    async def test_now_serves_and_retries(self, down_double):
        """prom_async: the server starts unregistered and registers once
        the agent answers."""
        agent = our_agent(down_double, **FAST)

        async with await start_http_server(
            addr="127.0.0.1", service_discovery=agent
        ) as server:
            registered_at_start = server.is_registered
            await down_double.come_up()
            await eventually(lambda: server.is_registered, what="registered")

        assert not registered_at_start


class TestDefaultServiceId:
    async def test_before_the_name(self, theirs, consul_double):
        """prometheus-async: the service ID is the name."""
        agent = their_agent(theirs, consul_double, name="billing")

        server = await theirs.web.start_http_server(
            addr="127.0.0.1", service_discovery=agent
        )
        registered = list(consul_double.services)
        await server.close()

        assert ("billing", ["billing"]) == (agent.service_id, registered)

    async def test_now_name_host_port(self, consul_double):
        """prom_async: the ID is name-host-port; agent.service_id stays
        None and the registration holds the ID."""
        agent = our_agent(consul_double, name="billing")

        async with await start_http_server(
            addr="127.0.0.1", service_discovery=agent
        ) as server:
            registered = list(consul_double.services)
            expected = f"billing-{socket.gethostname()}-{server.socket.port}"
            assert agent.registration is not None
            held = agent.registration.service_id

        assert (None, [expected], expected) == (
            agent.service_id,
            registered,
            held,
        )


class TestHealthCheck:
    async def test_before_root_page_kept_forever(self, theirs, consul_double):
        """prometheus-async: the agent checks ``/`` every 10 s, and never
        drops a service whose check stays critical."""
        agent = their_agent(theirs, consul_double)

        server = await theirs.web.start_http_server(
            addr="127.0.0.1", service_discovery=agent
        )
        check = only_check(consul_double)
        await server.close()

        assert (server.url, "10s", "0s") == (
            check["HTTP"],
            check["Interval"],
            check["DeregisterCriticalServiceAfter"],
        )
        assert "/" == urlsplit(check["HTTP"]).path

    async def test_now_metrics_dropped_after_ten_minutes(self, consul_double):
        """prom_async: the agent checks ``/metrics`` with a 5 s timeout and
        drops the service after 10 minutes critical."""
        agent = our_agent(consul_double)

        async with await start_http_server(
            addr="127.0.0.1", service_discovery=agent
        ) as server:
            check = only_check(consul_double)
            metrics_url = server.metrics_url

        assert (metrics_url, "10s", "5s", "10m0s") == (
            check["HTTP"],
            check["Interval"],
            check["Timeout"],
            check["DeregisterCriticalServiceAfter"],
        )

    def test_now_old_behaviour_on_request(self):
        """prom_async: check_url= and deregister_critical_after=None give
        the old check back."""
        agent = ConsulAgent(
            check_url="http://127.0.0.1:9100/", deregister_critical_after=None
        )
        server = SimpleNamespace(
            socket=SimpleNamespace(addr="127.0.0.1", port=9100),
            https=False,
            metrics_path="/metrics",
        )

        check = agent.service_definition(server)["check"]

        assert "http://127.0.0.1:9100/" == check["http"]
        assert "DeregisterCriticalServiceAfter" not in check


class TestConsulEnvironment:
    @pytest.fixture
    def environment(
        self, consul_env_cleared, monkeypatch, consul_double
    ) -> None:
        """CONSUL_HTTP_ADDR names the double, CONSUL_HTTP_TOKEN a token."""
        monkeypatch.setenv("CONSUL_HTTP_ADDR", consul_double.address)
        monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-the-environment")

    @pytest.mark.usefixtures("environment")
    def test_before_ignored(self, theirs):
        """prometheus-async: always 127.0.0.1:8500, no token unless
        passed."""
        agent = theirs.sd.ConsulAgent()

        assert (
            yarl.URL("http://127.0.0.1:8500/v1/agent"),
            {},
        ) == (agent.consul.agent_url, agent.consul.headers)

    @pytest.mark.usefixtures("environment")
    async def test_now_read(self, consul_double):
        """prom_async: CONSUL_HTTP_ADDR and CONSUL_HTTP_TOKEN are used when
        no argument says otherwise."""
        agent = ConsulAgent()

        async with await start_http_server(
            addr="127.0.0.1", service_discovery=agent
        ):
            (request,) = consul_double.requests_to(
                "/v1/agent/service/register"
            )

        assert (consul_double.url, "from-the-environment") == (
            agent.agent.url,
            request.headers.get("X-Consul-Token"),
        )

    @pytest.mark.usefixtures("environment")
    def test_now_arguments_win(self):
        """prom_async: agent_address= wins over CONSUL_HTTP_ADDR."""
        agent = ConsulAgent(agent_address="127.0.0.1:8500")

        assert "http://127.0.0.1:8500" == agent.agent.url


class TestWildcardAddress:
    async def test_before_refused(self, theirs, consul_double):
        """prometheus-async: a server on all interfaces registers 0.0.0.0,
        which Consul refuses; the server stays unregistered, silently."""
        agent = their_agent(theirs, consul_double)

        server = await theirs.web.start_http_server(
            addr="0.0.0.0", service_discovery=agent
        )
        (request,) = consul_double.requests_to("/v1/agent/service/register")
        await server.close()

        assert (400, {}, False) == (
            request.status,
            consul_double.services,
            server.is_registered,
        )

    async def test_now_no_address(self, consul_double):
        """prom_async: no address is registered (discovery uses the node's)
        and the agent checks over loopback."""
        agent = our_agent(consul_double)

        async with await start_http_server(
            addr="0.0.0.0", service_discovery=agent
        ) as server:
            (service,) = consul_double.services.values()
            check = only_check(consul_double)

        assert ("", f"http://127.0.0.1:{server.socket.port}/metrics") == (
            service["Address"],
            check["HTTP"],
        )


class TestRefusals:
    async def test_before_given_up(self, theirs, consul_double_factory):
        """prometheus-async: a refusal (403) leaves the server unregistered
        after one try."""
        double = await consul_double_factory(acl_token="the-token")
        agent = their_agent(theirs, double, token="wrong")

        server = await theirs.web.start_http_server(
            addr="127.0.0.1", service_discovery=agent
        )
        requests = double.requests_to("/v1/agent/service/register")
        await server.close()

        assert ([403], False) == (
            [request.status for request in requests],
            server.is_registered,
        )

    async def test_now_kept_and_retried(self, consul_double_factory):
        """prom_async: the refusal is kept as registration.error and the
        registration is tried again."""
        double = await consul_double_factory(acl_token="the-token")
        agent = our_agent(double, token="wrong", **FAST)

        async with await start_http_server(
            addr="127.0.0.1", service_discovery=agent
        ):
            await eventually(
                lambda: (
                    len(double.requests_to("/v1/agent/service/register")) >= 2
                ),
                what="a second try",
            )
            assert agent.registration is not None
            error = agent.registration.error

        assert error is not None
        assert 403 == error.status


class TestCloseWithAgentGone:
    async def test_before_close_raises(self, theirs, consul_double):
        """prometheus-async: close() raises when the agent is gone, before
        the server stops."""
        agent = their_agent(theirs, consul_double)
        server = await theirs.web.start_http_server(
            addr="127.0.0.1", service_discovery=agent
        )
        await consul_double.go_down()

        try:
            with pytest.raises(OSError, match="Cannot connect"):
                await server.close()
            async with (
                aiohttp.ClientSession() as http,
                http.get(server.url) as response,
            ):
                still_serving = response.status
        finally:
            await server._runner.cleanup()

        assert 200 == still_serving

    async def test_now_close_completes(self, consul_double, caplog):
        """prom_async: close() logs a warning and stops the server."""
        agent = our_agent(consul_double, **FAST)
        server = await start_http_server(
            addr="127.0.0.1", service_discovery=agent
        )
        await consul_double.go_down()

        await server.close()

        assert 1 == len(sd_log_records(caplog, logging.WARNING))


class TestEmptyStrings:
    def test_before_mean_none(self, theirs):
        """prometheus-async: token="" sends no token, service_id="" uses
        the name."""
        agent = theirs.sd.ConsulAgent(name="billing", service_id="", token="")

        assert ("billing", {}) == (agent.service_id, agent.consul.headers)

    @pytest.mark.parametrize("option", ["service_id", "token"])
    def test_now_refused(self, option):
        """prom_async: an empty service_id or token is a ValueError."""
        with pytest.raises(ValueError, match="must not be empty"):
            ConsulAgent(**{option: ""})


class TestPythonVersions:
    def test_before_39(self, theirs):
        """prometheus-async supports Python 3.9."""
        assert ">=3.9" == metadata("prometheus-async")["Requires-Python"]

    def test_now_310(self):
        """prom_async needs Python 3.10."""
        assert ">=3.10" == metadata("prom-async")["Requires-Python"]


class TestAllInterfaces:
    async def test_before_wildcard_url(self, theirs):
        """prometheus-async: with addr="", url names a wildcard address and
        each address family has a port of its own."""
        server = await theirs.web.start_http_server(addr="")
        try:
            host = urlsplit(server.url).hostname
            ports = [address[1] for address in server._runner.addresses]
        finally:
            await server.close()

        assert host in {"0.0.0.0", "::"}
        assert server.socket.addr == host
        assert len(ports) == len(set(ports))

    async def test_now_loopback_url(self):
        """prom_async: with addr="", url names the loopback address, socket
        is the IPv4 one, and every address shares its port."""
        async with await start_http_server(addr="") as server:
            sockets = server.sockets
            url = server.url

        assert f"http://127.0.0.1:{server.socket.port}/" == url
        assert "0.0.0.0" == server.socket.addr
        assert {server.socket.port} == {s.port for s in sockets}


class TestThreadName:
    def test_before(self, theirs):
        """prometheus-async's thread is PrometheusAsyncWebEndpoint."""
        server = theirs.web.start_http_server_in_thread(addr="127.0.0.1")
        try:
            names = {thread.name for thread in threading.enumerate()}
        finally:
            server.close()

        assert "PrometheusAsyncWebEndpoint" in names

    def test_now(self, registry):
        """prom_async's thread is prom_async-metrics-exporter."""
        with start_http_server_in_thread(
            addr="127.0.0.1", registry=registry
        ) as server:
            name = server.thread.name

        assert "prom_async-metrics-exporter" == name


class TestNegotiation:
    OLD_OPENMETRICS = (
        "application/openmetrics-text; version=0.0.1,"
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )

    async def test_before_any_openmetrics_and_latest_type(self, theirs):
        """prometheus-async: OpenMetrics for any version; text as latest."""
        asked = SimpleNamespace(headers={"Accept": self.OLD_OPENMETRICS})
        plain = SimpleNamespace(headers={})

        openmetrics = await theirs.web.server_stats(asked)
        text = await theirs.web.server_stats(plain)

        assert "application/openmetrics-text" == openmetrics.content_type
        assert CONTENT_TYPE_LATEST == text.headers["Content-Type"]
        assert text.body.startswith(b"# HELP")

    @pytest.mark.parametrize("accept", [OLD_OPENMETRICS, ""])
    async def test_now_as_prometheus_client_negotiates(self, accept):
        """prom_async: the content type prometheus_client's choose_encoder
        gives."""
        response = await server_stats(
            SimpleNamespace(headers={"Accept": accept})
        )

        assert choose_encoder(accept)[1] == response.headers["Content-Type"]


class TestCountExceptionsDefault:
    async def test_before_counts_cancellation(self, theirs, registry):
        """prometheus-async counts a cancelled call as an exception."""
        errors = Counter("errors", "Failed calls.", registry=registry)

        await cancel_once_started(
            theirs.aio.count_exceptions(errors)(fails_with_cancellation)
        )

        assert 1 == registry.get_sample_value("errors_total")

    async def test_now_does_not(self, registry):
        """prom_async does not, unless exc=BaseException."""
        errors = Counter("errors", "Failed calls.", registry=registry)
        every = Counter("every", "Failed calls.", registry=registry)

        await cancel_once_started(
            count_exceptions(errors)(fails_with_cancellation)
        )
        await cancel_once_started(
            count_exceptions(every, exc=BaseException)(fails_with_cancellation)
        )

        assert (0, 1) == (
            registry.get_sample_value("errors_total"),
            registry.get_sample_value("every_total"),
        )


class TestPlainFunctions:
    async def test_before_awaited(self, theirs, registry):
        """prometheus-async: a decorated plain def returns a coroutine that
        awaits the result, which fails for a plain value."""
        histogram = Histogram("h", "Durations.", registry=registry)

        @theirs.aio.time(histogram)
        def plain() -> int:
            return 1

        call = plain()
        is_coroutine = inspect.iscoroutine(call)
        with pytest.raises(TypeError, match="can't be used in 'await'"):
            await call

        assert is_coroutine

    async def test_now_keeps_its_kind(self, registry):
        """prom_async: a plain def returns its value; one that returns an
        awaitable is measured until the awaitable completes."""
        histogram = Histogram("h", "Durations.", registry=registry)

        async def work() -> int:
            return 2

        @time(histogram)
        def plain() -> int:
            return 1

        @time(histogram)
        def delegating() -> Any:
            return work()

        assert (1, 2, 2.0) == (
            plain(),
            await delegating(),
            registry.get_sample_value("h_count"),
        )


class TestAwaitablesStart:
    @pytest.fixture
    def clock(self, monkeypatch) -> list[float]:
        """
        The time both libraries' wrappers read: ``clock[0]``, moved by hand.
        """
        pytest.importorskip("prometheus_async")
        now = [100.0]
        for module in (
            "prometheus_async.aio._decorators",
            "prom_async.aio._decorators",
        ):
            monkeypatch.setattr(
                importlib.import_module(module), "perf_counter", lambda: now[0]
            )
        return now

    @pytest.mark.parametrize(
        ("library", "expected"), [("theirs", 11.0), ("ours", 1.0)]
    )
    async def test_clock_starts(
        self, theirs, registry, clock, library, expected
    ):
        """time(histogram, awaitable) starts the clock when called in
        prometheus-async (11 s here), when the coroutine first runs in
        prom_async (1 s)."""
        histogram = Histogram("h", "Durations.", registry=registry)
        timer = theirs.aio.time if library == "theirs" else time

        async def work() -> None:
            clock[0] += 1

        timed = timer(histogram, work())
        clock[0] += 10
        await timed

        assert expected == registry.get_sample_value("h_sum")

    async def test_before_when_called(self, theirs, registry):
        """prometheus-async: track_inprogress(gauge, awaitable) counts up
        when called, before the coroutine runs."""
        gauge = Gauge("g", "In progress.", registry=registry)

        async def work() -> None:
            pass

        tracked = theirs.aio.track_inprogress(gauge, work())
        at_call = registry.get_sample_value("g")
        await tracked

        assert (1, 0) == (at_call, registry.get_sample_value("g"))

    async def test_now_when_running(self, registry):
        """prom_async: it counts up when the coroutine first runs."""
        gauge = Gauge("g", "In progress.", registry=registry)
        running = []

        async def work() -> None:
            running.append(registry.get_sample_value("g"))

        tracked = track_inprogress(gauge, work())
        at_call = registry.get_sample_value("g")
        await tracked

        assert (0, [1], 0) == (
            at_call,
            running,
            registry.get_sample_value("g"),
        )


class TestMistakes:
    def test_before_accepted(self, theirs):
        """prometheus-async decorates with a metric that cannot observe."""
        theirs.aio.time(object())(fails_with_cancellation)

    def test_now_refused(self):
        """prom_async refuses it when decorating."""
        with pytest.raises(TypeError, match="observe"):
            time(object())  # type: ignore[arg-type]
