"""
prom_async.aio.push's functions: the requests they send (to a recording
double), their retries and errors, and their checks of bad input.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import ssl
import threading
import traceback
import urllib.parse

from pathlib import Path

import aiohttp
import prometheus_client
import pytest

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import generate_latest

from fixtures_pushgateway import GatewayDouble
from fixtures_servers import eventually, free_loopback_port
from prom_async.aio import push as aio_push
from prom_async.aio._push_url import validated_group
from prom_async.aio.push import (
    PushError,
    delete_from_gateway,
    push_to_gateway,
    pushadd_to_gateway,
)


SRC = Path(aio_push.__file__).parent
TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"


def their_url(gateway, job, grouping_key=None) -> str:
    """
    The URL prometheus_client's own delete_from_gateway would request.
    """
    captured = []

    def handler(url, method, timeout, headers, data):
        captured.append(url)
        return lambda: None

    prometheus_client.delete_from_gateway(
        gateway, job, grouping_key, handler=handler
    )
    return captured[0]


# prometheus_client base64-encodes values with spaces from 0.25 on; before,
# it sent them as "+", which the gateway keeps as a plus sign.
THEIRS_ENCODE_SPACES = "@base64" in their_url("gw", "a b")

label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,12}", fullmatch=True)
label_names = label_names.filter(lambda n: n != "job" and n[:2] != "__")
texts = st.text(max_size=16)
if not THEIRS_ENCODE_SPACES:
    texts = texts.filter(lambda text: " " not in text)
gateways = st.sampled_from(
    [
        "pushgateway:9091",
        "pushgateway:9091/",
        "http://pushgateway:9091",
        "https://pushgateway.example",
        "http://pushgateway:9091/prefix/",
        "127.0.0.1:9091",
        "[::1]:9091",
        "HTTP://Pushgateway:9091",
    ]
)


@pytest.fixture
def registry_with_values(registry):
    Gauge("queue_depth", "Jobs waiting.", registry=registry).set(3)
    Counter("rows", "Rows copied.", ["table"], registry=registry).labels(
        "orders"
    ).inc(42)
    return registry


def innermost_frame(error: BaseException) -> str:
    return traceback.extract_tb(error.__traceback__)[-1].filename


class TestGroupURL:
    @settings(max_examples=300, deadline=None)
    @given(
        gateway=gateways,
        job=texts.filter(bool),
        grouping_key=st.dictionaries(
            label_names, texts | st.integers(), max_size=4
        ),
    )
    def test_equals_prometheus_clients(self, gateway, job, grouping_key):
        """The group URL is the one prometheus_client builds, for any job,
        grouping key and form of gateway URL."""
        expected = their_url(gateway, job, grouping_key)

        assert expected == validated_group(gateway, job, grouping_key).url

    @pytest.mark.parametrize(
        ("grouping_key", "path"),
        [
            ({}, "/metrics/job/batch"),
            ({"instance": ""}, "/metrics/job/batch/instance@base64/="),
            (
                {"path": "/var/lib"},
                "/metrics/job/batch/path@base64/L3Zhci9saWI=",
            ),
            (
                {"note": "two words"},
                "/metrics/job/batch/note@base64/dHdvIHdvcmRz",
            ),
            ({"b": "2", "a": 1}, "/metrics/job/batch/a/1/b/2"),
            (
                {"v": "a+b%c?d#é"},
                "/metrics/job/batch/v/a%2Bb%25c%3Fd%23%C3%A9",
            ),
        ],
    )
    def test_escaping(self, grouping_key, path):
        """Empty values and values with / or spaces are base64 (the empty
        one as =); others are percent-encoded; names are sorted."""
        url = validated_group("gw:9091", "batch", grouping_key).url

        assert "http://gw:9091" + path == url

    def test_job_is_escaped_too(self):
        """A job with a slash is sent as job@base64."""
        url = validated_group("gw", "a/b", None).url

        assert "http://gw/metrics/job@base64/YS9i" == url

    @pytest.mark.parametrize(
        "grouping_key",
        [
            {"path": "/var/lib", "empty": ""},
            {"v": "a+b%c?d#é~"},
            {"note": "two words", "n": 7},
        ],
    )
    async def test_sent_as_built(
        self, gateway_double: GatewayDouble, grouping_key
    ):
        """The path on the wire is exactly prometheus_client's: aiohttp
        does not escape it again."""
        await delete_from_gateway(gateway_double.url, "b/j", grouping_key)

        (request,) = gateway_double.requests
        expected = their_url(gateway_double.url, "b/j", grouping_key)
        if not THEIRS_ENCODE_SPACES:
            expected = validated_group(
                gateway_double.url, "b/j", grouping_key
            ).url
        assert urllib.parse.urlsplit(expected).path == request.raw_path


class TestPushToGateway:
    async def test_put_of_the_registry_gzipped(
        self, gateway_double: GatewayDouble, registry_with_values
    ):
        """A PUT of the registry in the text format, gzipped."""
        await push_to_gateway(
            gateway_double.url, "batch", registry_with_values
        )

        (request,) = gateway_double.requests
        assert ("PUT", "/metrics/job/batch") == (
            request.method,
            request.raw_path,
        )
        assert TEXT_0_0_4 == request.headers["Content-Type"]
        assert "gzip" == request.headers["Content-Encoding"]
        assert generate_latest(registry_with_values) == gzip.decompress(
            request.body
        )

    async def test_plain_body(
        self, gateway_double: GatewayDouble, registry_with_values
    ):
        """compression=None sends the text as it is."""
        await push_to_gateway(
            gateway_double.url,
            "batch",
            registry_with_values,
            compression=None,
        )

        (request,) = gateway_double.requests
        assert "Content-Encoding" not in request.headers
        assert generate_latest(registry_with_values) == request.body

    async def test_positional_arguments(self, gateway_double: GatewayDouble):
        """gateway, job, registry, grouping_key and timeout are positional,
        in prometheus_client's order."""
        await push_to_gateway(
            gateway_double.url, "batch", CollectorRegistry(), {"a": "1"}, 5
        )

        assert ["/metrics/job/batch/a/1"] == [
            request.raw_path for request in gateway_double.requests
        ]

    async def test_none_is_the_global_registry(
        self, gateway_double: GatewayDouble
    ):
        """registry=None pushes the global REGISTRY, like
        prometheus_client."""
        await push_to_gateway(
            gateway_double.url, "batch", None, compression=None
        )

        (request,) = gateway_double.requests
        assert b"python_info" in request.body
        assert b"python_info" in generate_latest(REGISTRY)

    async def test_basic_auth(self, gateway_double: GatewayDouble):
        """basic_auth=(user, password) sends an Authorization header."""
        await push_to_gateway(
            gateway_double.url,
            "batch",
            CollectorRegistry(),
            basic_auth=("pusher", "secret"),
        )

        (request,) = gateway_double.requests
        assert (
            "Basic " + base64.b64encode(b"pusher:secret").decode()
            == request.headers["Authorization"]
        )

    async def test_bearer_token(self, gateway_double: GatewayDouble):
        """bearer_token= sends Authorization: Bearer."""
        await push_to_gateway(
            gateway_double.url,
            "batch",
            CollectorRegistry(),
            bearer_token="t0ken",
        )

        (request,) = gateway_double.requests
        assert "Bearer t0ken" == request.headers["Authorization"]

    async def test_session_reused_not_closed(
        self, gateway_double: GatewayDouble
    ):
        """A session= of the application carries the pushes and stays
        open."""
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                await push_to_gateway(
                    gateway_double.url,
                    "batch",
                    CollectorRegistry(),
                    session=session,
                )

            assert not session.closed
        assert 1 == len(
            {request.client_port for request in gateway_double.requests}
        )

    async def test_renders_off_the_event_loop(
        self, gateway_double: GatewayDouble, registry
    ):
        """The registry is collected in a worker thread."""
        threads = []

        class Probe:
            def collect(self):
                threads.append(threading.current_thread())
                return []

        registry.register(Probe())

        await push_to_gateway(gateway_double.url, "batch", registry)

        assert [threading.main_thread()] != threads
        assert 1 == len(threads)

    async def test_collector_error_raises_without_request(
        self, gateway_double: GatewayDouble, registry
    ):
        """A collector that raises makes the push raise that, before any
        request."""

        class Broken:
            def collect(self):
                raise RuntimeError("collector broke")

        registry.register(Broken())

        with pytest.raises(RuntimeError, match="collector broke"):
            await push_to_gateway(gateway_double.url, "batch", registry)
        assert [] == gateway_double.requests


class TestPushaddToGateway:
    async def test_post(self, gateway_double: GatewayDouble, registry):
        """pushadd_to_gateway sends a POST of the registry."""
        Gauge("g", "A gauge.", registry=registry).set(1)

        await pushadd_to_gateway(
            gateway_double.url, "batch", registry, {"i": "x"}
        )

        (request,) = gateway_double.requests
        assert ("POST", "/metrics/job/batch/i/x") == (
            request.method,
            request.raw_path,
        )
        assert generate_latest(registry) == gzip.decompress(request.body)


class TestDeleteFromGateway:
    async def test_delete_without_body(self, gateway_double: GatewayDouble):
        """delete_from_gateway sends a DELETE with no body."""
        await delete_from_gateway(
            gateway_double.url, "batch", {"instance": "a"}, 10
        )

        (request,) = gateway_double.requests
        assert ("DELETE", "/metrics/job/batch/instance/a", b"") == (
            request.method,
            request.raw_path,
            request.body,
        )
        assert "Content-Encoding" not in request.headers
        assert "Content-Type" not in request.headers

    async def test_bearer_token(self, gateway_double: GatewayDouble):
        """Credentials go with a delete too."""
        await delete_from_gateway(
            gateway_double.url, "batch", bearer_token="t0ken"
        )

        (request,) = gateway_double.requests
        assert "Bearer t0ken" == request.headers["Authorization"]


class TestRetries:
    async def test_5xx_retried_until_taken(
        self, gateway_double: GatewayDouble
    ):
        """503 answers are retried; the push succeeds once one is taken."""
        gateway_double.answers = [(503, "busy"), (502, "proxy"), (200, "")]

        await push_to_gateway(gateway_double.url, "batch", CollectorRegistry())

        assert 3 == len(gateway_double.requests)

    async def test_429_retried(self, gateway_double: GatewayDouble):
        """429 Too Many Requests is retried."""
        gateway_double.answers = [(429, "slow down")]

        await delete_from_gateway(gateway_double.url, "batch")

        assert 2 == len(gateway_double.requests)

    async def test_no_timeout_retries_until_taken(
        self, gateway_double: GatewayDouble
    ):
        """timeout=None retries without a deadline."""
        gateway_double.answers = [(503, "")] * 3

        await delete_from_gateway(gateway_double.url, "batch", timeout=None)

        assert 4 == len(gateway_double.requests)

    async def test_5xx_until_the_timeout_raises(
        self, gateway_double: GatewayDouble
    ):
        """A gateway that answers 503 until the timeout: PushError with the
        last status and text, after several attempts."""
        gateway_double.answers = [(503, "still busy")] * 1000

        with pytest.raises(PushError) as caught:
            await push_to_gateway(
                gateway_double.url, "batch", CollectorRegistry(), timeout=0.5
            )

        error = caught.value
        assert (503, "still busy") == (error.status, error.text)
        assert error.attempts == len(gateway_double.requests) > 1
        assert "no success within 0.5 s" in str(error)
        assert "503 Service Unavailable" in str(error)

    async def test_400_raises_at_once(self, gateway_double: GatewayDouble):
        """A 400 is a refusal: raised after one request, with the
        gateway's explanation."""
        gateway_double.answers = [(400, "pushed metrics are invalid")]

        with pytest.raises(PushError) as caught:
            await push_to_gateway(
                gateway_double.url, "batch", CollectorRegistry()
            )

        error = caught.value
        assert (
            "PUT",
            f"{gateway_double.url}/metrics/job/batch",
            400,
            "pushed metrics are invalid",
            1,
        ) == (
            error.method,
            error.url,
            error.status,
            error.text,
            error.attempts,
        )
        assert (
            f"PUT {gateway_double.url}/metrics/job/batch: refused (400 Bad "
            "Request): pushed metrics are invalid"
        ) == str(error)
        assert 1 == len(gateway_double.requests)
        assert isinstance(error, OSError)

    async def test_refusal_with_a_raising_session(
        self, gateway_double: GatewayDouble
    ):
        """A session made with raise_for_status=True still gets the
        refusal as a PushError, at once."""
        gateway_double.answers = [(400, "bad")]

        async with aiohttp.ClientSession(raise_for_status=True) as session:
            with pytest.raises(PushError) as caught:
                await delete_from_gateway(
                    gateway_double.url, "batch", session=session
                )

        assert (400, 1) == (caught.value.status, caught.value.attempts)

    async def test_long_text_is_cut_in_the_message(
        self, gateway_double: GatewayDouble
    ):
        """A long error page is quoted in part; .text has all of it."""
        gateway_double.answers = [(404, "x" * 2000)]

        with pytest.raises(PushError) as caught:
            await delete_from_gateway(gateway_double.url, "batch")

        assert 2000 == len(caught.value.text)
        assert str(caught.value).endswith("x" * 500 + "...")

    async def test_redirect_is_not_followed(
        self, gateway_double: GatewayDouble
    ):
        """A 3xx is not taken for success, nor followed."""
        gateway_double.answers = [(307, "")]

        with pytest.raises(PushError) as caught:
            await delete_from_gateway(gateway_double.url, "batch")

        assert 307 == caught.value.status
        assert 1 == len(gateway_double.requests)

    async def test_connection_refused_until_the_timeout(self):
        """Nothing listening: retried, then PushError without a status,
        caused by the connection error."""
        gateway = f"127.0.0.1:{free_loopback_port()}"

        with pytest.raises(PushError) as caught:
            await delete_from_gateway(gateway, "batch", timeout=0.5)

        error = caught.value
        assert (None, "") == (error.status, error.text)
        assert error.attempts > 1
        assert isinstance(error.__cause__, aiohttp.ClientConnectionError)
        assert "ClientConnectorError" in str(error)

    async def test_hanging_gateway_times_out(
        self, gateway_double: GatewayDouble
    ):
        """A gateway that never answers: PushError at the timeout."""
        gateway_double.answers = [None]

        with pytest.raises(PushError) as caught:
            await delete_from_gateway(gateway_double.url, "batch", timeout=0.3)

        error = caught.value
        assert (None, 1) == (error.status, error.attempts)
        assert "(last: no answer in time)" in str(error)

    async def test_timed_out_attempt_is_retried(
        self, gateway_double: GatewayDouble
    ):
        """A request that times out in the session's own timeout is
        retried."""
        gateway_double.answers = [None]
        timeout = aiohttp.ClientTimeout(total=0.2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await delete_from_gateway(
                gateway_double.url, "batch", session=session
            )

        assert 2 == len(gateway_double.requests)

    async def test_last_failure_is_named(self, gateway_double: GatewayDouble):
        """A request that timed out in the session is named in the
        error."""
        gateway_double.answers = [None] * 100
        timeout = aiohttp.ClientTimeout(total=0.1)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with pytest.raises(PushError, match=r"\(last: timed out\)"):
                await delete_from_gateway(
                    gateway_double.url, "batch", timeout=0.35, session=session
                )

    async def test_cancelled(self, gateway_double: GatewayDouble):
        """Cancelling a push cancels it; nothing is raised but the
        cancellation."""
        gateway_double.answers = [None]
        task = asyncio.create_task(
            delete_from_gateway(gateway_double.url, "batch")
        )
        await eventually(lambda: gateway_double.requests, what="the request")

        task.cancel()

        with pytest.raises(asyncio.CancelledError):
            await task


class TestBadInput:
    @pytest.mark.parametrize(
        ("gateway", "message"),
        [
            ("", "names no host"),
            ("http://", "names no host"),
            ("https:///metrics", "names no host"),
            (":9091", "names no host"),
            ("ftp://gateway", "the scheme must be http or https"),
            ("gateway:port", "the port is not a number"),
            ("gateway:99999", "the port is not a number"),
            ("user:pw@gateway:9091", "holds credentials"),
            ("http://gateway:9091?x=1", "no query or fragment"),
            ("http://gateway:9091#top", "no query or fragment"),
            ("http://gateway:9091/?", "no query or fragment"),
        ],
    )
    async def test_gateway_url(self, gateway, message):
        """A gateway URL that cannot be pushed to: ValueError at the
        call."""
        with pytest.raises(ValueError, match=message) as caught:
            await push_to_gateway(gateway, "batch", CollectorRegistry())

        assert SRC / "_push_url.py" == Path(innermost_frame(caught.value))

    async def test_gateway_not_a_string(self):
        """A gateway that is not a string: TypeError."""
        with pytest.raises(TypeError, match="gateway must be a URL string"):
            await delete_from_gateway(9091, "batch")

    @pytest.mark.parametrize(
        "name", ["", "1st", "a-b", "é", "__reserved", "a b", 7]
    )
    async def test_grouping_key_name(self, name):
        """A grouping key name that is not a label name: ValueError."""
        with pytest.raises(ValueError, match="invalid grouping key label"):
            await delete_from_gateway("gateway", "batch", {name: "x"})

    async def test_grouping_key_with_job(self):
        """'job' in the grouping key: ValueError (the job is its own
        argument)."""
        with pytest.raises(ValueError, match="cannot hold 'job'"):
            await delete_from_gateway("gateway", "batch", {"job": "x"})

    async def test_grouping_key_not_a_mapping(self):
        """A grouping key that is not a mapping: TypeError."""
        with pytest.raises(TypeError, match="grouping_key must be a mapping"):
            await delete_from_gateway("gateway", "batch", [("a", "b")])

    @pytest.mark.parametrize(
        ("job", "error", "message"),
        [
            ("", ValueError, "job must not be empty"),
            (None, TypeError, "job must be a string"),
        ],
    )
    async def test_job(self, job, error, message):
        """An empty job or one that is not a string."""
        with pytest.raises(error, match=message):
            await delete_from_gateway("gateway", job)

    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            ({"timeout": 0}, ValueError, "timeout must be positive"),
            ({"timeout": -1.5}, ValueError, "timeout must be positive"),
            ({"timeout": "30"}, TypeError, "timeout must be a number"),
            ({"timeout": True}, TypeError, "timeout must be a number"),
            ({"compression": "snappy"}, ValueError, "compression must be"),
            ({"basic_auth": "user:pw"}, TypeError, "basic_auth must be"),
            ({"basic_auth": ("u",)}, TypeError, "basic_auth must be"),
            ({"basic_auth": ("u", 1)}, TypeError, "basic_auth must be"),
            ({"basic_auth": ("a:b", "pw")}, ValueError, "invalid basic_auth"),
            ({"bearer_token": ""}, TypeError, "bearer_token must be"),
            ({"bearer_token": 1}, TypeError, "bearer_token must be"),
            (
                {"bearer_token": "t", "basic_auth": ("u", "p")},
                ValueError,
                "not both",
            ),
            ({"ssl_ctx": True}, TypeError, "ssl_ctx must be an ssl"),
            (
                {"ssl_ctx": ssl.create_default_context()},
                ValueError,
                "not https",
            ),
            ({"session": object()}, TypeError, "session must be an aiohttp"),
        ],
    )
    async def test_options(self, options, error, message):
        """An option with a wrong type or value raises at the call."""
        with pytest.raises(error, match=message) as caught:
            await push_to_gateway(
                "gateway", "batch", CollectorRegistry(), **options
            )

        assert "aiohttp" not in innermost_frame(caught.value)

    async def test_closed_session(self):
        """A closed session raises at the call, not inside aiohttp."""
        session = aiohttp.ClientSession()
        await session.close()

        with pytest.raises(ValueError, match="session is closed"):
            await delete_from_gateway("gateway", "batch", session=session)

    async def test_registry(self):
        """A registry that is not a collector: TypeError."""
        with pytest.raises(
            TypeError, match="registry must be a CollectorRegistry"
        ):
            await pushadd_to_gateway("gateway", "batch", {"a": 1})

    async def test_https_with_context(self, gateway_double: GatewayDouble):
        """ssl_ctx is accepted for an https:// gateway, whatever the
        scheme's case (here the handshake fails: the double speaks plain
        HTTP, and a TLS failure is not retried)."""
        gateway = gateway_double.url.replace("http://", "HTTPS://")

        with pytest.raises(PushError) as caught:
            await delete_from_gateway(
                gateway, "batch", ssl_ctx=ssl.create_default_context()
            )

        assert "TLS failed" in str(caught.value)
        assert 1 == caught.value.attempts
