"""Basic auth and bearer tokens attacked as a client would: floods of
password guesses, credentials bcrypt refuses, and what reaches the log."""

from __future__ import annotations

import asyncio
import base64
import logging
import subprocess
import sys
import textwrap
import threading

from collections.abc import Iterator

import aiohttp
import bcrypt
import pytest

from prometheus_client import CollectorRegistry

from fixtures_servers import (
    DEADLINE,
    PASSWORD,
    RunningServer,
    Serve,
    eventually,
    poll,
)
from prom_async.aio._auth import Authenticator, Verdict
from prom_async.aio._workers import CREDENTIAL_CHECKS


#: How many clients guess passwords at once: more than the pool takes.
FLOOD = 24
#: How many checks the pool takes at once, running or waiting.
CAPACITY = CREDENTIAL_CHECKS.workers + (CREDENTIAL_CHECKS.max_pending or 0)
#: What the server answers a guess the pool has no room for.
BUSY_STATUS = 429
TOKEN = "s3cret-token-value"
#: A user name an attacker sends; it must never reach the log.
STRANGER = "stranger-zq7"


def authorization(user: bytes, password: bytes) -> str:
    return "Basic " + base64.b64encode(user + b":" + password).decode()


def guess(number: int, user: bytes = b"prometheus") -> str:
    return authorization(user, f"guess-{number}".encode())


RIGHT = authorization(b"prometheus", PASSWORD.encode())


class Checks:
    """
    Stands in for ``bcrypt.checkpw``: records each call's thread and hash,
    and holds the calls while its gate is closed.
    """

    def __init__(self) -> None:
        self.checkpw = bcrypt.checkpw
        self.gate = threading.Event()
        self.gate.set()
        self.threads: list[str] = []
        self.hashes: list[bytes] = []

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.threads.append(threading.current_thread().name)
        self.hashes.append(hashed)
        self.gate.wait(DEADLINE)
        return bool(self.checkpw(password, hashed))


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Checks]:
    """
    bcrypt.checkpw, counted and gated, for the authenticators made after;
    at the end the gate is open and the pool of checks is empty again.
    """
    recorder = Checks()
    monkeypatch.setattr(bcrypt, "checkpw", recorder)
    try:
        yield recorder
    finally:
        recorder.gate.set()
        poll(
            lambda: CREDENTIAL_CHECKS.busy == 0,
            timeout=10,
            what="the credential checks to end",
        )


@pytest.fixture
async def guarded(
    serve: Serve,
    registry: CollectorRegistry,
    password_hash: str,
    checks: Checks,
) -> RunningServer:
    """
    An exporter (of each kind) that asks "prometheus" and "grafana" for
    PASSWORD, checked by ``checks``.
    """
    return await serve(
        registry=registry,
        basic_auth_users=dict.fromkeys(
            ("prometheus", "grafana"), password_hash
        ),
    )


async def status_of(
    http: aiohttp.ClientSession, url: str, authorization: str | None
) -> int:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with http.get(url, headers=headers) as response:
        await response.read()
        return response.status


async def pool_is_idle() -> None:
    # A worker frees its place just after it hands the result over.
    await eventually(
        lambda: CREDENTIAL_CHECKS.busy == 0,
        what="the credential checks to end",
        timeout=10,
    )


def prom_async_records(
    caplog: pytest.LogCaptureFixture,
) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name.startswith("prom_async")
    ]


class TestPasswordFlood:
    async def test_scrape_and_to_thread_during_flood(
        self,
        guarded: RunningServer,
        http: aiohttp.ClientSession,
        checks: Checks,
    ):
        """While the pool of checks is full of guesses that cannot finish,
        a remembered credential is answered, the application's to_thread
        runs, and guesses past the pool's bound are answered at once."""
        assert CAPACITY < FLOOD
        first = await status_of(http, guarded.metrics_url, RIGHT)
        await pool_is_idle()
        checks.gate.clear()
        flood = [
            asyncio.create_task(
                status_of(http, guarded.metrics_url, guess(number))
            )
            for number in range(FLOOD)
        ]
        try:
            await eventually(
                lambda: sum(task.done() for task in flood) == FLOOD - CAPACITY,
                what="the guesses the pool has no room for to be answered",
                timeout=10,
            )
            during = await asyncio.wait_for(
                status_of(http, guarded.metrics_url, RIGHT), timeout=5
            )
            to_thread = await asyncio.wait_for(
                asyncio.to_thread(threading.current_thread), timeout=5
            )
            waiting = [task for task in flood if not task.done()]
            answered = [task.result() for task in flood if task.done()]
        finally:
            checks.gate.set()
            await asyncio.gather(*flood, return_exceptions=True)

        assert (200, 200) == (first, during)
        assert [BUSY_STATUS] * (FLOOD - CAPACITY) == answered
        assert [401] * CAPACITY == [task.result() for task in waiting]
        assert not to_thread.name.startswith(CREDENTIAL_CHECKS.name)
        assert 1 + CAPACITY == len(checks.threads)
        assert all(
            name.startswith(f"{CREDENTIAL_CHECKS.name}-")
            for name in checks.threads
        ), checks.threads


class TestVerdict:
    async def test_busy_when_the_pool_is_full(
        self, password_hash: str, checks: Checks
    ):
        """A new basic-auth credential is BUSY at once when the pool is
        full; remembered and already refused ones, and bearer tokens, are
        answered without it."""
        authenticator = Authenticator(
            basic_auth_users={"prometheus": password_hash},
            bearer_token=TOKEN,
        )
        before = [
            await authenticator.verdict(RIGHT),
            await authenticator.verdict(guess(-1)),
        ]
        await pool_is_idle()
        checks.gate.clear()
        waiting = [
            asyncio.create_task(authenticator.verdict(guess(number)))
            for number in range(CAPACITY)
        ]
        try:
            await eventually(
                lambda: CREDENTIAL_CHECKS.busy == CAPACITY,
                what="the pool to fill",
                timeout=10,
            )
            during = [
                await authenticator.verdict(header)
                for header in (
                    guess(CAPACITY),
                    guess(CAPACITY, user=STRANGER.encode()),
                    RIGHT,
                    guess(-1),
                    f"Bearer {TOKEN}",
                    "Bearer wrong",
                )
            ]
            still_waiting = sum(not task.done() for task in waiting)
        finally:
            checks.gate.set()
            after = await asyncio.gather(*waiting, return_exceptions=True)

        assert [Verdict.GRANTED, Verdict.DENIED] == before
        assert [
            Verdict.BUSY,
            Verdict.BUSY,
            Verdict.GRANTED,
            Verdict.DENIED,
            Verdict.GRANTED,
            Verdict.DENIED,
        ] == during
        assert CAPACITY == still_waiting
        assert [Verdict.DENIED] * CAPACITY == after
        assert 2 + CAPACITY == len(checks.threads)

    async def test_is_authorized_is_granted(
        self, password_hash: str, checks: Checks
    ):
        """is_authorized() is whether the verdict is GRANTED."""
        authenticator = Authenticator(
            basic_auth_users={"prometheus": password_hash}
        )

        answers = [
            await authenticator.is_authorized(header)
            for header in (RIGHT, guess(1), None)
        ]

        assert [True, False, False] == answers

    async def test_no_credential_configured(self):
        """Without a configured credential everything is GRANTED."""
        authenticator = Authenticator()

        assert Verdict.GRANTED == await authenticator.verdict(None)

    async def test_wrong_credential_is_remembered(
        self,
        password_hash: str,
        checks: Checks,
        monkeypatch: pytest.MonkeyPatch,
    ):
        """A wrong credential sent again costs no second check; a bounded
        number of them is remembered, the oldest forgotten first, and
        none of that makes the right one checked again."""
        monkeypatch.setattr("prom_async.aio._auth._REFUSED_MAX", 2)
        authenticator = Authenticator(
            basic_auth_users={"prometheus": password_hash}
        )

        verdicts = [
            await authenticator.verdict(header)
            for header in (
                RIGHT,
                guess(1),
                guess(1),
                guess(2),
                guess(3),
                guess(3),
                guess(1),
                RIGHT,
            )
        ]

        assert [Verdict.GRANTED] + [Verdict.DENIED] * 6 + [
            Verdict.GRANTED
        ] == verdicts
        # RIGHT, 1, 2, 3 (forgetting 1), 1 again.
        assert 5 == len(checks.threads)

    async def test_unknown_user_is_checked_like_a_known_one(
        self, password_hash: str, checks: Checks
    ):
        """An unknown user costs one check against a configured hash, and
        never matches, even with that user's password."""
        other_hash = bcrypt.hashpw(b"other", bcrypt.gensalt(rounds=4))
        authenticator = Authenticator(
            basic_auth_users={
                "prometheus": password_hash,
                "grafana": other_hash.decode(),
            }
        )

        verdict = await authenticator.verdict(
            authorization(STRANGER.encode(), PASSWORD.encode())
        )

        assert Verdict.DENIED == verdict
        assert [password_hash.encode()] == checks.hashes

    async def test_bearer_token_with_any_surrogate(self):
        """A bearer credential with lone surrogates is DENIED, not an
        error."""
        authenticator = Authenticator(bearer_token=TOKEN)

        verdicts = [
            await authenticator.verdict(f"Bearer {TOKEN}{surrogate}")
            for surrogate in ("\udcff", "\ud800")
        ]

        assert [Verdict.DENIED, Verdict.DENIED] == verdicts


#: Passwords bcrypt refuses or that are not UTF-8; most hold the right one,
#: so that only their odd part makes them wrong.
ODD_PASSWORDS = {
    "long": PASSWORD.encode() + b"x" * 72,
    "long-multibyte": "ü".encode() * 40,
    "nul": PASSWORD.encode() + b"\0",
    "nul-inside": b"\0" + PASSWORD.encode(),
    "not-utf-8": PASSWORD.encode() + b"\xff",
    "latin-1": "pässword".encode("latin-1"),
}


class TestOddPasswords:
    @pytest.mark.parametrize(
        "password", ODD_PASSWORDS.values(), ids=ODD_PASSWORDS.keys()
    )
    @pytest.mark.parametrize("user", [b"prometheus", STRANGER.encode()])
    async def test_refused_without_a_log(
        self,
        guarded: RunningServer,
        http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture,
        user: bytes,
        password: bytes,
    ):
        """A password over 72 bytes, with a NUL byte or not UTF-8 is a plain
        401, for known and unknown users, and nothing is logged."""
        caplog.set_level(logging.DEBUG)

        statuses = [
            await status_of(
                http, guarded.metrics_url, authorization(user, password)
            )
            for _ in range(2)
        ]

        assert [401, 401] == statuses
        assert [] == prom_async_records(caplog)

    @pytest.mark.parametrize(
        "password", ["nul", "nul-inside", "not-utf-8", "latin-1"]
    )
    async def test_not_checked(
        self, password_hash: str, checks: Checks, password: str
    ):
        """A password with a NUL byte or not UTF-8 takes no check."""
        authenticator = Authenticator(
            basic_auth_users={"prometheus": password_hash}
        )

        verdict = await authenticator.verdict(
            authorization(b"prometheus", ODD_PASSWORDS[password])
        )

        assert (Verdict.DENIED, []) == (verdict, checks.threads)

    async def test_long_password_is_cut_to_72_bytes(
        self, password_hash: str, checks: Checks
    ):
        """The check sees the first 72 bytes of a longer password."""
        authenticator = Authenticator(
            basic_auth_users={"prometheus": password_hash}
        )
        seen: list[int] = []

        def measuring(password: bytes, hashed: bytes) -> bool:
            seen.append(len(password))
            return False

        checks.checkpw = measuring

        verdict = await authenticator.verdict(
            authorization(b"prometheus", ODD_PASSWORDS["long"])
        )

        assert (Verdict.DENIED, [72]) == (verdict, seen)


class TestLogs:
    async def test_unreadable_hash_logged_once_per_user(
        self,
        guarded: RunningServer,
        http: aiohttp.ClientSession,
        checks: Checks,
        caplog: pytest.LogCaptureFixture,
        password_hash: str,
    ):
        """A configured hash bcrypt refuses is one ERROR naming its user,
        however many requests hit it; the user names clients send never
        appear in the log."""

        def refusing(password: bytes, hashed: bytes) -> bool:
            raise ValueError("Invalid salt")

        checks.checkpw = refusing
        caplog.set_level(logging.DEBUG)

        statuses = [
            await status_of(http, guarded.metrics_url, header)
            for header in (
                guess(1),
                guess(2, user=STRANGER.encode()),
                guess(3),
                guess(4, user=STRANGER.encode()),
                guess(5, user=b"grafana"),
                RIGHT,
            )
        ]

        assert [401] * 6 == statuses
        assert [
            "the bcrypt hash of basic auth user 'prometheus' is malformed",
            "the bcrypt hash of basic auth user 'grafana' is malformed",
        ] == [record.getMessage() for record in prom_async_records(caplog)]
        assert all(
            record.exc_info is None for record in prom_async_records(caplog)
        )
        assert STRANGER not in caplog.text
        assert PASSWORD not in caplog.text
        assert "guess-" not in caplog.text
        assert password_hash not in caplog.text


class TestConstruction:
    @pytest.mark.parametrize(
        "malformed",
        [
            "$2b$04$" + 53 * "!",
            "$2b$03$" + 53 * "a",
            "$2b$32$" + 53 * "a",
            "$2b$4$" + 54 * "a",
            "$2x$04$" + 53 * "a",
            "$2b$04$" + 52 * "a",
            "$2b$04$" + 53 * "a" + "\n",
            "$2b$04$" + 52 * "a" + "\0",
        ],
        ids=[
            "bad-characters",
            "cost-too-low",
            "cost-too-high",
            "one-digit-cost",
            "unknown-variant",
            "short",
            "newline",
            "nul",
        ],
    )
    def test_unreadable_hash(self, malformed: str):
        """A hash bcrypt cannot read is refused at once, naming the option
        and the user, not the hash."""
        with pytest.raises(ValueError, match="basic_auth_users") as raised:
            Authenticator(basic_auth_users={"prometheus": malformed})

        assert "'prometheus'" in str(raised.value)
        assert malformed not in str(raised.value)

    @pytest.mark.parametrize("variant", ["$2a$", "$2b$", "$2y$"])
    @pytest.mark.parametrize("cost", ["04", "12", "31"])
    def test_readable_hash(self, variant: str, cost: str):
        """Each variant and cost bcrypt reads is taken."""
        authenticator = Authenticator(
            basic_auth_users={"prometheus": f"{variant}{cost}$" + 53 * "a"}
        )

        assert authenticator.required

    @pytest.mark.parametrize(
        "user", ["prometheus:hunter2", "", 42], ids=["colon", "empty", "int"]
    )
    def test_bad_user_name_is_not_echoed(self, password_hash: str, user):
        """A bad user name is refused without repeating it: a
        "user:password" key holds a password."""
        with pytest.raises(ValueError, match="basic_auth_users") as raised:
            Authenticator(basic_auth_users={user: password_hash})

        assert "hunter2" not in str(raised.value)
        assert "42" not in str(raised.value)

    @pytest.mark.parametrize(
        ("token", "error"),
        [
            (f" {TOKEN}", ValueError),
            (f"{TOKEN}\n", ValueError),
            (f"{TOKEN}ü", ValueError),
            (TOKEN.encode(), TypeError),
        ],
        ids=["leading-space", "newline", "non-ascii", "bytes"],
    )
    def test_bad_bearer_token_is_not_echoed(self, token, error):
        """A bad bearer token is refused naming the option, not the token."""
        with pytest.raises(error, match="bearer_token") as raised:
            Authenticator(bearer_token=token)

        assert TOKEN not in str(raised.value)


class TestExit:
    def test_exit_waits_for_running_checks(self):
        """A program that exits while a check runs waits for it: bcrypt's
        native code in a daemon thread at the interpreter's end aborts the
        process (SIGABRT) on Python 3.11 to 3.13."""
        program = textwrap.dedent(
            """
            import asyncio, threading, time
            import bcrypt
            from prom_async.aio._workers import CREDENTIAL_CHECKS

            password_hash = bcrypt.hashpw(b"x", bcrypt.gensalt(4))
            started = threading.Event()

            def check_for_a_while():
                started.set()
                until = time.monotonic() + 0.5
                while time.monotonic() < until:
                    bcrypt.checkpw(b"wrong", password_hash)

            async def main():
                CREDENTIAL_CHECKS.run(check_for_a_while)
                await asyncio.to_thread(started.wait)

            asyncio.run(main())
            """
        )

        finished = subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert (0, "") == (finished.returncode, finished.stderr)
