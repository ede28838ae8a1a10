"""
Tests for the one place that knows py-consul's internals: the check that
refuses a py-consul without them, and the transport built on them.
"""

from __future__ import annotations

import abc
import importlib.metadata
import importlib.util
import json
import subprocess
import sys

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import consul.api.agent
import consul.base
import consul.callback
import pytest

from aiohttp import web
from aiohttp.test_utils import TestServer

from prom_async.aio import _consul_client
from prom_async.aio._consul_client import (
    PROVEN_ON,
    AgentClient,
    AgentEndpoint,
    check_py_consul,
)
from prom_async.aio.sd import ConsulAgent, ConsulRegistrationError


pytestmark = pytest.mark.usefixtures("consul_env_cleared")


@pytest.fixture
def fresh_check() -> Iterator[None]:
    """
    Forget the once-per-process verdict before and after the test.
    """
    _consul_client._problems.cache_clear()
    yield
    _consul_client._problems.cache_clear()


def _with_an_abstract_head(monkeypatch: pytest.MonkeyPatch) -> None:
    @abc.abstractmethod
    def head(self: Any, callback: Any, path: str) -> Any: ...

    abstract = consul.base.HTTPClient.__abstractmethods__
    monkeypatch.setattr(consul.base.HTTPClient, "head", head, raising=False)
    monkeypatch.setattr(
        consul.base.HTTPClient, "__abstractmethods__", abstract | {"head"}
    )


def _with_a_new_transport_constructor(monkeypatch: pytest.MonkeyPatch) -> None:
    def init(self: Any, base_url: str) -> None: ...

    monkeypatch.setattr(consul.base.HTTPClient, "__init__", init)


def _without_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(consul.base.HTTPClient, "uri")


def _with_a_transport_built_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = consul.base.Consul.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.http = object()

    monkeypatch.setattr(consul.base.Consul, "__init__", init)


def _with_another_services_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def services(self: Any, token: str | None = None) -> Any:
        headers = self.agent.prepare_headers(token)
        return self.agent.http.get(
            consul.callback.CB.json(), "/v2/services", headers=headers
        )

    monkeypatch.setattr(consul.api.agent.Agent, "services", services)


def _with_register_without_meta(monkeypatch: pytest.MonkeyPatch) -> None:
    def register(
        self: Any,
        name: str,
        *,
        service_id: str | None = None,
        address: str | None = None,
        port: int | None = None,
        tags: Any = None,
        check: Any = None,
        replace_existing_checks: bool = False,
    ) -> Any: ...

    monkeypatch.setattr(consul.api.agent.Agent.Service, "register", register)


def _with_the_token_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        consul.base.Consul, "prepare_headers", lambda self, token=None: {}
    )


def _with_replace_existing_checks_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = consul.api.agent.Agent.Service.register

    def register(
        self: Any, *args: Any, replace_existing_checks: bool, **kwargs: Any
    ) -> Any:
        return original(self, *args, **kwargs)

    monkeypatch.setattr(consul.api.agent.Agent.Service, "register", register)


def _with_services_as_a_boolean(monkeypatch: pytest.MonkeyPatch) -> None:
    def services(self: Any, token: str | None = None) -> Any:
        headers = self.agent.prepare_headers(token)
        return self.agent.http.get(
            consul.callback.CB.boolean(), "/v1/agent/services", headers=headers
        )

    monkeypatch.setattr(consul.api.agent.Agent, "services", services)


class TestCheckPyConsul:
    def test_installed_py_consul_passes(self, fresh_check: None) -> None:
        """The installed py-consul has every internal; ConsulAgent works."""
        check_py_consul()

        assert () == _consul_client._problems()
        assert "svc" == ConsulAgent("svc").name

    def test_docstring_names_the_proven_version(self) -> None:
        """The module's docstring names the version it was proven on."""
        assert _consul_client.__doc__ is not None
        assert f"py-consul {PROVEN_ON}" in _consul_client.__doc__

    @pytest.mark.parametrize(
        ("breakage", "problem"),
        [
            pytest.param(
                _with_an_abstract_head,
                "abstract methods that prom_async's transport lacks: head",
                id="new-abstract-method",
            ),
            pytest.param(
                _with_a_new_transport_constructor,
                "HTTPClient() no longer takes (host, port, scheme, verify=)",
                id="transport-constructor",
            ),
            pytest.param(
                _without_uri,
                "consul.base.HTTPClient.uri() is missing",
                id="no-uri",
            ),
            pytest.param(
                _with_a_transport_built_elsewhere,
                "does not build its transport with http_connect()",
                id="no-http-connect",
            ),
            pytest.param(
                _with_another_services_path,
                "no longer make the requests",
                id="other-paths",
            ),
            pytest.param(
                _with_register_without_meta,
                "the calls prom_async makes fail: TypeError(",
                id="register-signature",
            ),
            pytest.param(
                _with_the_token_ignored,
                "the token set on consul.base.Consul is not sent with "
                "PUT /v1/agent/service/register, PUT /v1/agent/service/"
                "deregister/prom-async-probe, GET /v1/agent/services",
                id="token",
            ),
            pytest.param(
                _with_replace_existing_checks_ignored,
                "agent.service.register() does not send the service as given",
                id="register-payload",
            ),
            pytest.param(
                _with_services_as_a_boolean,
                "agent.services() does not answer the agent's JSON",
                id="services-answer",
            ),
        ],
    )
    def test_a_changed_internal_fails_at_construction(
        self,
        fresh_check: None,
        monkeypatch: pytest.MonkeyPatch,
        breakage: Callable[[pytest.MonkeyPatch], None],
        problem: str,
    ) -> None:
        """A py-consul without an internal fails when a ConsulAgent is made,
        naming the internal, the version and the one proven."""
        breakage(monkeypatch)

        with pytest.raises(RuntimeError) as raised:
            ConsulAgent("svc")

        message = str(raised.value)
        assert problem in message
        assert message.startswith(
            "prom_async's Consul support does not work with py-consul "
            f"{importlib.metadata.version('py-consul')}: "
        )
        assert message.endswith(
            f"It is proven on py-consul {PROVEN_ON}: "
            f"pip install 'py-consul=={PROVEN_ON}'"
        )

    def test_unknown_version(
        self, fresh_check: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without package metadata, the message says the version is
        unknown."""

        def no_metadata(name: str) -> str:
            raise importlib.metadata.PackageNotFoundError(name)

        _without_uri(monkeypatch)
        monkeypatch.setattr(importlib.metadata, "version", no_metadata)

        with pytest.raises(RuntimeError, match=r"py-consul \(version unknown"):
            check_py_consul()

    def test_verdict_is_kept(
        self, fresh_check: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The check runs once per process: later agents do not repeat it."""
        check_py_consul()
        _without_uri(monkeypatch)

        assert "svc" == ConsulAgent("svc").name

    def test_missing_classes_at_import(self) -> None:
        """A py-consul without the base classes still imports sd; only a
        ConsulAgent fails."""
        script = (
            "import consul.base\n"
            "del consul.base.HTTPClient, consul.base.Consul\n"
            "from prom_async.aio.sd import ConsulAgent\n"
            "try:\n"
            "    ConsulAgent()\n"
            "except RuntimeError as error:\n"
            "    print(error)\n"
        )

        output = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

        assert (
            "consul.base.HTTPClient is missing; consul.base.Consul is missing"
            in output
        )

    def test_missing_classes(
        self, fresh_check: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Each missing base class is named."""
        monkeypatch.setattr(_consul_client, "_HTTPClientBase", object)
        monkeypatch.setattr(_consul_client, "_ConsulBase", object)

        with pytest.raises(RuntimeError) as raised:
            ConsulAgent()

        assert (
            ": consul.base.HTTPClient is missing; consul.base.Consul is "
            "missing. It is proven"
        ) in str(raised.value)

    def test_without_py_consul(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without py-consul, importing the client module says which extra
        to install."""
        monkeypatch.setitem(sys.modules, "consul", None)
        spec = importlib.util.spec_from_file_location(
            "prom_async.aio._consul_client_without_consul",
            _consul_client.__file__,
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)

        with pytest.raises(ImportError) as raised:
            spec.loader.exec_module(module)

        assert str(raised.value).startswith(
            "prom_async.aio.sd needs py-consul >= 1.8 (import of consul "
            "halted; None in sys.modules; the consul extra): "
            "pip install 'py-consul>=1.8,<2'"
        )


class Recorded:
    """
    A loopback server that records each request and answers as told.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None, str]] = []
        self.answer: tuple[int, str] = (200, "true")

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            (
                request.method,
                request.path_qs,
                request.headers.get("X-Consul-Token"),
                await request.text(),
            )
        )
        status, body = self.answer
        return web.Response(status=status, text=body)


@pytest.fixture
async def recorded() -> AsyncIterator[tuple[Recorded, AgentEndpoint]]:
    """
    A :class:`Recorded` server on loopback, and its endpoint.
    """
    recorder = Recorded()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        assert server.port is not None
        yield recorder, AgentEndpoint("http", "127.0.0.1", server.port)
    finally:
        await server.close()


@pytest.fixture
async def client(
    recorded: tuple[Recorded, AgentEndpoint],
) -> AsyncIterator[AgentClient]:
    """
    An AgentClient for the recorded server, with a token, closed after.
    """
    _, endpoint = recorded
    agent_client = AgentClient(
        endpoint, token="t0k", tls=True, request_timeout=5.0
    )
    try:
        yield agent_client
    finally:
        await agent_client.close()


class TestAgentClient:
    async def test_transport_methods(
        self, recorded: tuple[Recorded, AgentEndpoint], client: AgentClient
    ) -> None:
        """Each of the transport's methods sends its method, path, query
        and body, and hands the answer to py-consul's callback."""
        recorder, _ = recorded
        answers = [
            await getattr(client.http, method)(
                lambda response: (response.code, response.body),
                "/v1/x y",
                params=[("a", "1")],
                data=method,
                headers={"X-Consul-Token": "t0k"},
                raw=False,
            )
            for method in ("get", "put", "delete", "post")
        ]

        assert [(200, "true")] * 4 == answers
        assert [
            (method, "/v1/x%20y?a=1", "t0k", method.lower())
            for method in ("GET", "PUT", "DELETE", "POST")
        ] == recorder.requests

    async def test_env_token_is_not_used(
        self,
        recorded: tuple[Recorded, AgentEndpoint],
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """The token given wins over CONSUL_HTTP_TOKEN, and None sends
        none."""
        recorder, endpoint = recorded
        monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")
        tokenless = AgentClient(
            endpoint, token=None, tls=True, request_timeout=5.0
        )
        try:
            await tokenless.register_service({"name": "svc"})
        finally:
            await tokenless.close()

        assert [None] == [token for _, _, token, _ in recorder.requests]

    async def test_register_service(
        self, recorded: tuple[Recorded, AgentEndpoint], client: AgentClient
    ) -> None:
        """register_service() sends the service and replaces its checks."""
        recorder, _ = recorded

        await client.register_service({"name": "svc", "port": 9100})

        ((method, path, token, body),) = recorder.requests
        assert (
            "PUT",
            "/v1/agent/service/register?replace-existing-checks=true",
            "t0k",
            {"name": "svc", "port": 9100},
        ) == (method, path, token, json.loads(body))

    @pytest.mark.parametrize(
        ("status", "reason"),
        [
            (400, "Invalid check"),
            (401, "ACL support disabled"),
            (403, "Permission denied"),
            (404, "404 page not found\n"),
            (429, "Too many requests"),
        ],
    )
    async def test_refusal(
        self,
        recorded: tuple[Recorded, AgentEndpoint],
        client: AgentClient,
        status: int,
        reason: str,
    ) -> None:
        """Any 4xx, a 404 included, is a ConsulRegistrationError with the
        status and Consul's reason as sent."""
        recorder, _ = recorded
        recorder.answer = (status, reason)

        with pytest.raises(ConsulRegistrationError) as raised:
            await client.register_service({"name": "svc"})

        assert (status, reason) == (raised.value.status, raised.value.message)

    async def test_server_error_is_a_consul_exception(
        self, recorded: tuple[Recorded, AgentEndpoint], client: AgentClient
    ) -> None:
        """A 5xx is py-consul's ConsulException, one of UNREACHABLE."""
        recorder, _ = recorded
        recorder.answer = (500, "rpc error")

        with pytest.raises(
            _consul_client.UNREACHABLE,
            match=r"^Consul answered 500: rpc error$",
        ):
            await client.register_service({"name": "svc"})

    async def test_deregister_unknown_service(
        self, recorded: tuple[Recorded, AgentEndpoint], client: AgentClient
    ) -> None:
        """Deregistering a service the agent does not know succeeds; other
        refusals raise."""
        recorder, _ = recorded
        recorder.answer = (404, "Unknown service ID")
        await client.deregister_service("svc-1")
        recorder.answer = (403, "Permission denied")

        with pytest.raises(ConsulRegistrationError, match="403"):
            await client.deregister_service("svc-1")
        assert [
            ("PUT", "/v1/agent/service/deregister/svc-1"),
        ] * 2 == [(method, path) for method, path, _, _ in recorder.requests]

    async def test_service_ids(
        self,
        recorded: tuple[Recorded, AgentEndpoint],
        client: AgentClient,
    ) -> None:
        """service_ids() gives the agent's service IDs."""
        recorder, _ = recorded
        recorder.answer = (200, '{"a": {}, "b": {}}')

        assert frozenset({"a", "b"}) == await client.service_ids()

    async def test_service_ids_null(
        self,
        recorded: tuple[Recorded, AgentEndpoint],
        client: AgentClient,
    ) -> None:
        """A JSON null (Consul always sends an object) is not an empty
        list of services but an answer that tells nothing."""
        recorder, _ = recorded
        recorder.answer = (200, "null")

        with pytest.raises(
            _consul_client.AgentAnswerError,
            match=r"^Consul answered 200 with JSON null, not an object of",
        ):
            await client.service_ids()
