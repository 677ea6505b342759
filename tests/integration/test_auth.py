"""Edge authentication (issue 6): JWT bearer tokens from the header, the HttpOnly cookie or
``?token=``; symbol patterns in the ``symbols`` claim; expiry enforced before and during a
stream; secrets never echoed. Real edges, real tokens (PyJWT), keys made at test time."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support import (
    BTC_FILE,
    ETH_FILE,
    ServiceProcess,
    replay_args,
    spawn,
    start_edge,
    start_feed,
)

SECRET = "s3cret-for-tests-only-0123456789abcdef"


def token(
    key: object = SECRET, algorithm: str = "HS256", ttl: float = 300, **claims: object
) -> str:
    now = time.time()
    payload = {"sub": "tester", "iat": int(now), "exp": int(now + ttl), **claims}
    headers = {"kid": claims.pop("kid")} if "kid" in claims else None
    payload.pop("kid", None)
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def feed() -> Iterator[ServiceProcess]:
    process = start_feed(*replay_args(BTC_FILE, ETH_FILE, speed="4", loop=True))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def hs_edge(feed: ServiceProcess) -> Iterator[ServiceProcess]:
    edge = start_edge(
        feed.port, "--auth", "jwt", "--jwt-leeway", "0", env={"EDGE_JWT_SECRET": SECRET}
    )
    yield edge
    edge.stop()


def first_event(url: str, **kwargs: object) -> tuple[httpx.Response, str | None]:
    """Open ``url``; the response and the name of its first event (None when not 200)."""
    with httpx.Client(timeout=20) as http, http.stream("GET", url, **kwargs) as response:  # type: ignore[arg-type]
        if response.status_code != 200:
            response.read()
            return response, None
        for line in response.iter_lines():
            if line.startswith("event: "):
                return response, line.removeprefix("event: ")
    return response, None


def test_missing_or_bad_tokens_get_401_problems_with_a_bearer_challenge(
    hs_edge: ServiceProcess,
) -> None:
    base = f"http://127.0.0.1:{hs_edge.port}"
    now = time.time()
    cases = {
        "no token": ({}, None),
        "garbage": ({"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
        "wrong scheme": ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_request"),
        "other key": (
            {"Authorization": f"Bearer {token('another-secret-0123456789abcdef-long-enough')}"},
            "invalid_token",
        ),
        "expired": ({"Authorization": f"Bearer {token(ttl=-30)}"}, "invalid_token"),
        "not yet valid": (
            {"Authorization": f"Bearer {token(nbf=int(now + 600))}"},
            "invalid_token",
        ),
        "no exp": (
            {"Authorization": f"Bearer {jwt.encode({'sub': 'x'}, SECRET)}"},
            "invalid_token",
        ),
        "alg none": (
            {
                "Authorization": "Bearer "
                + jwt.encode({"exp": int(now + 60)}, None, algorithm="none")
            },
            "invalid_token",
        ),
    }
    for name, (headers, error) in cases.items():
        response, _ = first_event(f"{base}/sse/BTCUSDT", headers=headers)
        assert response.status_code == 401, name
        assert response.headers["content-type"] == "application/problem+json", name
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="tickstream"'), name
        assert (f'error="{error}"' in challenge) if error else ("error=" not in challenge), name
        body = response.json()
        assert body["status"] == 401 and body["type"].endswith("/unauthorized"), name
        for header in headers.values():  # the token is never echoed back
            assert header.split()[-1] not in response.text, name
    assert httpx.get(f"{base}/symbols").status_code == 401
    assert httpx.get(f"{base}/healthz").status_code == 200, "health stays open"
    assert httpx.get(f"{base}/readyz").status_code == 200


def test_header_cookie_and_query_tokens_and_the_symbols_claim(hs_edge: ServiceProcess) -> None:
    base = f"http://127.0.0.1:{hs_edge.port}"
    full = token()
    response, event = first_event(
        f"{base}/sse/BTCUSDT", headers={"Authorization": f"Bearer {full}"}
    )
    assert (response.status_code, event) == (200, "trade") or event == "quote"
    listed = httpx.get(f"{base}/symbols", headers={"Authorization": f"Bearer {full}"})
    assert [s["symbol"] for s in listed.json()["symbols"]] == ["BTCUSDT", "ETHUSDT"]

    eth_only = token(symbols=["ETH*"])
    auth = {"Authorization": f"Bearer {eth_only}"}
    assert first_event(f"{base}/sse/ETHUSDT", headers=auth)[0].status_code == 200
    denied, _ = first_event(f"{base}/sse?symbols=ETHUSDT,BTCUSDT", headers=auth)
    assert denied.status_code == 403
    assert denied.json()["symbols"] == ["BTCUSDT"]
    assert denied.json()["type"].endswith("/forbidden-symbol")

    # ?token= on the first connect: the edge answers with an HttpOnly cookie for reconnects.
    response, event = first_event(f"{base}/sse/ETHUSDT?token={eth_only}")
    assert response.status_code == 200 and event in ("trade", "quote")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"tickstream_token={eth_only};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    again, _ = first_event(f"{base}/sse/ETHUSDT", cookies={"tickstream_token": eth_only})
    assert again.status_code == 200 and "set-cookie" not in again.headers
    # An explicit ?token= wins over an older, narrower cookie (page code cannot clear it).
    wider, _ = first_event(
        f"{base}/sse/BTCUSDT?token={full}", cookies={"tickstream_token": eth_only}
    )
    assert wider.status_code == 200
    assert (
        first_event(f"{base}/sse/BTCUSDT", cookies={"tickstream_token": eth_only})[0].status_code
        == 403
    )


def test_a_token_expiring_mid_stream_ends_the_stream_with_a_final_event(
    hs_edge: ServiceProcess,
) -> None:
    short = token(ttl=3)
    url = f"http://127.0.0.1:{hs_edge.port}/sse/BTCUSDT"
    started = time.monotonic()
    last = None
    with (
        httpx.Client(timeout=30) as http,
        http.stream("GET", url, headers={"Authorization": f"Bearer {short}"}) as response,
    ):
        assert response.status_code == 200
        for event in iter_events_sync(response):
            last = event
    assert last is not None and last[0] == "disconnect"
    assert json.loads(last[1])["reason"] == "token_expired"
    assert 1.5 < time.monotonic() - started < 10
    assert not any(short in line for line in hs_edge.lines), "tokens never reach the logs"


def iter_events_sync(response: httpx.Response) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a synchronous SSE response."""
    name, data = "message", ""
    for line in response.iter_lines():
        if not line:
            if data:
                yield name, data
            name, data = "message", ""
        elif line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")


def test_rs256_public_key_and_es256_jwks_with_key_ids(feed: ServiceProcess, tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "rsa.pem").write_bytes(pem)
    ec_keys = {kid: ec.generate_private_key(ec.SECP256R1()) for kid in ("k1", "k2")}
    jwks = {
        "keys": [
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key())), "kid": kid}
            for kid, k in ec_keys.items()
        ]
    }
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    rs_edge = start_edge(feed.port, "--auth", "jwt", "--jwt-public-key", str(tmp_path / "rsa.pem"))
    es_edge = start_edge(
        feed.port,
        "--auth",
        "jwt",
        "--jwt-jwks",
        str(tmp_path / "jwks.json"),
        "--jwt-audience",
        "ts",
    )
    try:
        rs_url = f"http://127.0.0.1:{rs_edge.port}/sse/BTCUSDT"
        good = token(rsa_key, "RS256")
        assert (
            first_event(rs_url, headers={"Authorization": f"Bearer {good}"})[0].status_code == 200
        )
        hs_forged = forged_hs256({"exp": int(time.time() + 60)}, pem)
        assert (
            first_event(rs_url, headers={"Authorization": f"Bearer {hs_forged}"})[0].status_code
            == 401
        )

        es_url = f"http://127.0.0.1:{es_edge.port}/sse/ETHUSDT"
        for kid, key in ec_keys.items():
            signed = token(key, "ES256", aud="ts", kid=kid)
            assert (
                first_event(es_url, headers={"Authorization": f"Bearer {signed}"})[0].status_code
                == 200
            )
        wrong_kid = token(ec_keys["k1"], "ES256", aud="ts", kid="k2")
        other_aud = token(ec_keys["k1"], "ES256", aud="other", kid="k1")
        for bad in (wrong_kid, other_aud):
            assert (
                first_event(es_url, headers={"Authorization": f"Bearer {bad}"})[0].status_code
                == 401
            )
    finally:
        rs_edge.stop()
        es_edge.stop()


def forged_hs256(claims: dict[str, object], secret: bytes) -> str:
    """The classic algorithm-confusion forgery: HS256 "signed" with the public key as secret
    (built by hand: PyJWT refuses to do it)."""

    def b64(raw: bytes) -> bytes:
        return base64.urlsafe_b64encode(raw).rstrip(b"=")

    signing = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(claims).encode())
    return (signing + b"." + b64(hmac.new(secret, signing, hashlib.sha256).digest())).decode()


def test_auth_without_a_key_or_with_a_short_secret_is_a_configuration_error(
    feed: ServiceProcess,
) -> None:
    cases = [
        ({}, "JWT auth needs exactly one"),
        ({"EDGE_JWT_SECRET": "abc"}, "must be at least 32 bytes"),
    ]
    for env, message in cases:
        edge = spawn("edge", "edge_service", ["--port", "0", "--auth", "jwt"], env)
        try:
            assert edge.popen.wait(30) == 2
            edge.wait_for_line(f"invalid configuration: .*{message}")
        finally:
            edge.kill()
