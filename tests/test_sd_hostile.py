"""
ConsulAgent against answers a Consul agent never gives, but a broken proxy
in front of it may (garbled, HTML or wrongly shaped bodies, a 403 of its
own), and against secrets passed to it the wrong way: the registration is
kept, each outage is one warning, and no secret reaches a message.
"""

from __future__ import annotations

import logging

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from consul_double import ConsulDouble
from fixtures_consul import StubServer, sd_log_records
from fixtures_servers import eventually
from prom_async.aio._consul_client import (
    AgentAnswerError,
    AgentClient,
    parse_agent_address,
)
from prom_async.aio.sd import (
    ConsulAgent,
    ConsulRegistration,
    ConsulRegistrationError,
)


pytestmark = pytest.mark.usefixtures("consul_env_cleared")

SECRET = "s3cr3t-b3ar3r"
SERVICE_ID = "svc-1"
SERVICES = "/v1/agent/services"
REGISTER = "/v1/agent/service/register"
READS = 6
FAST = {
    "request_timeout": 2.0,
    "retry_initial_delay": 0.01,
    "retry_max_delay": 0.05,
    "resync_interval": 0.02,
}


class Answer(NamedTuple):
    status: int
    body: bytes
    content_type: str
    logged: str


PROXY_PAGE = (
    "<html><head><title>Sign in</title></head><body>Proxy sign-in for "
    f"X-Consul-Token {SECRET}</body></html>"
).encode()

GARBLED = {
    "not-utf-8": Answer(
        200,
        b'{"svc-1": {"ID": "svc-1", "Service": "caf\xe9"}}',
        "application/json",
        "Consul answered 200 with a body that is not UTF-8",
    ),
    "html": Answer(
        200,
        PROXY_PAGE,
        "text/html",
        "Consul answered 200 with an HTML page, not JSON",
    ),
    "truncated": Answer(
        200,
        b'{"svc-1": {"ID": "sv',
        "application/json",
        "Consul answered 200 with a body that is not JSON",
    ),
    "empty": Answer(
        200, b"", "application/json", "Consul answered 200 with no body"
    ),
    "array": Answer(
        200,
        b'["svc-1"]',
        "application/json",
        "Consul answered 200 with a JSON array, not an object of services",
    ),
    "null": Answer(
        200,
        b"null",
        "application/json",
        "Consul answered 200 with JSON null, not an object of services",
    ),
    "entries": Answer(
        200,
        b'{"svc-1": true}',
        "application/json",
        "Consul answered 200 with a JSON object whose entries are not all "
        "services",
    ),
    "acl-not-found": Answer(
        403,
        b"ACL not found",
        "text/plain",
        "Consul answered 403: ACL not found; the ACL token is unknown to "
        "the agent",
    ),
    "permission-denied": Answer(
        403,
        b"Permission denied: token with AccessorID "
        b"'00000000-0000-0000-0000-000000000002' lacks permission "
        b"'service:read' on \"svc\"",
        "text/plain",
        "Consul answered 403: Permission denied: token with AccessorID "
        "'00000000-0000-0000-0000-000000000002' lacks permission "
        "'service:read' on \"svc\"; the ACL token may not read services "
        "(service:read)",
    ),
    "proxy-403": Answer(
        403,
        PROXY_PAGE,
        "text/html",
        "Consul answered 403: an HTML page; the read was denied (ACLs, or "
        "a proxy in between)",
    ),
    "proxy-502": Answer(
        502,
        PROXY_PAGE,
        "text/html",
        "Consul answered 502: an HTML page",
    ),
    "echoed-token": Answer(
        404,
        f"no route for token {SECRET}".encode(),
        "text/plain",
        "Consul answered 404: no route for token ***",
    ),
}


def consul_agent(double: ConsulDouble, **options: Any) -> ConsulAgent:
    """
    A ConsulAgent with a token for *double*, resyncing every 20 ms.
    """
    return ConsulAgent(
        "svc",
        SERVICE_ID,
        **{
            "token": SECRET,
            "agent_address": double.address,
            **FAST,
            **options,
        },
    )


@pytest.fixture
async def registration(
    consul_double: ConsulDouble, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[ConsulRegistration]:
    """
    StubServer registered with the double; closed after the test. The log
    is captured from DEBUG on.
    """
    caplog.set_level(logging.DEBUG, logger="prom_async.aio.sd")
    handle = await consul_agent(consul_double).register(StubServer())
    assert handle.is_registered
    consul_double.clear_requests()
    try:
        yield handle
    finally:
        await handle()


async def reads_while(
    double: ConsulDouble,
    registration: ConsulRegistration,
    count: int = READS,
) -> list[bool]:
    """
    Wait for *count* more reads of the service list; what
    ``is_registered`` said meanwhile, at each poll.
    """
    seen: list[bool] = []
    start = len(double.requests_to(SERVICES))

    def enough() -> bool:
        seen.append(registration.is_registered)
        return len(double.requests_to(SERVICES)) - start >= count

    await eventually(enough, what=f"{count} reads of {SERVICES}")
    return seen


def unreadable(double: ConsulDouble, answer: Answer) -> str:
    """
    The warning that starts an outage of reads answered with *answer*.
    """
    return (
        f"Could not read the services of the Consul agent at {double.url}: "
        f"{answer.logged}. Keeping {SERVICE_ID!r} as registered; asking "
        "again every 0.02 s."
    )


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [record.getMessage() for record in sd_log_records(caplog, level)]


class TestResyncAgainstBrokenAnswers:
    @pytest.mark.parametrize("answer", GARBLED.values(), ids=GARBLED.keys())
    async def test_one_warning_and_the_registration_kept(
        self,
        consul_double: ConsulDouble,
        registration: ConsulRegistration,
        caplog: pytest.LogCaptureFixture,
        answer: Answer,
    ) -> None:
        """Reads answered with a body that tells nothing of the services
        keep is_registered, register nothing, and log one warning that
        says what was wrong; the end of it is one info line."""
        caplog.clear()
        consul_double.answer_instead(
            "GET",
            SERVICES,
            status=answer.status,
            body=answer.body,
            content_type=answer.content_type,
        )

        seen = await reads_while(consul_double, registration)

        assert {True} == set(seen)
        assert SERVICE_ID in consul_double.services
        assert [] == consul_double.requests_to(REGISTER)
        assert [] == messages(caplog, logging.ERROR)
        assert [unreadable(consul_double, answer)] == messages(
            caplog, logging.WARNING
        )
        assert [] == messages(caplog, logging.INFO)

        consul_double.answer_normally()
        await eventually(
            lambda: messages(caplog, logging.INFO),
            what="the end of the outage",
        )
        await reads_while(consul_double, registration, 2)

        assert [
            f"Consul agent at {consul_double.url} lists its services again."
        ] == messages(caplog, logging.INFO)
        assert 1 == len(messages(caplog, logging.WARNING))
        assert [] == consul_double.requests_to(REGISTER)
        assert registration.is_registered

    @pytest.mark.parametrize("answer", GARBLED.values(), ids=GARBLED.keys())
    async def test_no_body_or_token_in_the_log(
        self,
        consul_double: ConsulDouble,
        registration: ConsulRegistration,
        caplog: pytest.LogCaptureFixture,
        answer: Answer,
    ) -> None:
        """No line, at any level, shows the body or the token."""
        consul_double.answer_instead(
            "GET",
            SERVICES,
            status=answer.status,
            body=answer.body,
            content_type=answer.content_type,
        )
        await reads_while(consul_double, registration)
        consul_double.answer_normally()
        await reads_while(consul_double, registration, 2)

        assert SECRET not in caplog.text
        assert "sign-in" not in caplog.text
        assert "caf" not in caplog.text

    async def test_forgotten_during_the_outage(
        self,
        consul_double: ConsulDouble,
        registration: ConsulRegistration,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """An agent that lost the service while its answers were garbled
        gets it back once it answers again, not before."""
        html = GARBLED["html"]
        consul_double.answer_instead(
            "GET",
            SERVICES,
            status=html.status,
            body=html.body,
            content_type=html.content_type,
        )
        await consul_double.restart()
        await reads_while(consul_double, registration)

        assert [] == consul_double.requests_to(REGISTER)

        consul_double.answer_normally()
        await eventually(
            lambda: SERVICE_ID in consul_double.services,
            what="re-registration",
        )

        assert 1 == len(consul_double.requests_to(REGISTER))
        assert [] == messages(caplog, logging.ERROR)
        forgotten = (
            f"Consul agent at {consul_double.url} no longer knows "
            f"{SERVICE_ID!r}; registering it again."
        )
        assert [unreadable(consul_double, html), forgotten] == messages(
            caplog, logging.WARNING
        )

    async def test_a_new_problem_is_a_new_warning(
        self,
        consul_double: ConsulDouble,
        registration: ConsulRegistration,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """An outage whose answer changes (an HTML page, then a 403) warns
        once for each; repeats of either are debug lines."""
        for name in ("html", "acl-not-found"):
            answer = GARBLED[name]
            consul_double.answer_instead(
                "GET",
                SERVICES,
                status=answer.status,
                body=answer.body,
                content_type=answer.content_type,
            )
            await reads_while(consul_double, registration)

        assert 2 == len(messages(caplog, logging.WARNING))
        assert {
            f"Services still unreadable: {GARBLED[name].logged}"
            for name in ("html", "acl-not-found")
        } == set(messages(caplog, logging.DEBUG))
        assert registration.is_registered

    async def test_registration_refused_by_a_proxy(
        self, consul_double: ConsulDouble, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A proxy's 403 page for the registration is one error naming the
        status, without the page or the token it echoes."""
        consul_double.answer_instead(
            "PUT",
            REGISTER,
            status=403,
            body=PROXY_PAGE,
            content_type="text/html",
        )
        handle = await consul_agent(consul_double).register(StubServer())
        try:
            await eventually(
                lambda: len(consul_double.requests_to(REGISTER)) >= 3,
                what="several tries",
            )

            assert not handle.is_registered
            assert handle.error is not None
            assert SECRET not in handle.error.message
            refused = (
                f"Consul agent at {consul_double.url} refused to register "
                f"{SERVICE_ID!r}: Consul answered 403: an HTML page "
                "(retrying every 0.05 s in case the token or policy "
                "changes)"
            )
            assert [refused] == messages(caplog, logging.ERROR)
        finally:
            await handle()
        assert SECRET not in caplog.text

    async def test_registration_answered_by_a_proxy_error_page(
        self, consul_double: ConsulDouble, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A proxy's 502 page for the registration is an outage: one
        warning naming the status, not the page."""
        consul_double.answer_instead(
            "PUT",
            REGISTER,
            status=502,
            body=PROXY_PAGE,
            content_type="text/html",
        )
        handle = await consul_agent(consul_double).register(StubServer())
        try:
            await eventually(
                lambda: len(consul_double.requests_to(REGISTER)) >= 3,
                what="several tries",
            )

            assert not handle.is_registered
            outage = (
                f"Consul agent at {consul_double.url} unreachable (Consul "
                f"answered 502: an HTML page); {SERVICE_ID!r} will be "
                "registered when it answers again."
            )
            assert [outage] == messages(caplog, logging.WARNING)
        finally:
            await handle()
        assert SECRET not in caplog.text
        assert "sign-in" not in caplog.text


def _no_secret(error: BaseException) -> None:
    assert SECRET not in str(error)
    assert SECRET not in repr(error)


class TestConsulAgentSecrets:
    @pytest.mark.parametrize(
        ("options", "error", "named"),
        [
            ({"token": SECRET.encode()}, TypeError, "token"),
            ({"token": f"{SECRET}\n"}, ValueError, "token"),
            ({"token": f"{SECRET}\x00"}, ValueError, "token"),
            (
                {
                    "check_headers": {
                        "Authorization": f"Bearer {SECRET}".encode()
                    }
                },
                TypeError,
                "check_headers['Authorization']",
            ),
            (
                {"check_headers": {"Authorization": [f"Bearer {SECRET}", 1]}},
                TypeError,
                "check_headers['Authorization']",
            ),
            (
                {"check_headers": {"Authorization": 7}},
                TypeError,
                "check_headers['Authorization']",
            ),
            (
                {"check_headers": {7: f"Bearer {SECRET}"}},
                TypeError,
                "check_headers names",
            ),
            (
                {"check_headers": [("Authorization", SECRET)]},
                TypeError,
                "check_headers",
            ),
            (
                {"agent_address": f"http://user:{SECRET}@127.0.0.1:8500"},
                ValueError,
                "http://***@127.0.0.1:8500",
            ),
            (
                {"agent_address": f"user:{SECRET}@127.0.0.1:8500"},
                ValueError,
                "***@127.0.0.1:8500",
            ),
            (
                {"agent_address": f"https://{SECRET}@127.0.0.1:bad"},
                ValueError,
                "https://***@127.0.0.1:bad",
            ),
            (
                {"agent_address": f"http://127.0.0.1:8500/?token={SECRET}"},
                ValueError,
                "http://127.0.0.1:8500/?***",
            ),
            (
                {"agent_address": f"http://[::1:8500#{SECRET}"},
                ValueError,
                "it is not a URL",
            ),
            (
                {"agent_address": f"user:{SECRET}@x://127.0.0.1:8500"},
                ValueError,
                "address '***'",
            ),
            (
                {"agent_address": f"http://user:{SECRET}://127.0.0.1:8500"},
                ValueError,
                "address '***'",
            ),
            (
                {"agent_address": "http://:8500"},
                ValueError,
                "it has no host",
            ),
            (
                {"check_url": f"ftp://user:{SECRET}@127.0.0.1/"},
                ValueError,
                "ftp://***@127.0.0.1/",
            ),
            ({"meta": {"key": SECRET.encode()}}, TypeError, "meta['key']"),
            ({"meta": {7: SECRET}}, TypeError, "meta keys"),
            ({"tags": [SECRET.encode()]}, TypeError, "each tag"),
            ({"tags": SECRET}, TypeError, "tags"),
            ({"agent_tls": SECRET}, TypeError, "agent_tls"),
            ({"service_id": SECRET.encode()}, TypeError, "service_id"),
            ({"deregister": SECRET}, TypeError, "deregister"),
            ({"request_timeout": SECRET}, TypeError, "request_timeout"),
            ({"name": SECRET.encode()}, TypeError, "name"),
        ],
        ids=[
            "token-bytes",
            "token-newline",
            "token-nul",
            "header-bytes",
            "header-list-with-int",
            "header-int",
            "header-name-int",
            "headers-list",
            "address-userinfo",
            "address-userinfo-no-scheme",
            "address-userinfo-bad-port",
            "address-query",
            "address-not-a-url",
            "address-at-in-scheme",
            "address-two-schemes",
            "address-no-host",
            "check-url-userinfo",
            "meta-value-bytes",
            "meta-key-int",
            "tag-bytes",
            "tags-str",
            "agent-tls-str",
            "service-id-bytes",
            "deregister-str",
            "request-timeout-str",
            "name-bytes",
        ],
    )
    def test_errors_name_the_option_not_the_secret(
        self, options: dict[str, Any], error: type[Exception], named: str
    ) -> None:
        """A wrong token, header, address or other option is an error that
        names it, never showing the value."""
        with pytest.raises(error) as raised:
            ConsulAgent(**options)

        assert named in str(raised.value)
        _no_secret(raised.value)

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            ("CONSUL_HTTP_ADDR", f"http://user:{SECRET}@127.0.0.1:8500"),
            ("CONSUL_HTTP_TOKEN", f" {SECRET}\r\n"),
        ],
        ids=["address", "token"],
    )
    def test_environment_errors_name_the_variable(
        self, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
    ) -> None:
        """A malformed address or token from the environment is a
        ValueError that names the variable, never showing its value."""
        monkeypatch.setenv(variable, value)

        with pytest.raises(ValueError, match=variable) as raised:
            ConsulAgent()

        _no_secret(raised.value)

    def test_repr(self) -> None:
        """The repr shows neither the token nor the check headers."""
        agent = ConsulAgent(
            token=SECRET, check_headers={"Authorization": f"Bearer {SECRET}"}
        )

        assert SECRET not in repr(agent)

    async def test_token_file_with_control_characters(
        self,
        consul_double: ConsulDouble,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A token file whose token cannot go in a header is one error
        line without its content; the service is registered without a
        token."""
        path = tmp_path / "token"
        path.write_text(f"{SECRET}\x00tail\n", encoding="utf-8")
        monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", str(path))
        handle = await consul_agent(consul_double, token=None).register(
            StubServer()
        )
        try:
            assert handle.is_registered
            assert [None] == [
                r.headers.get("X-Consul-Token")
                for r in consul_double.requests_to(REGISTER)
            ]
            unusable = (
                "Cannot read the Consul token from CONSUL_HTTP_TOKEN_FILE "
                f"{str(path)!r} (the token in it has control characters); "
                "registering without a token."
            )
            assert [unusable] == messages(caplog, logging.ERROR)
        finally:
            await handle()
        assert SECRET not in caplog.text


class TestAgentClientReads:
    @pytest.mark.parametrize(
        ("body", "problem"),
        [
            (b"true", "a JSON boolean, not an object of services"),
            (b'"svc-1"', "a JSON string, not an object of services"),
            (b"1.5", "a JSON number, not an object of services"),
            (b"[" * 100_000, "a body that is not JSON"),
        ],
        ids=["boolean", "string", "number", "deep"],
    )
    async def test_wrong_shapes(
        self, consul_double: ConsulDouble, body: bytes, problem: str
    ) -> None:
        """A service list that is not a JSON object says which JSON it
        is instead."""
        consul_double.answer_instead(
            "GET",
            SERVICES,
            status=200,
            body=body,
            content_type="application/json",
        )
        client = AgentClient(
            parse_agent_address(consul_double.address, default_scheme="http"),
            token=None,
            tls=True,
            request_timeout=2.0,
        )
        try:
            with pytest.raises(AgentAnswerError) as raised:
                await client.service_ids()
        finally:
            await client.close()

        assert (200, f"Consul answered 200 with {problem}") == (
            raised.value.status,
            str(raised.value),
        )


class TestConsulRegistrationErrorText:
    @pytest.mark.parametrize(
        ("message", "shown"),
        [
            ("ACL not found", "ACL not found"),
            ("404 page not found\n", "404 page not found"),
            ("", "no reason given"),
            (" \n", "no reason given"),
            ("<!DOCTYPE html><html>...</html>", "an HTML page"),
            ("x" * 201, "a body of 201 characters"),
            ("first line\nsecond line", "a body of 22 characters"),
        ],
        ids=["reason", "newline", "empty", "blank", "html", "long", "lines"],
    )
    def test_reason_shown_or_described(self, message: str, shown: str) -> None:
        """Consul's one-line reason is shown; anything else is described
        in a few words, and kept whole in message."""
        error = ConsulRegistrationError(403, message)

        assert (f"Consul answered 403: {shown}", message) == (
            str(error),
            error.message,
        )
