"""Bearer-token authentication of SSE clients: JSON Web Tokens checked with PyJWT.

A token is taken from, in order: the ``Authorization: Bearer`` header (RFC 6750 section 2.1),
the ``token`` query parameter (RFC 6750 section 2.3, meant for the first connect), or the
HttpOnly cookie the edge sets after such a connect (EventSource cannot send headers).

Keys: an HS256 shared secret, or an RS256/ES256 public key (PEM), or a JWKS file (RFC 7517)
whose keys are chosen by the token's ``kid``. ``exp`` is required; ``exp`` and ``nbf`` are
enforced with a small leeway. An optional ``symbols`` claim (a list of shell-style patterns such
as ``"BTC*"``) restricts the symbols the bearer may stream; without it every symbol is allowed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from fastapi import Request

from .problems import Problem

COOKIE_NAME = "tickstream_token"
ASYMMETRIC = ["RS256", "ES256"]
MIN_SECRET_BYTES = 32  # HS256 keys as long as the hash (RFC 7518 section 3.2)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token allows: ``symbols`` patterns (None: every symbol), until ``expires``
    (seconds since the Unix epoch, leeway included); ``holder`` names who holds it for
    per-token limits: the ``sub`` claim, or a digest of the token when it has none."""

    holder: str
    symbols: tuple[str, ...] | None
    expires: float

    def allows(self, symbol: str) -> bool:
        return self.symbols is None or any(fnmatch.fnmatchcase(symbol, p) for p in self.symbols)


class TokenVerifier:
    """Checks tokens against one configured key source. Raises ValueError at construction when
    no key, or more than one kind of key, is given, or a key file cannot be read."""

    def __init__(
        self,
        *,
        hs256_secret: str | None = None,
        public_key_file: Path | None = None,
        jwks_file: Path | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 10.0,
    ) -> None:
        given = [k for k in (hs256_secret, public_key_file, jwks_file) if k]
        if len(given) != 1:
            raise ValueError("JWT auth needs exactly one of a HS256 secret, a public key or JWKS")
        self._audience, self._issuer, self._leeway = audience, issuer, leeway
        self._jwks: jwt.PyJWKSet | None = None
        self._key: Any = None
        if hs256_secret:
            if len(hs256_secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"the HS256 secret must be at least {MIN_SECRET_BYTES} bytes (RFC 7518 3.2)"
                )
            self._key, self._algorithms = hs256_secret, ["HS256"]
        elif public_key_file:
            self._key, self._algorithms = public_key_file.read_text(), ASYMMETRIC
        else:
            assert jwks_file is not None
            self._jwks = jwt.PyJWKSet.from_json(jwks_file.read_text())
            self._algorithms = ASYMMETRIC

    def verify(self, token: str) -> Grant:
        """The grant of ``token``; raises Problem 401 when it is malformed, unsigned by our key,
        expired, not yet valid, or for another audience or issuer."""
        try:
            key = self._key
            if self._jwks is not None:
                kid = jwt.get_unverified_header(token).get("kid")
                matching = [k for k in self._jwks.keys if k.key_id == kid]
                if not matching:
                    raise jwt.InvalidKeyError("no key in the JWKS has the token's kid")
                key = matching[0]
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp"], "verify_aud": self._audience is not None},
            )
        except jwt.PyJWTError as error:
            raise unauthorized("invalid_token", _describe(error)) from None
        symbols = claims.get("symbols")
        if symbols is not None and not (
            isinstance(symbols, list) and all(isinstance(s, str) for s in symbols)
        ):
            raise unauthorized("invalid_token", "the symbols claim must be a list of strings")
        subject = claims.get("sub")
        holder = f"sub:{subject}" if isinstance(subject, str) and subject else _digest(token)
        return Grant(
            holder=holder,
            symbols=tuple(symbols) if symbols is not None else None,
            expires=float(claims["exp"]) + self._leeway,
        )


def _digest(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def _describe(error: jwt.PyJWTError) -> str:
    """A short reason that never quotes the token."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf)"
    if isinstance(error, jwt.InvalidAudienceError):
        return "the token is for another audience"
    if isinstance(error, jwt.InvalidIssuerError):
        return "the token is from another issuer"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token lacks the {error.claim} claim"
    if isinstance(error, jwt.InvalidSignatureError | jwt.InvalidKeyError):
        return "the token is not signed by a key this edge trusts"
    return "the token is malformed"


def unauthorized(error: str | None, description: str) -> Problem:
    """401 with ``WWW-Authenticate: Bearer`` (RFC 6750 section 3); ``error`` None when no token
    was sent at all."""
    challenge = 'Bearer realm="tickstream"'
    if error is not None:
        challenge += f', error="{error}", error_description="{description}"'
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        description,
        headers={"WWW-Authenticate": challenge},
    )


def token_of(request: Request) -> tuple[str | None, bool]:
    """The request's bearer token and whether it came from the query string (so the edge
    should move it into its HttpOnly cookie). Raises Problem 401 for a malformed
    Authorization header."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized(
                "invalid_request", "the Authorization header is not 'Bearer <token>'"
            )
        return value.strip(), False
    query = request.query_params.get("token")
    if query:  # an explicit new token wins over the cookie an earlier connect left
        return query, True
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        return cookie, False
    return None, False


def authorize(verifier: TokenVerifier, request: Request, symbols: Iterable[str]) -> Grant:
    """The grant for ``request`` to stream ``symbols``. Raises Problem 401 (no or bad token)
    or 403 (a valid token that does not allow one of the symbols)."""
    token, _ = token_of(request)
    if token is None:
        raise unauthorized(None, "a bearer token is required")
    grant = verifier.verify(token)
    denied = [s for s in symbols if not grant.allows(s)]
    if denied:
        raise Problem(
            403,
            "forbidden-symbol",
            "Symbol not allowed",
            f"the token does not allow {', '.join(denied[:10])}",
            symbols=denied[:10],
        )
    return grant


def cookie_header(token: str, request: Request, expires: float) -> str:
    """A ``Set-Cookie`` value keeping ``token`` for the stream's reconnects: HttpOnly, SameSite
    Strict, path-wide, Secure on HTTPS, expiring with the token."""
    max_age = max(0, int(expires - time.time()))
    secure = "; Secure" if request.url.scheme == "https" else ""
    return f"{COOKIE_NAME}={token}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict{secure}"
