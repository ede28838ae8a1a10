"""
Credentials for the metrics endpoint: HTTP basic auth and bearer tokens.

Basic-auth passwords are stored as bcrypt hashes, the format of Prometheus'
exporter-toolkit web configuration (``basic_auth_users``), so one hash serves
both. Checking a bcrypt hash is slow on purpose; it runs in a worker thread
and a successful check is remembered, so a scraper that sends the same
credentials every few seconds costs one hash, not one per scrape.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import hmac
import logging

from base64 import b64decode
from collections.abc import Callable, Iterable, Mapping
from typing import Final


__all__ = ["Authenticator"]

log = logging.getLogger("prom_async.aio.web")

_REALM: Final = "metrics"
_BCRYPT_PREFIXES: Final = ("$2a$", "$2b$", "$2y$")
_BCRYPT_HASH_LENGTH: Final = 60
# bcrypt reads the first 72 bytes of a password. Go's (exporter-toolkit's)
# check ignores the rest, bcrypt >= 5 raises for more.
_BCRYPT_PASSWORD_BYTES: Final = 72
_REMEMBERED_MAX: Final = 256


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
            raise ValueError(
                f"basic auth user names must be non-empty strings without "
                f"':', not {user!r}"
            )
        if not isinstance(password_hash, str) or not (
            password_hash.startswith(_BCRYPT_PREFIXES)
            and len(password_hash) == _BCRYPT_HASH_LENGTH
        ):
            # The value is never echoed: it may be a plain password.
            raise ValueError(
                f"the password of basic auth user {user!r} must be a bcrypt "
                "hash ($2b$...), as in exporter-toolkit's web configuration"
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

    __slots__ = ("_checkpw", "_remembered", "_token_digest", "_users")

    def __init__(
        self,
        *,
        basic_auth_users: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
    ) -> None:
        self._users: dict[str, bytes] | None = None
        self._checkpw: Callable[[bytes, bytes], bool] | None = None
        self._token_digest: bytes | None = None
        self._remembered: set[bytes] = set()
        if basic_auth_users is not None:
            self._users = _validated_users(basic_auth_users)
            self._checkpw = _load_checkpw()
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
        Whether *authorization* (an ``Authorization`` header) grants access.

        Access is always granted when no credential is configured.
        """
        if not self.required:
            return True
        if not authorization:
            return False
        scheme, _, credentials = authorization.strip().partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "bearer" and self._token_digest is not None:
            return hmac.compare_digest(
                # aiohttp keeps undecodable header bytes as surrogates.
                hashlib.sha256(
                    credentials.encode("utf-8", "surrogateescape")
                ).digest(),
                self._token_digest,
            )
        if scheme == "basic" and self._users is not None:
            return await self._is_basic_authorized(credentials)
        return False

    async def _is_basic_authorized(self, credentials: str) -> bool:
        assert self._users is not None  # noqa: S101 -- narrows for mypy
        decoded = _decode_basic(credentials)
        if decoded is None:
            return False
        user, password = decoded
        password = password[:_BCRYPT_PASSWORD_BYTES]
        password_hash = self._users.get(user)
        known = password_hash is not None
        if password_hash is None:
            # An unknown user is checked against a configured hash, so the
            # answer takes as long as a known user's; it never matches.
            password_hash = next(iter(self._users.values()))
        memo = hashlib.sha256(
            b"\0".join((user.encode(), password_hash, password))
        ).digest()
        if known and memo in self._remembered:
            return True
        if await self._check(user, password, password_hash) and known:
            if len(self._remembered) >= _REMEMBERED_MAX:
                self._remembered.clear()
            self._remembered.add(memo)
            return True
        return False

    async def _check(
        self, user: str, password: bytes, password_hash: bytes
    ) -> bool:
        assert self._checkpw is not None  # noqa: S101 -- narrows for mypy
        try:
            return await asyncio.get_running_loop().run_in_executor(
                None, self._checkpw, password, password_hash
            )
        except ValueError:
            # Neither the hash nor a traceback (which could show it) is
            # logged.
            log.error(  # noqa: TRY400
                "the bcrypt hash of basic auth user %r is malformed", user
            )
            return False


def _decode_basic(credentials: str) -> tuple[str, bytes] | None:
    """
    The user name and password of basic-auth *credentials*, if well formed.
    """
    try:
        decoded = b64decode(credentials, validate=True)
        user, colon, password = decoded.partition(b":")
        if colon:
            return user.decode(), password
    except (binascii.Error, ValueError):
        # UnicodeDecodeError is a ValueError.
        pass
    return None
