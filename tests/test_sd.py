"""
Unit tests for prom_async.aio.sd against a small, scriptable Consul agent.

The agent here answers only what ConsulAgent uses (register, deregister and
the service list) and can be told to refuse, forget or vanish; the full
Consul double and real scrapers are in test_consul_end_to_end.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aiohttp import web
from prometheus_client import CollectorRegistry

from fixtures_consul import Bound, StubServer, sd_log_records
from fixtures_servers import Serve, eventually
from prom_async.aio._consul_client import AgentClient
from prom_async.aio.sd import (
    ConsulAgent,
    ConsulRegistration,
    ConsulRegistrationError,
)


pytestmark = pytest.mark.usefixtures("consul_env_cleared")

FAST = {
    "request_timeout": 2.0,
    "retry_initial_delay": 0.01,
    "retry_max_delay": 0.05,
    "resync_interval": 0.02,
}


@dataclass
class FakeConsulAgent:
    """
    A Consul agent's register, deregister and service list, on loopback.
    """

    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(
        default_factory=list
    )
    acl_token: str | None = None
    refusal: tuple[int, str] | None = None
    hang: bool = False
    ssl_ctx: ssl.SSLContext | None = None
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def address(self) -> str:
        scheme = "https" if self.ssl_ctx else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def count(self, method: str, path_start: str) -> int:
        return sum(
            1
            for m, path, _ in self.requests
            if m == method and path.startswith(path_start)
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_put("/v1/agent/service/register", self._register)
        app.router.add_put(
            "/v1/agent/service/deregister/{service_id}", self._deregister
        )
        app.router.add_get("/v1/agent/services", self._services)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, "127.0.0.1", self.port, ssl_context=self.ssl_ctx
        )
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _gate(self, request: web.Request) -> web.Response | None:
        self.requests.append(
            (request.method, request.path, dict(request.headers))
        )
        if self.hang:
            await asyncio.Event().wait()
        token = request.headers.get("X-Consul-Token")
        if self.acl_token is not None and token != self.acl_token:
            return web.Response(status=403, text="ACL not found")
        if self.refusal is not None:
            return web.Response(status=self.refusal[0], text=self.refusal[1])
        return None

    async def _register(self, request: web.Request) -> web.Response:
        refused = await self._gate(request)
        if refused is not None:
            return refused
        body = {
            key.lower(): value
            for key, value in json.loads(await request.text()).items()
        }
        self.services[body.get("id") or body["name"]] = body
        return web.Response()

    async def _deregister(self, request: web.Request) -> web.Response:
        refused = await self._gate(request)
        if refused is not None:
            return refused
        if self.services.pop(request.match_info["service_id"], None) is None:
            return web.Response(status=404, text="Unknown service ID")
        return web.Response()

    async def _services(self, request: web.Request) -> web.Response:
        refused = await self._gate(request)
        if refused is not None:
            return refused
        return web.json_response(
            {
                service_id: {"ID": service_id, "Service": body["name"]}
                for service_id, body in self.services.items()
            }
        )


@pytest.fixture
async def agent() -> AsyncIterator[FakeConsulAgent]:
    """
    A running fake Consul agent.
    """
    fake = FakeConsulAgent()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def down_agent() -> AsyncIterator[FakeConsulAgent]:
    """
    A fake Consul agent that is not running yet, on a port it will use.
    """
    fake = FakeConsulAgent()
    await fake.start()
    await fake.stop()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """
    Where CONSUL_HTTP_TOKEN_FILE points, for this test; not created.
    """
    path = tmp_path / "token"
    monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(path))
    return path


def svc_agent(agent: FakeConsulAgent, **options: Any) -> ConsulAgent:
    """
    A ConsulAgent named ``svc`` for *agent*, with FAST timings unless
    *options* say otherwise.
    """
    return ConsulAgent(
        "svc", **{"agent_address": agent.address, **FAST, **options}
    )


class TestConsulAgent:
    def test_positional_arguments_of_prometheus_async(self) -> None:
        """name, service_id, tags, token, deregister keep their order."""
        consul_agent = ConsulAgent("svc", "svc-1", ["a"], "tok", False)

        assert ("svc", "svc-1", ("a",), False) == (
            consul_agent.name,
            consul_agent.service_id,
            consul_agent.tags,
            consul_agent.deregister,
        )

    def test_defaults(self) -> None:
        """Without arguments or environment, the agent is 127.0.0.1:8500."""
        consul_agent = ConsulAgent()

        assert ("app-metrics", "http://127.0.0.1:8500") == (
            consul_agent.name,
            consul_agent.agent.url,
        )

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("10.0.0.1:8501", "http://10.0.0.1:8501"),
            ("https://consul.example:8501", "https://consul.example:8501"),
            ("http://[::1]:8500", "http://[::1]:8500"),
            ("consul.example", "http://consul.example:8500"),
        ],
    )
    def test_address_from_environment(
        self, monkeypatch: pytest.MonkeyPatch, value: str, expected: str
    ) -> None:
        """CONSUL_HTTP_ADDR takes host:port or scheme://host:port."""
        monkeypatch.setenv("CONSUL_HTTP_ADDR", value)

        assert expected == ConsulAgent().agent.url

    def test_ssl_environment_sets_scheme(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """CONSUL_HTTP_SSL=true makes a scheme-less CONSUL_HTTP_ADDR https."""
        monkeypatch.setenv("CONSUL_HTTP_ADDR", "10.0.0.1:8501")
        monkeypatch.setenv("CONSUL_HTTP_SSL", "true")

        assert "https://10.0.0.1:8501" == ConsulAgent().agent.url

    def test_argument_wins_over_environment(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An explicit agent_address beats CONSUL_HTTP_ADDR."""
        monkeypatch.setenv("CONSUL_HTTP_ADDR", "10.0.0.1:8501")

        consul_agent = ConsulAgent(agent_address="127.0.0.1:18500")

        assert "http://127.0.0.1:18500" == consul_agent.agent.url

    def test_malformed_environment_address(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A malformed CONSUL_HTTP_ADDR is a ValueError naming it."""
        monkeypatch.setenv("CONSUL_HTTP_ADDR", "ftp://x:1")

        with pytest.raises(ValueError, match="CONSUL_HTTP_ADDR"):
            ConsulAgent()

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"name": ""}, ValueError),
            ({"name": 3}, TypeError),
            ({"service_id": ""}, ValueError),
            ({"tags": "metrics"}, TypeError),
            ({"tags": [1]}, TypeError),
            ({"token": 42}, TypeError),
            ({"deregister": "yes"}, TypeError),
            ({"agent_address": "unix:///tmp/consul.sock"}, ValueError),
            ({"agent_address": "127.0.0.1:notaport"}, ValueError),
            ({"agent_address": "127.0.0.1:99999"}, ValueError),
            ({"agent_address": " "}, ValueError),
            ({"agent_tls": "yes"}, TypeError),
            ({"address": "0.0.0.0"}, ValueError),
            ({"address": "::"}, ValueError),
            ({"meta": {"bad key": "v"}}, ValueError),
            ({"meta": {"consul-x": "v"}}, ValueError),
            ({"meta": {"k": 1}}, TypeError),
            ({"meta": ["k"]}, TypeError),
            ({"meta": {"k": "v" * 513}}, ValueError),
            ({"check_interval": 0}, ValueError),
            ({"check_timeout": "5s"}, TypeError),
            ({"deregister_critical_after": 30}, ValueError),
            ({"check_url": "/metrics"}, ValueError),
            ({"check_headers": {"X": [1]}}, TypeError),
            ({"check_headers": ["Authorization: Bearer t"]}, TypeError),
            ({"retry_initial_delay": 2, "retry_max_delay": 1}, ValueError),
            ({"resync_interval": -1}, ValueError),
        ],
    )
    def test_bad_arguments(
        self, kwargs: dict[str, Any], error: type[Exception]
    ) -> None:
        """Bad arguments fail when the ConsulAgent is created."""
        with pytest.raises(error):
            ConsulAgent(**kwargs)

    def test_too_much_meta(self) -> None:
        """Meta that exceeds Consul's 64 pairs with ours fails at creation."""
        meta = {f"key{number}": "v" for number in range(63)}

        with pytest.raises(ValueError, match="64"):
            ConsulAgent(meta=meta)

    def test_token_not_in_repr(self) -> None:
        """The token does not show in the repr."""
        assert "s3cr3t" not in repr(ConsulAgent(token="s3cr3t"))

    def test_service_definition(self) -> None:
        """The service, its check and meta come from the server."""
        consul_agent = ConsulAgent(
            "svc", tags=["metrics"], meta={"team": "obs"}
        )

        definition = consul_agent.service_definition(StubServer())

        assert {
            "name": "svc",
            "service_id": f"svc-{socket.gethostname()}-9100",
            "address": "127.0.0.1",
            "port": 9100,
            "tags": ["metrics"],
            "meta": {
                "metrics_path": "/metrics",
                "scheme": "http",
                "team": "obs",
            },
            "check": {
                "http": "http://127.0.0.1:9100/metrics",
                "interval": "10s",
                "timeout": "5s",
                "DeregisterCriticalServiceAfter": "600s",
            },
        } == definition

    @pytest.mark.parametrize("wildcard", ["0.0.0.0", "", "::"])
    def test_wildcard_bound_server(self, wildcard: str) -> None:
        """A wildcard is never registered; the check goes over loopback."""
        definition = ConsulAgent().service_definition(
            StubServer(socket=Bound(wildcard, 9100))
        )

        assert (None, "http://127.0.0.1:9100/metrics") == (
            definition["address"],
            definition["check"]["http"],
        ) or (None, "http://[::1]:9100/metrics") == (
            definition["address"],
            definition["check"]["http"],
        )

    def test_explicit_address(self) -> None:
        """address= is registered and checked instead of the bound one."""
        definition = ConsulAgent(address="10.1.2.3").service_definition(
            StubServer(socket=Bound("0.0.0.0", 9100))
        )

        assert ("10.1.2.3", "http://10.1.2.3:9100/metrics") == (
            definition["address"],
            definition["check"]["http"],
        )

    def test_host_name_address(self) -> None:
        """A host name is an address: registered and checked as given."""
        definition = ConsulAgent(address="metrics.example").service_definition(
            StubServer(socket=Bound("0.0.0.0", 9100))
        )

        assert ("metrics.example", "http://metrics.example:9100/metrics") == (
            definition["address"],
            definition["check"]["http"],
        )

    def test_authenticated_server_checks_landing_page(self) -> None:
        """Without check_headers, a server with auth is checked at /."""
        definition = ConsulAgent().service_definition(
            StubServer(requires_auth=True)
        )

        assert "http://127.0.0.1:9100/" == definition["check"]["http"]

    def test_check_headers_opt_in(self) -> None:
        """With check_headers, the agent checks the metrics with them."""
        definition = ConsulAgent(
            check_headers={"Authorization": "Bearer t"}
        ).service_definition(StubServer(requires_auth=True))

        assert (
            "http://127.0.0.1:9100/metrics",
            {"Authorization": ["Bearer t"]},
        ) == (definition["check"]["http"], definition["check"]["header"])

    def test_https_check_options(self) -> None:
        """An HTTPS server gets an https check, meta and TLS options."""
        definition = ConsulAgent(
            check_tls_skip_verify=True,
            check_tls_server_name="metrics.example",
            check_interval=2.5,
            deregister_critical_after=None,
        ).service_definition(StubServer(https=True))

        assert {
            "http": "https://127.0.0.1:9100/metrics",
            "interval": "2500ms",
            "timeout": "5s",
            "TLSSkipVerify": True,
            "TLSServerName": "metrics.example",
        } == definition["check"]
        assert "https" == definition["meta"]["scheme"]

    async def test_registers_with_agent(
        self, agent: FakeConsulAgent, serve: Serve
    ) -> None:
        """A started server is registered and deregistered on close."""
        consul_agent = svc_agent(agent, tags=["metrics"])

        server = await serve(service_discovery=consul_agent)
        service_id = f"svc-{socket.gethostname()}-{server.port}"

        assert server.is_registered
        assert ["metrics"] == agent.services[service_id]["tags"]
        assert "127.0.0.1" == agent.services[service_id]["address"]

        await server.close()

        assert {} == agent.services
        assert not server.is_registered

    async def test_keeps_registration_without_deregister(
        self, agent: FakeConsulAgent, serve: Serve
    ) -> None:
        """deregister=False leaves the service registered on close."""
        consul_agent = svc_agent(agent, deregister=False)

        server = await serve(service_discovery=consul_agent)
        await server.close()

        assert 1 == len(agent.services)
        assert 0 == agent.count("PUT", "/v1/agent/service/deregister")

    async def test_agent_down_at_start(
        self,
        down_agent: FakeConsulAgent,
        serve: Serve,
        registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """The server serves while the agent is down; registered once up."""
        caplog.set_level(logging.DEBUG, logger="prom_async.aio.sd")
        consul_agent = svc_agent(down_agent)

        server = await serve(service_discovery=consul_agent, registry=registry)
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.metrics_url) as response,
        ):
            status = response.status

        assert 200 == status
        assert not server.is_registered
        await eventually(
            lambda: len(sd_log_records(caplog, logging.DEBUG)) >= 3,
            what="several failed attempts",
        )

        await down_agent.start()
        await eventually(lambda: server.is_registered, what="registration")

        assert 1 == len(down_agent.services)
        assert 1 == len(sd_log_records(caplog, logging.WARNING))

    async def test_agent_forgets_service(
        self,
        agent: FakeConsulAgent,
        serve: Serve,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A service the agent lost is registered again."""
        consul_agent = svc_agent(agent)
        server = await serve(service_discovery=consul_agent)
        registered = dict(agent.services)

        agent.services.clear()
        await eventually(
            lambda: agent.services and server.is_registered,
            what="registration after forgetting",
        )

        assert registered.keys() == agent.services.keys()
        assert 2 == agent.count("PUT", "/v1/agent/service/register")
        assert server.is_registered
        assert 1 == len(sd_log_records(caplog, logging.WARNING))

    async def test_agent_restarts(
        self, agent: FakeConsulAgent, serve: Serve
    ) -> None:
        """An agent that restarts without its state gets the service back."""
        consul_agent = svc_agent(agent)
        server = await serve(service_discovery=consul_agent)

        await agent.stop()
        agent.services.clear()
        await eventually(
            lambda: not server.is_registered, what="the outage to be seen"
        )
        await agent.start()

        await eventually(lambda: server.is_registered, what="re-registration")
        assert 1 == len(agent.services)

    async def test_wrong_token(
        self,
        agent: FakeConsulAgent,
        serve: Serve,
        registry: CollectorRegistry,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A 403 is a typed error, logged once; the server still serves."""
        agent.acl_token = "right-token"
        consul_agent = svc_agent(agent, token="wrong-token")

        server = await serve(service_discovery=consul_agent, registry=registry)
        await eventually(
            lambda: agent.count("PUT", "/v1/agent/service/register") >= 3,
            what="retries",
        )
        registration = consul_agent.registration
        async with (
            aiohttp.ClientSession() as http,
            http.get(server.metrics_url) as response,
        ):
            status = response.status

        assert registration is not None
        assert isinstance(registration.error, ConsulRegistrationError)
        assert (403, "ACL not found") == (
            registration.error.status,
            registration.error.message,
        )
        assert not server.is_registered
        assert 200 == status
        errors = sd_log_records(caplog, logging.ERROR)
        assert 1 == len(errors)
        assert "ACL not found" in errors[0].getMessage()
        assert "wrong-token" not in caplog.text

    async def test_bad_request(
        self,
        agent: FakeConsulAgent,
        serve: Serve,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A 400 carries Consul's reason and is logged once."""
        agent.refusal = (400, "Invalid check: Interval must be > 0")
        consul_agent = svc_agent(agent)

        server = await serve(service_discovery=consul_agent)
        await eventually(
            lambda: agent.count("PUT", "/v1/agent/service/register") >= 3,
            what="retries",
        )
        registration = consul_agent.registration

        assert registration is not None
        assert registration.error is not None
        assert (400, "Invalid check: Interval must be > 0") == (
            registration.error.status,
            registration.error.message,
        )
        assert not server.is_registered
        assert 1 == len(sd_log_records(caplog, logging.ERROR))

    async def test_not_found_is_a_refusal(
        self,
        agent: FakeConsulAgent,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A 404 (an address that is not a Consul agent) is refused, not
        taken for a registration."""
        agent.refusal = (404, "404 page not found")
        consul_agent = svc_agent(agent)

        registration = await consul_agent.register(StubServer())
        try:
            await eventually(
                lambda: agent.count("PUT", "/v1/agent/service/register") >= 3,
                what="retries",
            )

            assert not registration.is_registered
            assert registration.error is not None
            assert (404, "404 page not found") == (
                registration.error.status,
                registration.error.message,
            )
            assert 1 == len(sd_log_records(caplog, logging.ERROR))
            assert [] == sd_log_records(caplog, logging.INFO)
        finally:
            await registration()

    async def test_unexpected_error(
        self,
        agent: FakeConsulAgent,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """An error nobody expected (a bug) is logged with its traceback,
        and the work goes on: the service is registered again."""
        looks = []
        service_ids = AgentClient.service_ids

        async def fails_once(self: AgentClient) -> frozenset[str]:
            looks.append(self)
            if len(looks) == 1:
                raise RuntimeError("a bug")
            return await service_ids(self)

        monkeypatch.setattr(AgentClient, "service_ids", fails_once)
        registration = await svc_agent(agent).register(StubServer())
        try:
            await eventually(
                lambda: len(looks) >= 2, what="a look after the error"
            )

            (error,) = sd_log_records(caplog, logging.ERROR)
            assert (
                f"Unexpected error registering {registration.service_id!r} "
                f"with Consul agent at {agent.address}; retrying in 0.05 s."
            ) == error.getMessage()
            assert error.exc_info is not None
            assert "a bug" == str(error.exc_info[1])
            assert 2 == agent.count("PUT", "/v1/agent/service/register")
            assert registration.is_registered
            assert registration.error is None
        finally:
            await registration()

    async def test_refusal_lifted(
        self, agent: FakeConsulAgent, serve: Serve
    ) -> None:
        """Once the agent accepts (e.g. a fixed policy), it registers."""
        agent.refusal = (403, "Permission denied")
        consul_agent = svc_agent(agent)
        server = await serve(service_discovery=consul_agent)

        agent.refusal = None
        await eventually(lambda: server.is_registered, what="registration")

        assert consul_agent.registration is not None
        assert consul_agent.registration.error is None

    async def test_close_with_agent_gone(
        self, agent: FakeConsulAgent, serve: Serve
    ) -> None:
        """Closing works when the agent has vanished."""
        consul_agent = svc_agent(agent)
        server = await serve(service_discovery=consul_agent)
        registration = consul_agent.registration
        await agent.stop()

        await server.close()

        assert registration is not None
        assert not registration.is_registered
        assert registration._task is not None
        assert registration._task.done()
        assert registration._client.http._session.closed

    async def test_close_with_agent_hanging(
        self, agent: FakeConsulAgent, serve: Serve
    ) -> None:
        """Closing gives up on an agent that never answers."""
        consul_agent = svc_agent(agent, request_timeout=0.2)
        server = await serve(service_discovery=consul_agent)
        agent.hang = True

        await server.close()

        assert 1 == agent.count("PUT", "/v1/agent/service/deregister")
        assert not server.is_registered

    async def test_two_instances_same_name(
        self, agent: FakeConsulAgent, serve: Serve
    ) -> None:
        """Two servers with one name get two entries."""
        first = await serve(service_discovery=svc_agent(agent))
        second = await serve(service_discovery=svc_agent(agent))

        assert first.is_registered
        assert second.is_registered
        assert {
            f"svc-{socket.gethostname()}-{first.port}",
            f"svc-{socket.gethostname()}-{second.port}",
        } == set(agent.services)

    async def test_wildcard_server(
        self, agent: FakeConsulAgent, serve: Serve
    ) -> None:
        """A server on 0.0.0.0 registers no address."""
        server = await serve(
            addr="0.0.0.0", service_discovery=svc_agent(agent)
        )

        (registered,) = agent.services.values()
        assert "address" not in registered
        assert (
            f"http://127.0.0.1:{server.port}/metrics"
            == registered["checks"][0]["http"]
        )

    async def test_explicit_token_wins(
        self,
        agent: FakeConsulAgent,
        serve: Serve,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """token= is sent even when CONSUL_HTTP_TOKEN is set."""
        monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")
        agent.acl_token = "from-argument"

        server = await serve(
            service_discovery=svc_agent(agent, token="from-argument")
        )

        assert server.is_registered

    async def test_token_from_environment(
        self,
        agent: FakeConsulAgent,
        serve: Serve,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Without token=, CONSUL_HTTP_TOKEN is sent."""
        monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")
        agent.acl_token = "from-env"

        server = await serve(service_discovery=svc_agent(agent))

        assert server.is_registered

    async def test_token_from_file(
        self,
        agent: FakeConsulAgent,
        serve: Serve,
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Any,
    ) -> None:
        """Without a token, CONSUL_HTTP_TOKEN_FILE is read off the loop."""
        token_file = tmp_path / "token"
        token_file.write_text("from-file\n")
        monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(token_file))
        agent.acl_token = "from-file"

        server = await serve(service_discovery=svc_agent(agent))

        assert server.is_registered

    async def test_agent_over_tls(self, serve: Serve, tls: Any) -> None:
        """An https agent is reached with the given SSL context."""
        fake = FakeConsulAgent(ssl_ctx=tls.server)
        await fake.start()
        try:
            server = await serve(
                service_discovery=svc_agent(fake, agent_tls=tls.client)
            )

            assert server.is_registered
            await server.close()
        finally:
            await fake.stop()

    async def test_authenticated_exporter(
        self, agent: FakeConsulAgent, serve: Serve
    ) -> None:
        """A server with a bearer token is checked at its landing page."""
        server = await serve(
            bearer_token="t0ken", service_discovery=svc_agent(agent)
        )

        (registered,) = agent.services.values()
        assert (
            f"http://127.0.0.1:{server.port}/"
            == registered["checks"][0]["http"]
        )


class TestConsulRegistration:
    async def test_service(self, agent: FakeConsulAgent) -> None:
        """service is the definition sent to the agent."""
        consul_agent = svc_agent(agent, tags=["metrics"])

        registration = await consul_agent.register(StubServer())
        try:
            assert (
                consul_agent.service_definition(StubServer())
                == registration.service
            )
            assert ["metrics"] == agent.services[registration.service_id][
                "tags"
            ]
        finally:
            await registration()

    async def test_deregistration_refused(
        self, agent: FakeConsulAgent, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A refused deregistration is logged; closing still finishes."""
        registration = await svc_agent(agent).register(StubServer())
        agent.refusal = (403, "Permission denied")

        await registration()

        (warning,) = sd_log_records(caplog, logging.WARNING)
        assert (
            f"Consul agent at {agent.address} refused to deregister "
            f"{registration.service_id!r}: Consul answered 403: Permission "
            "denied"
        ) == warning.getMessage()
        assert not registration.is_registered
        assert registration._client.http._session.closed

    @pytest.mark.parametrize(
        "unreadable",
        [
            (None, "No such file or directory"),
            (b"\xfftoken", "it is not UTF-8"),
        ],
        ids=["missing", "not-utf-8"],
    )
    async def test_unreadable_token_file(
        self,
        agent: FakeConsulAgent,
        token_file: Path,
        caplog: pytest.LogCaptureFixture,
        unreadable: tuple[bytes | None, str],
    ) -> None:
        """A CONSUL_HTTP_TOKEN_FILE that is missing or not UTF-8 is logged;
        the service is registered without a token."""
        content, reason = unreadable
        if content is not None:
            token_file.write_bytes(content)

        registration = await svc_agent(agent).register(StubServer())
        try:
            assert registration.is_registered
            assert [None] == [
                headers.get("X-Consul-Token")
                for _, _, headers in agent.requests
            ]
            expected = (
                "Cannot read the Consul token from CONSUL_HTTP_TOKEN_FILE "
                f"{str(token_file)!r} ({reason}); registering without a "
                "token."
            )
            assert [expected] == [
                record.getMessage()
                for record in sd_log_records(caplog, logging.ERROR)
            ]
        finally:
            await registration()

    async def test_cancelled_close_closes_the_session(
        self, agent: FakeConsulAgent
    ) -> None:
        """A close cancelled while the background work stops still closes
        the HTTP session (a second close cannot: it does nothing)."""
        registration = await svc_agent(agent).register(StubServer())
        registration._task.cancel()
        await asyncio.wait({registration._task})
        started = asyncio.Event()
        stopping = asyncio.Event()
        release = asyncio.Event()

        async def slow_to_stop() -> None:
            try:
                started.set()
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                stopping.set()
                await release.wait()
                raise

        registration._task = asyncio.ensure_future(slow_to_stop())
        await eventually(started.is_set, what="the stand-in task to start")
        closing = asyncio.ensure_future(registration())
        await eventually(stopping.is_set, what="the close to begin")
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        release.set()
        await asyncio.wait({registration._task})

        assert registration._client.http._session.closed
        assert not registration.is_registered

    async def test_is_a_deregisterer(self, agent: FakeConsulAgent) -> None:
        """register() returns an awaitable callable that can run twice."""
        consul_agent = svc_agent(agent)

        registration = await consul_agent.register(StubServer())

        assert isinstance(registration, ConsulRegistration)
        assert registration is consul_agent.registration
        assert registration.is_registered
        assert registration.service_id in agent.services

        await registration()
        await registration()

        assert 1 == agent.count("PUT", "/v1/agent/service/deregister")

    async def test_register_returns_while_agent_hangs(
        self, agent: FakeConsulAgent
    ) -> None:
        """register() returns if the agent hangs; close deregisters."""
        agent.hang = True
        consul_agent = svc_agent(agent, request_timeout=0.1)

        registration = await consul_agent.register(StubServer())

        assert not registration.is_registered
        await registration()

        assert 1 == agent.count("PUT", "/v1/agent/service/deregister")

    async def test_no_deregistration_when_never_registered(
        self, down_agent: FakeConsulAgent
    ) -> None:
        """Closing sends nothing for an agent that was never reached."""
        consul_agent = ConsulAgent(
            "svc",
            agent_address=down_agent.address,
            retry_initial_delay=60,
            retry_max_delay=60,
        )
        registration = await consul_agent.register(StubServer())
        await down_agent.start()
        await registration()

        assert [] == down_agent.requests

    async def test_cancelled_register_leaves_no_work_behind(
        self, agent: FakeConsulAgent
    ) -> None:
        """A register() cancelled while waiting stops and deregisters."""
        agent.hang = True
        consul_agent = ConsulAgent("svc", agent_address=agent.address, **FAST)
        registering = asyncio.ensure_future(
            consul_agent.register(StubServer())
        )
        await eventually(lambda: agent.requests, what="the first try")
        agent.hang = False
        registering.cancel()
        with pytest.raises(asyncio.CancelledError):
            await registering

        assert [] == [
            task.get_name()
            for task in asyncio.all_tasks()
            if task.get_name().startswith("consul-registration-")
        ]
        assert 1 == agent.count("PUT", "/v1/agent/service/deregister")


class TestConsulRegistrationError:
    def test_attributes(self) -> None:
        """The status and Consul's message are kept and shown."""
        error = ConsulRegistrationError(403, "ACL not found")

        assert (
            403,
            "ACL not found",
            "Consul answered 403: ACL not found",
        ) == (
            error.status,
            error.message,
            str(error),
        )


class TestServiceDiscoveryProtocol:
    async def test_own_object(
        self, serve: Serve, registry: CollectorRegistry
    ) -> None:
        """Any object with register() works as service discovery."""
        calls: list[str] = []

        class Announcer:
            async def register(self, server: Any) -> Any:
                calls.append("register")

                async def deregister() -> None:
                    calls.append("deregister")

                return deregister

        server = await serve(service_discovery=Announcer(), registry=registry)
        assert server.is_registered

        await server.close()

        assert ["register", "deregister"] == calls
