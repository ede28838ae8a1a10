"""
The Consul agent double speaks Consul's HTTP API faithfully enough that an
unmodified client (py-consul's asyncio client) works against it.
"""

from __future__ import annotations

import asyncio
import json
import ssl

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import consul
import pytest
import trustme

from aiohttp import web

from consul_double import (
    ANONYMOUS_ACCESSOR_ID,
    ConsulDouble,
    format_go_duration,
    parse_go_duration,
)
from fixtures_consul import ConsulDoubleFactory, PyConsulFactory


TOKEN = "s3cr3t-token"


@dataclass
class HealthTarget:
    """
    A tiny HTTP app that HTTP checks probe; tests set its answer.
    """

    url: str = ""
    status: int = 200
    body: str = "ok"
    hang: bool = False
    seen: list[web.Request] = field(default_factory=list)


async def _serve(app: web.Application, **site: Any) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, **site).start()
    return runner


def _target_app(target: HealthTarget) -> web.Application:
    release = asyncio.Event()

    async def health(request: web.Request) -> web.Response:
        target.seen.append(request)
        if target.hang:
            await release.wait()
        return web.Response(status=target.status, text=target.body)

    app = web.Application()
    app.router.add_route("*", "/health", health)
    return app


@pytest.fixture
async def health_target() -> AsyncIterator[HealthTarget]:
    """
    A plain-HTTP health endpoint on loopback.
    """
    target = HealthTarget()
    runner = await _serve(_target_app(target))
    target.url = f"http://127.0.0.1:{runner.addresses[0][1]}/health"
    yield target
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """
    A raw HTTP client for requests py-consul cannot make.
    """
    async with aiohttp.ClientSession() as session:
        yield session


Request = Callable[..., Awaitable[tuple[int, str, "dict[str, str]"]]]


@pytest.fixture
def request_to(
    http: aiohttp.ClientSession,
) -> Callable[[ConsulDouble], Request]:
    """
    ``await request_to(double)(method, path, json=..., headers=...)`` gives
    ``(status, body text, headers)``.
    """

    def bind(double: ConsulDouble) -> Request:
        async def send(
            method: str, path: str, **kwargs: Any
        ) -> tuple[int, str, dict[str, str]]:
            async with http.request(
                method, f"{double.url}{path}", **kwargs
            ) as response:
                return (
                    response.status,
                    await response.text(),
                    dict(response.headers),
                )

        return send

    return bind


def _web_service(**extra: Any) -> dict[str, Any]:
    return {
        "Name": "web",
        "ID": "web-1",
        "Address": "127.0.0.1",
        "Port": 8080,
        **extra,
    }


class TestGoDurations:
    @pytest.mark.parametrize(
        ("text", "nanoseconds"),
        [
            ("10s", 10_000_000_000),
            ("1m30s", 90_000_000_000),
            ("500ms", 500_000_000),
            ("0.3s", 300_000_000),
            ("1h", 3_600_000_000_000),
            ("1.5us", 1_500),
            ("0", 0),
            ("-2s", -2_000_000_000),
        ],
    )
    def test_parse(self, text: str, nanoseconds: int) -> None:
        """Go duration strings parse to nanoseconds."""
        assert nanoseconds == parse_go_duration(text)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("", 'time: invalid duration ""'),
            ("ten", 'time: invalid duration "ten"'),
            ("10", 'time: missing unit in duration "10"'),
            ("10x", 'time: unknown unit "x" in duration "10x"'),
        ],
    )
    def test_parse_rejects(self, text: str, message: str) -> None:
        """Bad duration strings fail with Go's message."""
        with pytest.raises(ValueError, match="^" + message + "$"):
            parse_go_duration(text)

    @pytest.mark.parametrize(
        ("nanoseconds", "text"),
        [
            (0, "0s"),
            (10_000_000_000, "10s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (60_000_000_000, "1m0s"),
            (1_500_000_000, "1.5s"),
            (500_000_000, "500ms"),
            (1_500, "1.5\u00b5s"),
        ],
    )
    def test_format(self, nanoseconds: int, text: str) -> None:
        """Durations format like Go's Duration.String."""
        assert text == format_go_duration(nanoseconds)


class TestConsulDoubleLifecycle:
    async def test_address_and_url(self, consul_double: ConsulDouble) -> None:
        """A started double listens on loopback and names its address."""
        assert consul_double.port > 0
        assert f"127.0.0.1:{consul_double.port}" == consul_double.address
        assert f"http://{consul_double.address}" == consul_double.url
        assert consul_double.is_up

    async def test_fixed_port(
        self, consul_double_factory: ConsulDoubleFactory
    ) -> None:
        """A double can re-bind a port another double released."""
        first = await consul_double_factory()
        port = first.port
        await first.stop()
        second = await consul_double_factory(port=port)
        assert port == second.port

    async def test_stop_twice(self) -> None:
        """Stopping twice is harmless and refuses connections."""
        double = ConsulDouble()
        await double.start()
        await double.stop()
        await double.stop()
        assert not double.is_up

    async def test_start_twice(self, consul_double: ConsulDouble) -> None:
        """Starting a started double is an error."""
        with pytest.raises(RuntimeError, match="already started"):
            await consul_double.start()

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"port": 70000}, "port must be"),
            ({"acl_token": ""}, "acl_token must be"),
            ({"datacenter": ""}, "must not be empty"),
            ({"check_time_scale": 0}, "check_time_scale must be > 0"),
            ({"reap_interval": -1.0}, "reap_interval must be > 0"),
            ({"deregister_minimum": -1.0}, "deregister_minimum must be"),
        ],
    )
    def test_bad_options(self, options: dict[str, Any], message: str) -> None:
        """Bad constructor options fail with ValueError at once."""
        with pytest.raises(ValueError, match=message):
            ConsulDouble(**options)


class TestPyConsulAgainstDouble:
    async def test_register_list_deregister(
        self,
        consul_double: ConsulDouble,
        py_consul_factory: PyConsulFactory,
        health_target: HealthTarget,
    ) -> None:
        """py-consul registers, lists and deregisters a service."""
        client = py_consul_factory(consul_double)

        registered = await client.agent.service.register(
            "web",
            service_id="web-1",
            address="127.0.0.1",
            port=8080,
            tags=["prom", "v1"],
            meta={"version": "1.2.3"},
            check=consul.Check.http(
                health_target.url, "10s", timeout="2s", deregister="1m"
            ),
        )
        services = await client.agent.services()
        checks = await client.agent.checks()
        deregistered = await client.agent.service.deregister("web-1")

        assert registered is True
        assert {
            "ID": "web-1",
            "Service": "web",
            "Tags": ["prom", "v1"],
            "Meta": {"version": "1.2.3"},
            "Port": 8080,
            "Address": "127.0.0.1",
            "TaggedAddresses": {
                "lan_ipv4": {"Address": "127.0.0.1", "Port": 8080},
                "wan_ipv4": {"Address": "127.0.0.1", "Port": 8080},
            },
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": False,
            "Datacenter": "dc1",
        } == services["web-1"]
        assert ["service:web-1"] == list(checks)
        check = checks["service:web-1"]
        assert ("critical", "http", "10s", "2s") == (
            check["Status"],
            check["Type"],
            check["Interval"],
            check["Timeout"],
        )
        assert "1m0s" == check["Definition"]["DeregisterCriticalServiceAfter"]
        assert deregistered is True
        assert {} == consul_double.services
        assert {} == consul_double.checks

    async def test_deregister_unknown(
        self, consul_double: ConsulDouble, py_consul_factory: PyConsulFactory
    ) -> None:
        """Deregistering an unknown ID is a 404: py-consul returns False."""
        client = py_consul_factory(consul_double)

        assert await client.agent.service.deregister("nope") is False

    async def test_blocking_health_query_woken_by_registration(
        self, consul_double: ConsulDouble, py_consul_factory: PyConsulFactory
    ) -> None:
        """A blocking health query returns when the service is registered."""
        client = py_consul_factory(consul_double)
        index, before = await client.health.service("web")
        waiting = asyncio.create_task(
            client.health.service("web", index=index, wait="60s")
        )
        await consul_double.wait_for(
            lambda d: any(
                r.param("index") == index
                for r in d.requests_to("/v1/health/service/web")
            )
        )
        assert not waiting.done()

        await client.agent.service.register(
            "web", service_id="web-1", port=8080
        )
        new_index, after = await waiting

        assert [] == before
        assert int(new_index) > int(index)
        assert ["web-1"] == [entry["Service"]["ID"] for entry in after]

    async def test_blocking_catalog_query_times_out_unchanged(
        self, consul_double: ConsulDouble, py_consul_factory: PyConsulFactory
    ) -> None:
        """A blocking catalog query with no change returns the same index."""
        client = py_consul_factory(consul_double)
        index, _ = await client.catalog.services()

        again, services = await client.catalog.services(
            index=index, wait="100ms"
        )

        assert index == again
        assert {"consul": []} == services

    async def test_wrong_token(
        self,
        consul_double_factory: ConsulDoubleFactory,
        py_consul_factory: PyConsulFactory,
    ) -> None:
        """An unknown token makes py-consul raise ACLPermissionDenied."""
        double = await consul_double_factory(acl_token=TOKEN)
        client = py_consul_factory(double, token="wrong")

        with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
            await client.agent.services()

    async def test_no_token_write(
        self,
        consul_double_factory: ConsulDoubleFactory,
        py_consul_factory: PyConsulFactory,
    ) -> None:
        """An anonymous register is refused with Permission denied."""
        double = await consul_double_factory(acl_token=TOKEN)
        client = py_consul_factory(double)

        with pytest.raises(
            consul.ACLPermissionDenied, match=r"^Permission denied"
        ):
            await client.agent.service.register("web", port=8080)

    async def test_right_token(
        self,
        consul_double_factory: ConsulDoubleFactory,
        py_consul_factory: PyConsulFactory,
    ) -> None:
        """The configured token may register and read."""
        double = await consul_double_factory(acl_token=TOKEN)
        client = py_consul_factory(double, token=TOKEN)

        await client.agent.service.register("web", port=8080)

        assert ["web"] == list(await client.agent.services())
        assert TOKEN == double.requests[0].headers["X-Consul-Token"]

    async def test_bad_body(
        self, consul_double: ConsulDouble, py_consul_factory: PyConsulFactory
    ) -> None:
        """A port sent as a string makes py-consul raise BadRequest."""
        client = py_consul_factory(consul_double)

        with pytest.raises(consul.ConsulException, match="decode failed"):
            await client.agent.service.register("web", port="8080")

    async def test_environment_is_ignored(
        self,
        consul_double: ConsulDouble,
        py_consul_factory: PyConsulFactory,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The fixture's clients reach the double whatever the environment."""
        client = py_consul_factory(consul_double)
        monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:1")

        assert {} == await client.agent.services()

    async def test_ttl_check(
        self, consul_double: ConsulDouble, py_consul_factory: PyConsulFactory
    ) -> None:
        """A TTL check starts critical and passes on update."""
        client = py_consul_factory(consul_double)
        await client.agent.service.register(
            "web", service_id="web-1", check=consul.Check.ttl("30s")
        )
        before = consul_double.checks["service:web-1"]["Status"]

        await client.agent.check.ttl_pass("service:web-1", notes="fine")

        check = consul_double.checks["service:web-1"]
        assert ("critical", "passing", "fine") == (
            before,
            check["Status"],
            check["Output"],
        )


class TestAgentServiceRegister:
    async def test_case_insensitive_and_snake_case_keys(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """Keys match case-insensitively and snake_case aliases work."""
        send = request_to(consul_double)
        body = {
            "NAME": "web",
            "id": "web-1",
            "aDDress": "127.0.0.1",
            "PORT": 8080,
            "tagged_addresses": {"lan": {"address": "10.0.0.1", "port": 80}},
            "enable_tag_override": True,
            "checks": [
                {
                    "ttl": "10s",
                    "deregister_critical_service_after": "90s",
                    "Status": "passing",
                }
            ],
            "unknown_key": "ignored",
        }

        status, text, _ = await send(
            "PUT", "/v1/agent/service/register", json=body
        )

        service = consul_double.services["web-1"]
        check = consul_double.checks["service:web-1"]
        assert (200, "") == (status, text)
        assert {"Address": "10.0.0.1", "Port": 80} == service[
            "TaggedAddresses"
        ]["lan"]
        assert service["EnableTagOverride"] is True
        assert ("passing", "1m30s") == (
            check["Status"],
            check["Definition"]["DeregisterCriticalServiceAfter"],
        )

    async def test_check_ids_and_names(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """Several checks get IDs service:<id>:<n> and a default name."""
        send = request_to(consul_double)
        body = _web_service(
            Check={"TTL": "10s"}, Checks=[{"TTL": "10s"}, {"TTL": "20s"}]
        )

        await send("PUT", "/v1/agent/service/register", json=body)

        assert [
            "service:web-1:1",
            "service:web-1:2",
            "service:web-1:3",
        ] == sorted(consul_double.checks)
        assert {"Service 'web' check"} == {
            c["Name"] for c in consul_double.checks.values()
        }

    async def test_replace_existing_checks(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """replace-existing-checks drops the checks a new definition lacks."""
        send = request_to(consul_double)
        path = "/v1/agent/service/register"
        await send(
            "PUT",
            path,
            json=_web_service(
                Checks=[
                    {"CheckID": "a", "TTL": "10s"},
                    {"CheckID": "b", "TTL": "10s"},
                ]
            ),
        )
        await send(
            "PUT", path, json=_web_service(Check={"CheckID": "a", "TTL": "5s"})
        )
        kept = sorted(consul_double.checks)

        await send(
            "PUT",
            f"{path}?replace-existing-checks=true",
            json=_web_service(Check={"CheckID": "a", "TTL": "5s"}),
        )

        assert ["a", "b"] == kept
        assert ["a"] == sorted(consul_double.checks)

    @pytest.mark.parametrize(
        ("body", "reason"),
        [
            ("", "Request decode failed: EOF"),
            ("[1]", "Request decode failed: json: cannot unmarshal array"),
            (
                {"Name": "web", "Port": "80"},
                (
                    "Request decode failed: json: cannot unmarshal string "
                    "into Go struct field ServiceDefinition.Port of type int"
                ),
            ),
            (
                {"Name": "web", "Check": {"TTL": "soon"}},
                'Request decode failed: time: invalid duration "soon"',
            ),
            ({"Port": 80}, "Missing service name"),
            ({"Name": "web", "Address": "0.0.0.0"}, "Invalid service address"),
            (
                {"Name": "web", "Meta": {"bad key": "x"}},
                "Invalid Service Meta: Key contains invalid characters",
            ),
            (
                {"Name": "web", "Weights": {"Passing": 0}},
                "Invalid Weights: ",
            ),
            (
                {"Name": "web", "Check": {"HTTP": "http://x/"}},
                "Invalid check: Interval must be > 0",
            ),
            (
                {"Name": "web", "Check": {"Interval": "1s", "TTL": "1s"}},
                "Invalid check: Interval and TTL cannot both be specified",
            ),
            ({"Name": "web", "Check": {}}, "Invalid check: TTL must be > 0"),
            (
                {"Name": "web", "Check": {"TTL": "1s", "Status": "fine"}},
                "Status for checks must 'passing', 'warning', 'critical'",
            ),
        ],
    )
    async def test_bad_request(
        self,
        consul_double: ConsulDouble,
        request_to: Any,
        body: Any,
        reason: str,
    ) -> None:
        """Bad bodies get 400 with Consul's reason as plain text."""
        send = request_to(consul_double)
        data = body if isinstance(body, str) else json.dumps(body)

        status, text, headers = await send(
            "PUT", "/v1/agent/service/register", data=data
        )

        assert 400 == status
        assert text.startswith(reason)
        assert headers["Content-Type"].startswith("text/plain")
        assert {} == consul_double.services

    async def test_script_checks_refused(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """Script checks are refused with a 500, as scripts are disabled."""
        send = request_to(consul_double)
        body = _web_service(Check={"Args": ["true"], "Interval": "10s"})

        status, text, _ = await send(
            "PUT", "/v1/agent/service/register", json=body
        )

        assert 500 == status
        assert text.startswith("Scripts are disabled on this agent")

    async def test_idempotent_register_keeps_index(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """Re-registering an identical service does not move the index."""
        send = request_to(consul_double)
        await send(
            "PUT", "/v1/agent/service/register", json=_web_service(Tags=None)
        )
        _, _, first = await send("GET", "/v1/catalog/services")

        await send("PUT", "/v1/agent/service/register", json=_web_service())
        _, _, second = await send("GET", "/v1/catalog/services")
        await send(
            "PUT", "/v1/agent/service/register", json=_web_service(Port=81)
        )
        _, _, third = await send("GET", "/v1/catalog/services")

        assert first["X-Consul-Index"] == second["X-Consul-Index"]
        assert int(third["X-Consul-Index"]) > int(second["X-Consul-Index"])


class TestAgentEndpoints:
    async def test_self(
        self, consul_double_factory: ConsulDoubleFactory, request_to: Any
    ) -> None:
        """/v1/agent/self names the datacenter and node as strings."""
        double = await consul_double_factory(
            datacenter="dc9", node_name="probe-node"
        )

        status, text, _ = await request_to(double)("GET", "/v1/agent/self")

        body = json.loads(text)
        assert 200 == status
        assert ("dc9", "probe-node") == (
            body["Config"]["Datacenter"],
            body["Config"]["NodeName"],
        )

    @pytest.mark.parametrize(
        ("method", "path", "answer"),
        [
            pytest.param(
                "PUT",
                "/v1/agent/service/deregister/web",
                (
                    404,
                    (
                        'Unknown service ID "web". Ensure that the service ID '
                        "is passed, not the service name."
                    ),
                ),
                id="deregister-unknown-id-names-the-mistake",
            ),
            pytest.param(
                "GET",
                "/v1/agent/service/register",
                (405, "method GET not allowed"),
                id="wrong-method",
            ),
            pytest.param(
                "GET",
                "/v1/nothing",
                (404, "404 page not found"),
                id="unknown-path",
            ),
        ],
    )
    async def test_refusals(
        self,
        consul_double: ConsulDouble,
        request_to: Any,
        method: str,
        path: str,
        answer: tuple[int, str],
    ) -> None:
        """Refused requests get Consul's status and text."""
        status, text, _ = await request_to(consul_double)(method, path)

        assert answer == (status, text)

    async def test_ttl_on_http_check(
        self,
        consul_double: ConsulDouble,
        request_to: Any,
        health_target: HealthTarget,
    ) -> None:
        """A TTL update on a non-TTL check is a 500 that names the check."""
        send = request_to(consul_double)
        await send(
            "PUT",
            "/v1/agent/service/register",
            json=_web_service(
                Check={"HTTP": health_target.url, "Interval": "10s"}
            ),
        )

        status, text, _ = await send(
            "PUT", "/v1/agent/check/pass/service:web-1"
        )
        unknown = await send("PUT", "/v1/agent/check/pass/nope")

        assert (
            500,
            'CheckID "service:web-1" does not have associated TTL',
        ) == (status, text)
        assert 404 == unknown[0]
        assert unknown[1].startswith('Unknown check ID "nope".')

    async def test_check_register_and_update(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """Checks registered on their own attach to a service and update."""
        send = request_to(consul_double)
        await send("PUT", "/v1/agent/service/register", json=_web_service())

        registered = await send(
            "PUT",
            "/v1/agent/check/register",
            json={"name": "mem", "serviceid": "web-1", "ttl": "1m"},
        )
        updated = await send(
            "PUT",
            "/v1/agent/check/update/mem",
            json={"Status": "warning", "Output": "high"},
        )
        check = consul_double.checks["mem"]

        assert (200, 200) == (registered[0], updated[0])
        assert ("web-1", "warning", "high") == (
            check["ServiceID"],
            check["Status"],
            check["Output"],
        )


class TestCatalogAndHealth:
    async def _register(self, double: ConsulDouble, send: Any) -> None:
        for body in (
            _web_service(Tags=["prom", "v1"], Meta={"team-name": "obs"}),
            _web_service(ID="web-2", Port=8081, Tags=["prom", "v2"]),
            {"Name": "db", "Port": 5432},
        ):
            await send("PUT", "/v1/agent/service/register", json=body)

    async def test_catalog_services(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """The catalog lists each name with the union of its tags."""
        send = request_to(consul_double)
        await self._register(consul_double, send)

        status, text, headers = await send("GET", "/v1/catalog/services")

        assert 200 == status
        assert {
            "consul": [],
            "web": ["prom", "v1", "v2"],
            "db": [],
        } == json.loads(text)
        assert int(headers["X-Consul-Index"]) > 0

    async def test_health_service_shape(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """Health entries carry the node, the service and serfHealth first."""
        send = request_to(consul_double)
        await self._register(consul_double, send)

        _, text, headers = await send(
            "GET", "/v1/health/service/web?tag=v1&stale="
        )

        [entry] = json.loads(text)
        assert "X-Consul-Index" in headers
        assert {
            "lan": "127.0.0.1",
            "lan_ipv4": "127.0.0.1",
            "wan": "127.0.0.1",
            "wan_ipv4": "127.0.0.1",
        } == entry["Node"]["TaggedAddresses"]
        assert ("web-1", {"team-name": "obs"}) == (
            entry["Service"]["ID"],
            entry["Service"]["Meta"],
        )
        assert ["serfHealth"] == [c["CheckID"] for c in entry["Checks"]]
        assert "passing" == entry["Checks"][0]["Status"]

    async def test_passing_filter(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """passing=1 leaves out instances with a non-passing check."""
        send = request_to(consul_double)
        await self._register(consul_double, send)
        await send(
            "PUT",
            "/v1/agent/check/register",
            json={"Name": "ttl", "ServiceID": "web-2", "TTL": "1m"},
        )

        _, every, _ = await send("GET", "/v1/health/service/web")
        _, passing, _ = await send("GET", "/v1/health/service/web?passing=1")

        assert ["web-1", "web-2"] == [
            e["Service"]["ID"] for e in json.loads(every)
        ]
        assert ["web-1"] == [e["Service"]["ID"] for e in json.loads(passing)]

    async def test_catalog_service_and_node_meta(
        self, consul_double_factory: ConsulDoubleFactory, request_to: Any
    ) -> None:
        """catalog/service is flat and node-meta must match the node."""
        double = await consul_double_factory(node_meta={"rack": "r1"})
        send = request_to(double)
        await self._register(double, send)

        _, matching, _ = await send(
            "GET", "/v1/catalog/service/web?node-meta=rack:r1"
        )
        _, other, _ = await send(
            "GET", "/v1/catalog/service/web?node-meta=rack:r2"
        )

        assert [("web-1", 8080), ("web-2", 8081)] == [
            (s["ServiceID"], s["ServicePort"]) for s in json.loads(matching)
        ]
        assert [] == json.loads(other)

    @pytest.mark.parametrize(
        ("query", "answer"),
        [
            pytest.param(
                "dc=mars",
                (500, "No path to datacenter"),
                id="unknown-datacenter",
            ),
            pytest.param("index=x", (400, "Invalid index"), id="bad-index"),
        ],
    )
    async def test_refused_queries(
        self,
        consul_double: ConsulDouble,
        request_to: Any,
        query: str,
        answer: tuple[int, str],
    ) -> None:
        """An unknown dc or a non-numeric index gets Consul's error."""
        status, text, _ = await request_to(consul_double)(
            "GET", f"/v1/catalog/services?{query}"
        )

        assert answer == (status, text)

    async def test_check_flip_moves_health_not_catalog(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """A check flip moves the service's index, not the catalog's."""
        send = request_to(consul_double)
        await send(
            "PUT",
            "/v1/agent/service/register",
            json=_web_service(Check={"TTL": "1m"}),
        )
        _, _, catalog_before = await send("GET", "/v1/catalog/services")
        _, _, health_before = await send("GET", "/v1/health/service/web")

        consul_double.set_check_status("service:web-1", "passing", "ok")
        _, _, catalog_after = await send("GET", "/v1/catalog/services")
        _, _, health_after = await send("GET", "/v1/health/service/web")

        assert (
            catalog_before["X-Consul-Index"]
            == (catalog_after["X-Consul-Index"])
        )
        assert int(health_after["X-Consul-Index"]) > int(
            health_before["X-Consul-Index"]
        )

    async def test_blocking_query_with_higher_index_times_out(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """An index above the current one is held for the wait only."""
        send = request_to(consul_double)
        future = consul_double.index + 100

        status, _, headers = await send(
            "GET", f"/v1/catalog/services?index={future}&wait=50ms"
        )

        assert 200 == status
        assert int(headers["X-Consul-Index"]) < future


class TestAcl:
    @pytest.fixture
    async def secured(
        self, consul_double_factory: ConsulDoubleFactory, request_to: Any
    ) -> tuple[ConsulDouble, Any]:
        double = await consul_double_factory(acl_token=TOKEN)
        send = request_to(double)
        await send(
            "PUT",
            "/v1/agent/service/register",
            json=_web_service(),
            headers={"X-Consul-Token": TOKEN},
        )
        return double, send

    @pytest.mark.parametrize(
        "path", ["/v1/agent/self", "/v1/catalog/services", "/v1/agent/checks"]
    )
    async def test_unknown_token_everywhere(
        self, secured: tuple[ConsulDouble, Any], path: str
    ) -> None:
        """An unknown token gets 403 ACL not found, reads included."""
        _, send = secured

        status, text, _ = await send(
            "GET", path, headers={"X-Consul-Token": "wrong"}
        )

        assert (403, "ACL not found") == (status, text)

    async def test_anonymous_write(
        self, secured: tuple[ConsulDouble, Any]
    ) -> None:
        """An anonymous deregister is denied and names the permission."""
        double, send = secured

        status, text, _ = await send(
            "PUT", "/v1/agent/service/deregister/web-1"
        )

        assert 403 == status
        assert (
            f"Permission denied: token with AccessorID "
            f"'{ANONYMOUS_ACCESSOR_ID}' lacks permission 'service:write' "
            'on "web"'
        ) == text
        assert ["web-1"] == list(double.services)

    async def test_anonymous_reads_filtered(
        self, secured: tuple[ConsulDouble, Any]
    ) -> None:
        """Anonymous catalog reads are empty and say they were filtered."""
        _, send = secured

        status, text, headers = await send("GET", "/v1/health/service/web")

        assert (200, []) == (status, json.loads(text))
        assert "true" == headers["X-Consul-Results-Filtered-By-ACLs"]
        assert "X-Consul-Index" in headers

    @pytest.mark.parametrize(
        ("headers", "query"),
        [
            ({"Authorization": f"Bearer {TOKEN}"}, ""),
            ({}, f"?token={TOKEN}"),
        ],
    )
    async def test_other_token_carriers(
        self,
        secured: tuple[ConsulDouble, Any],
        headers: dict[str, str],
        query: str,
    ) -> None:
        """The token may come as a Bearer header or a token parameter."""
        _, send = secured

        _, text, _ = await send(
            "GET", f"/v1/catalog/services{query}", headers=headers
        )

        assert {"consul": [], "web": []} == json.loads(text)

    async def test_decode_errors_before_token(
        self, secured: tuple[ConsulDouble, Any]
    ) -> None:
        """Register decodes the body before it resolves the token."""
        _, send = secured

        status, _, _ = await send(
            "PUT",
            "/v1/agent/service/register",
            data="{}",
            headers={"X-Consul-Token": "wrong"},
        )

        assert 400 == status

    async def test_acl_off_ignores_tokens(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """Without ACLs any token is accepted."""
        status, _, _ = await request_to(consul_double)(
            "PUT",
            "/v1/agent/service/register",
            json=_web_service(),
            headers={"X-Consul-Token": "anything"},
        )

        assert 200 == status


class TestHttpChecks:
    async def _register(self, send: Any, check: dict[str, Any]) -> None:
        status, text, _ = await send(
            "PUT", "/v1/agent/service/register", json=_web_service(Check=check)
        )
        assert (200, "") == (status, text)

    async def _status_becomes(self, double: ConsulDouble, status: str) -> None:
        await double.wait_for(
            lambda d: d.checks["service:web-1"]["Status"] == status
        )

    async def test_flips_with_the_endpoint(
        self,
        fast_double: ConsulDouble,
        request_to: Any,
        health_target: HealthTarget,
    ) -> None:
        """A running HTTP check follows its endpoint: 2xx, 429, then 500."""
        await self._register(
            request_to(fast_double),
            {"HTTP": health_target.url, "Interval": "10s"},
        )

        await self._status_becomes(fast_double, "passing")
        passing_output = fast_double.checks["service:web-1"]["Output"]
        health_target.status = 429
        await self._status_becomes(fast_double, "warning")
        health_target.status = 500
        await self._status_becomes(fast_double, "critical")

        assert (
            f"HTTP GET {health_target.url}: 200 OK Output: ok"
        ) == passing_output

    async def test_sends_method_and_headers(
        self,
        fast_double: ConsulDouble,
        request_to: Any,
        health_target: HealthTarget,
    ) -> None:
        """Checks send their Method and Header, and Consul's User-Agent."""
        await self._register(
            request_to(fast_double),
            {
                "HTTP": health_target.url,
                "Interval": "10s",
                "Method": "POST",
                "Header": {"X-Probe": ["a", "b"]},
            },
        )

        await self._status_becomes(fast_double, "passing")

        seen = health_target.seen[0]
        assert "POST" == seen.method
        assert ["a", "b"] == seen.headers.getall("X-Probe")
        assert "Consul Health Check" == seen.headers["User-Agent"]

    async def test_connection_refused(
        self, fast_double: ConsulDouble, request_to: Any
    ) -> None:
        """An unreachable endpoint keeps the check critical with Go's text."""
        await self._register(
            request_to(fast_double),
            {"HTTP": "http://127.0.0.1:1/health", "Interval": "10s"},
        )

        await fast_double.wait_for(
            lambda d: bool(d.checks["service:web-1"]["Output"])
        )

        check = fast_double.checks["service:web-1"]
        assert "critical" == check["Status"]
        assert (
            'Get "http://127.0.0.1:1/health": dial tcp 127.0.0.1:1: '
            "connect: connection refused"
        ) == check["Output"]

    async def test_timeout(
        self,
        fast_double: ConsulDouble,
        request_to: Any,
        health_target: HealthTarget,
    ) -> None:
        """An endpoint slower than Timeout turns the check critical."""
        await self._register(
            request_to(fast_double),
            {
                "HTTP": health_target.url,
                "Interval": "10s",
                "Timeout": "5s",
                "Status": "passing",
            },
        )
        health_target.hang = True

        await self._status_becomes(fast_double, "critical")

        assert (
            "context deadline exceeded"
            in (fast_double.checks["service:web-1"]["Output"])
        )

    async def test_tls_skip_verify(
        self, fast_double: ConsulDouble, request_to: Any
    ) -> None:
        """TLSSkipVerify lets a check pass against an untrusted certificate."""
        authority = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert("127.0.0.1").configure_cert(context)
        target = HealthTarget()
        runner = await _serve(_target_app(target), ssl_context=context)
        url = f"https://127.0.0.1:{runner.addresses[0][1]}/health"
        send = request_to(fast_double)
        try:
            await send(
                "PUT",
                "/v1/agent/service/register",
                json={
                    "Name": "tls",
                    "Checks": [
                        {
                            "CheckID": "skip",
                            "HTTP": url,
                            "Interval": "10s",
                            "TLSSkipVerify": True,
                        },
                        {"CheckID": "verify", "HTTP": url, "Interval": "10s"},
                    ],
                },
            )
            await fast_double.wait_for(
                lambda d: (
                    d.checks["skip"]["Status"] == "passing"
                    and bool(d.checks["verify"]["Output"])
                )
            )
        finally:
            await runner.cleanup()

        verify = fast_double.checks["verify"]
        assert "critical" == verify["Status"]
        assert "x509" in verify["Output"]


class TestTtlChecks:
    async def test_expires_to_critical(
        self, fast_double: ConsulDouble, request_to: Any
    ) -> None:
        """A TTL check not updated in time turns critical and says why."""
        send = request_to(fast_double)
        await send(
            "PUT",
            "/v1/agent/service/register",
            json=_web_service(Check={"TTL": "1s"}),
        )
        await send("PUT", "/v1/agent/check/pass/service:web-1?note=alive")

        await fast_double.wait_for(
            lambda d: d.checks["service:web-1"]["Status"] == "critical"
        )

        assert (
            "TTL expired (last output before timeout follows): alive"
        ) == fast_double.checks["service:web-1"]["Output"]


class TestHooks:
    async def test_set_check_status(self, consul_double: ConsulDouble) -> None:
        """set_check_status rejects unknown statuses and unknown checks."""
        with pytest.raises(ValueError, match="status must be one of"):
            consul_double.set_check_status("x", "fine")
        with pytest.raises(KeyError):
            consul_double.set_check_status("x", "passing")

    async def test_wait_for_times_out(
        self, consul_double: ConsulDouble
    ) -> None:
        """wait_for raises TimeoutError when the condition stays false."""
        with pytest.raises(TimeoutError):
            await consul_double.wait_for(lambda d: False, timeout=0.05)


class TestDeregisterCriticalServiceAfter:
    async def test_reaps_critical_service(
        self, consul_double_factory: ConsulDoubleFactory, request_to: Any
    ) -> None:
        """A service critical for longer than the setting is deregistered."""
        double = await consul_double_factory(
            reap_interval=0.02, deregister_minimum=0
        )
        send = request_to(double)
        await send(
            "PUT",
            "/v1/agent/service/register",
            json=_web_service(
                Check={"TTL": "1h", "DeregisterCriticalServiceAfter": "50ms"}
            ),
        )
        await send(
            "PUT",
            "/v1/agent/service/register",
            json=_web_service(
                ID="web-2",
                Check={
                    "TTL": "1h",
                    "Status": "passing",
                    "DeregisterCriticalServiceAfter": "50ms",
                },
            ),
        )

        await double.wait_for(lambda d: "web-1" not in d.services)

        assert ["web-2"] == list(double.services)
        assert ["service:web-2"] == list(double.checks)


class TestRestartAndDowntime:
    async def test_restart_loses_registrations(
        self, consul_double: ConsulDouble, py_consul_factory: PyConsulFactory
    ) -> None:
        """A restart forgets services and moves the catalog index."""
        client = py_consul_factory(consul_double)
        await client.agent.service.register("web", port=8080)
        index, _ = await client.catalog.services()
        port = consul_double.port

        await consul_double.restart()
        new_index, services = await client.catalog.services()

        assert port == consul_double.port
        assert {"consul": []} == services
        assert int(new_index) > int(index)
        assert {} == await client.agent.services()

    async def test_restart_drops_held_query(
        self, consul_double: ConsulDouble, py_consul_factory: PyConsulFactory
    ) -> None:
        """A blocking query held during a restart loses its connection."""
        client = py_consul_factory(consul_double)
        index, _ = await client.catalog.services()
        waiting = asyncio.create_task(
            client.catalog.services(index=index, wait="60s")
        )
        await consul_double.wait_for(
            lambda d: any(
                r.param("index") == index
                for r in d.requests_to("/v1/catalog/services")
            )
        )

        await consul_double.restart()

        with pytest.raises(aiohttp.ClientError):
            await waiting

    async def test_downtime_refuses_connections(
        self,
        consul_double: ConsulDouble,
        py_consul_factory: PyConsulFactory,
    ) -> None:
        """While down, connections are refused; afterwards state is back."""
        client = py_consul_factory(consul_double)
        await client.agent.service.register("web", port=8080)
        port = consul_double.port

        await consul_double.go_down()
        with pytest.raises(aiohttp.ClientConnectorError):
            await client.agent.services()
        await consul_double.come_up()

        assert port == consul_double.port
        assert ["web"] == list(await client.agent.services())

    async def test_hooks_check_state(
        self, consul_double: ConsulDouble
    ) -> None:
        """Down twice or up twice is an error."""
        with pytest.raises(RuntimeError, match="not down"):
            await consul_double.come_up()
        await consul_double.go_down()
        with pytest.raises(RuntimeError, match="not up"):
            await consul_double.go_down()
        await consul_double.come_up()


class TestRequestLog:
    async def test_records_what_clients_sent(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """The log keeps method, path, ordered query, headers and status."""
        await request_to(consul_double)(
            "GET",
            "/v1/health/service/web?dc=dc1&tag=a&tag=b&stale=",
            headers={"X-Consul-Token": "t"},
        )

        [logged] = consul_double.requests
        assert ("GET", "/v1/health/service/web", 200) == (
            logged.method,
            logged.path,
            logged.status,
        )
        assert (("dc", "dc1"), ("tag", "a"), ("tag", "b"), ("stale", "")) == (
            logged.query
        )
        assert "t" == logged.headers["x-consul-token"]

    async def test_clear(
        self, consul_double: ConsulDouble, request_to: Any
    ) -> None:
        """clear_requests empties the log."""
        await request_to(consul_double)("GET", "/v1/agent/services")

        consul_double.clear_requests()

        assert [] == consul_double.requests
