"""Registration, login, token refresh rotation, logout and access control basics."""

from __future__ import annotations

import time

import jwt
from fastapi.testclient import TestClient

from tests.conftest import Account, assert_problem


def _register_and_login(client: TestClient, email: str = "shopper@example.com") -> dict:
    r = client.post(
        "/api/v1/auth/register",
        json={"email": email, "password": "s3cret-pass", "full_name": "Ann"},
    )
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/auth/token", data={"username": email, "password": "s3cret-pass"})
    assert r.status_code == 200, r.text
    return r.json()


def test_register_login_me(client: TestClient) -> None:
    tokens = _register_and_login(client)
    me = client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200
    assert me.json()["email"] == "shopper@example.com"
    assert me.json()["role"] == "customer"
    assert "hashed_password" not in me.json()


def test_duplicate_email_is_409_case_insensitive(client: TestClient) -> None:
    _register_and_login(client, "dup@example.com")
    r = client.post(
        "/api/v1/auth/register", json={"email": "DUP@example.com", "password": "another-pass"}
    )
    assert_problem(r, 409)


def test_bad_credentials_401(client: TestClient) -> None:
    _register_and_login(client, "x@example.com")
    r = client.post(
        "/api/v1/auth/token", data={"username": "x@example.com", "password": "nope-nope"}
    )
    assert_problem(r, 401)
    r = client.post("/api/v1/auth/token", data={"username": "ghost@example.com", "password": "x"})
    assert_problem(r, 401)


def test_refresh_rotation_and_reuse_detection(client: TestClient) -> None:
    tokens = _register_and_login(client)
    first = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert first.status_code == 200
    rotated = first.json()["refresh_token"]
    assert rotated != tokens["refresh_token"]
    # Replaying the old token is reuse: refused, and the whole family is revoked.
    assert_problem(
        client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}), 401
    )
    assert_problem(client.post("/api/v1/auth/refresh", json={"refresh_token": rotated}), 401)


def test_access_token_is_not_a_refresh_token(client: TestClient) -> None:
    tokens = _register_and_login(client)
    assert_problem(
        client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["access_token"]}), 401
    )


def test_logout_revokes_refresh(client: TestClient) -> None:
    tokens = _register_and_login(client)
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    r = client.post(
        "/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=headers
    )
    assert r.status_code == 204
    assert_problem(
        client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}), 401
    )


def test_tampered_and_expired_tokens_401(client: TestClient, customer: Account, app) -> None:
    good = client.get("/api/v1/users/me", headers=customer.headers)
    assert good.status_code == 200
    header, payload, sig = customer.token.split(".")
    tampered = f"{header}.{payload}.{sig[:-4]}AAAA"
    assert_problem(
        client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {tampered}"}), 401
    )
    forged = jwt.encode(
        {
            "sub": str(customer.id),
            "role": "admin",
            "typ": "access",
            "jti": "x",
            "exp": int(time.time()) + 60,
            "iss": "cartwise",
        },
        "wrong-secret-" * 4,
        algorithm="HS256",
    )
    assert_problem(
        client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {forged}"}), 401
    )
    secret = app.state.settings.jwt_secret.get_secret_value()
    expired = jwt.encode(
        {
            "sub": str(customer.id),
            "role": "customer",
            "typ": "access",
            "jti": "y",
            "exp": int(time.time()) - 5,
            "iss": "cartwise",
        },
        secret,
        algorithm="HS256",
    )
    body = assert_problem(
        client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {expired}"}), 401
    )
    assert "expired" in body["detail"]
    none_alg = jwt.encode(
        {
            "sub": str(customer.id),
            "role": "admin",
            "typ": "access",
            "jti": "z",
            "exp": int(time.time()) + 60,
            "iss": "cartwise",
        },
        None,
        algorithm="none",
    )
    assert_problem(
        client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {none_alg}"}), 401
    )


def test_no_token_is_401(client: TestClient) -> None:
    r = client.get("/api/v1/users/me")
    body = assert_problem(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    assert body["type"].endswith("unauthorized")


def test_addresses_are_private(client: TestClient, make_user) -> None:
    a, b = make_user(), make_user()
    addr = {
        "full_name": "A",
        "line1": "1 High St",
        "city": "York",
        "postcode": "YO1 1AA",
        "country": "GB",
    }
    r = client.post("/api/v1/users/me/addresses", json=addr, headers=a.headers)
    assert r.status_code == 201
    assert r.json()["is_default"] is True
    address_id = r.json()["id"]
    assert client.get("/api/v1/users/me/addresses", headers=b.headers).json() == []
    assert_problem(
        client.delete(f"/api/v1/users/me/addresses/{address_id}", headers=b.headers), 404
    )
    assert len(client.get("/api/v1/users/me/addresses", headers=a.headers).json()) == 1
