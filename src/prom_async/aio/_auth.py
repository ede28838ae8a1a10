"""
Credentials for the metrics endpoint: HTTP basic auth and bearer tokens.

Basic-auth passwords are stored as bcrypt hashes, the format of Prometheus'
exporter-toolkit web configuration (``basic_auth_users``), so one hash serves
both. Checking a bcrypt hash is slow on purpose, so the checks run in the
exporter's own small pool of threads (never the event loop's default
executor, which the application's ``asyncio.to_thread()`` uses), and that
pool takes only a few waiting checks: past them a check is answered
:attr:`Verdict.BUSY` at once rather than queued.

A successful check is remembered, one credential per configured user, so a
scraper that sends the same credentials every few seconds costs one hash,
not one per scrape, and is never held up by a flood of wrong passwords. Only
a check that succeeded enters that memory, so nothing a client sends can push
a scraper's credential out of it. A wrong credential that was checked is
remembered too, in a small memory of its own that forgets the oldest first,
so that sending it again costs no further hash.

Neither memory holds a password: they hold keyed digests of the credential,
with a key made for each :class:`Authenticator`.
"""

from __future__ import annotations

import binascii
import collections
import enum
import hashlib
import hmac
import logging
import re
import secrets

from base64 import b64decode
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from ._workers import CREDENTIAL_CHECKS, PoolFullError


__all__ = ["Authenticator", "Verdict"]

log = logging.getLogger("prom_async.aio.web")

_REALM: Final = "metrics"
# What bcrypt 4 and 5 read: a known variant, a cost of 4 to 31, and 53
# characters of bcrypt's base64 (the salt, then the digest).
_BCRYPT_HASH: Final = re.compile(
    r"\$2[aby]\$(?:0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}"
)
# bcrypt reads the first 72 bytes of a password. Go's (exporter-toolkit's)
# check ignores the rest, bcrypt >= 5 raises for more.
_BCRYPT_PASSWORD_BYTES: Final = 72
#: How many wrong credentials are remembered, at most.
_REFUSED_MAX: Final = 256


class Verdict(enum.Enum):
    """
    What an ``Authorization`` header gets.
    """

    #: The credential is right, or none is required.
    GRANTED = "granted"
    #: The credential is missing, malformed or wrong (answer 401).
    DENIED = "denied"
    #: Too many credential checks are waiting; ask again later (answer 429).
    BUSY = "busy"


def _load_checkpw() -> Callable[[bytes, bytes], bool]:
    try:
        import bcrypt  # noqa: PLC0415 -- an optional extra, loaded on use
    except ImportError:
        raise ImportError(
            "basic_auth_users needs the bcrypt package (the auth extra): "
            "pip install 'bcrypt>=4'"
        ) from None
    checkpw: Callable[[bytes, bytes], bool] = bcrypt.checkpw
    return checkpw


def _validated_users(users: Mapping[str, str]) -> dict[str, bytes]:
    if not isinstance(users, Mapping):
        raise TypeError(
            "basic_auth_users must be a mapping of user name to bcrypt "
            f"hash, not {type(users).__name__}"
        )
    if not users:
        raise ValueError("basic_auth_users must name at least one user")
    validated = {}
    entries: Iterable[tuple[object, object]] = users.items()
    for user, password_hash in entries:
        if not isinstance(user, str) or not user or ":" in user:
            # Not echoed: a "user:password" key would show the password.
            raise ValueError(
                "each user name in basic_auth_users must be a non-empty "
                "string without ':'"
            )
        if not isinstance(password_hash, str) or not _BCRYPT_HASH.fullmatch(
            password_hash
        ):
            # The value is never echoed: it may be a plain password.
            raise ValueError(
                f"basic_auth_users[{user!r}] must be a bcrypt hash ($2a$, "
                "$2b$ or $2y$, a cost of 04 to 31, $, then 53 characters of "
                "./A-Za-z0-9), as in exporter-toolkit's web configuration"
            )
        validated[user] = password_hash.encode("ascii")
    return validated


def _validated_token(token: str) -> bytes:
    if not isinstance(token, str):
        raise TypeError(
            f"bearer_token must be a string, not {type(token).__name__}"
        )
    if not token or token != token.strip() or not token.isascii():
        raise ValueError(
            "bearer_token must be non-empty ASCII without surrounding "
            "whitespace"
        )
    return hashlib.sha256(token.encode("ascii")).digest()


class Authenticator:
    """
    Decides whether an ``Authorization`` header grants access.

    Args:
        basic_auth_users: User names mapped to bcrypt password hashes.
        bearer_token: The token that ``Authorization: Bearer`` must carry.

    Raises:
        TypeError: An option has the wrong type.
        ValueError: An option is empty or a password is not a bcrypt hash.
        ImportError: Basic auth is asked for and bcrypt is missing.
    """

    __slots__ = (
        "_checkpw",
        "_digest_key",
        "_malformed",
        "_refused",
        "_remembered",
        "_stand_in",
        "_token_digest",
        "_users",
    )

    def __init__(
        self,
        *,
        basic_auth_users: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
    ) -> None:
        self._users: dict[str, bytes] | None = None
        self._checkpw: Callable[[bytes, bytes], bool] | None = None
        self._token_digest: bytes | None = None
        self._stand_in = ""
        self._digest_key = secrets.token_bytes(32)
        # One credential per user: bounded by the configuration.
        self._remembered: dict[str, bytes] = {}
        self._refused: collections.OrderedDict[bytes, None] = (
            collections.OrderedDict()
        )
        self._malformed: set[str] = set()
        if basic_auth_users is not None:
            self._users = _validated_users(basic_auth_users)
            self._checkpw = _load_checkpw()
            # Whose hash an unknown user is checked against.
            self._stand_in = next(iter(self._users))
        if bearer_token is not None:
            self._token_digest = _validated_token(bearer_token)

    @property
    def required(self) -> bool:
        """
        Whether any credential is configured.
        """
        return self._users is not None or self._token_digest is not None

    @property
    def challenges(self) -> tuple[str, ...]:
        """
        The ``WWW-Authenticate`` values for a 401 answer.
        """
        challenges = []
        if self._users is not None:
            challenges.append(f'Basic realm="{_REALM}", charset="UTF-8"')
        if self._token_digest is not None:
            challenges.append(f'Bearer realm="{_REALM}"')
        return tuple(challenges)

    async def is_authorized(self, authorization: str | None) -> bool:
        """
        Whether *authorization* (an ``Authorization`` header) grants access:
        whether :meth:`verdict` is :attr:`Verdict.GRANTED`.
        """
        return await self.verdict(authorization) is Verdict.GRANTED

    async def verdict(self, authorization: str | None) -> Verdict:
        """
        What *authorization* (an ``Authorization`` header) gets.

        Access is always granted when no credential is configured. A basic
        auth credential that no check has answered yet is
        :attr:`Verdict.BUSY` when the pool of credential checks is full.
        """
        if not self.required:
            return Verdict.GRANTED
        if not authorization:
            return Verdict.DENIED
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "bearer" and self._token_digest is not None:
            # aiohttp keeps undecodable header bytes as surrogates; no
            # string with any of them equals the ASCII token.
            sent = credentials.encode("utf-8", "surrogatepass")
            if hmac.compare_digest(
                hashlib.sha256(sent).digest(), self._token_digest
            ):
                return Verdict.GRANTED
            return Verdict.DENIED
        if scheme == "basic" and self._users is not None:
            return await self._basic_verdict(self._users, credentials)
        return Verdict.DENIED

    async def _basic_verdict(
        self, users: dict[str, bytes], credentials: str
    ) -> Verdict:
        decoded = _decode_basic(credentials)
        if decoded is None:
            return Verdict.DENIED
        user, password = decoded
        digest = hashlib.blake2b(
            user.encode() + b":" + password,
            key=self._digest_key,
            digest_size=32,
        ).digest()
        remembered = self._remembered.get(user)
        if remembered is not None and hmac.compare_digest(remembered, digest):
            return Verdict.GRANTED
        if digest in self._refused:
            self._refused.move_to_end(digest)
            return Verdict.DENIED
        known = user in users
        # An unknown user is checked against a configured hash, so the
        # answer takes as long as a known user's; it never matches.
        owner = user if known else self._stand_in
        try:
            matches = await self._check(owner, password, users[owner])
        except PoolFullError:
            return Verdict.BUSY
        if matches and known:
            self._remembered[user] = digest
            return Verdict.GRANTED
        self._refused[digest] = None
        if len(self._refused) > _REFUSED_MAX:
            self._refused.popitem(last=False)
        return Verdict.DENIED

    async def _check(
        self, owner: str, password: bytes, password_hash: bytes
    ) -> bool:
        assert self._checkpw is not None  # noqa: S101 -- narrows for mypy
        try:
            return await CREDENTIAL_CHECKS.run(
                self._checkpw, password, password_hash
            )
        except ValueError:
            # Neither the hash nor a traceback (which could show it) is
            # logged, and only a configured user's name, once.
            if owner not in self._malformed:
                self._malformed.add(owner)
                log.error(  # noqa: TRY400
                    "the bcrypt hash of basic auth user %r is malformed",
                    owner,
                )
            return False


def _decode_basic(credentials: str) -> tuple[str, bytes] | None:
    """
    The user name and password of basic-auth *credentials*, if well formed.

    A password bcrypt would refuse (a NUL byte) or that is not UTF-8 (the
    charset the challenge asks for) is not; one longer than bcrypt's 72
    bytes is cut to them.
    """
    try:
        decoded = b64decode(credentials, validate=True)
        user, colon, password = decoded.partition(b":")
        if colon and b"\0" not in password:
            password.decode()
            return user.decode(), password[:_BCRYPT_PASSWORD_BYTES]
    except (binascii.Error, ValueError):
        # UnicodeDecodeError is a ValueError.
        pass
    return None
