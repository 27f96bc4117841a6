"""JWT access/refresh tokens, argon2 password hashing and one reusable role check."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from cartwise.platform.errors import Forbidden, Unauthorized
from cartwise.platform.settings import Settings

_hasher = PasswordHasher()
# A fixed hash verified on unknown users keeps login timing independent of existence.
_DUMMY_HASH = _hasher.hash("cartwise-timing-equaliser")

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


class Role(StrEnum):
    """Who a principal is; staff and admin reach staff routes."""

    customer = "customer"
    staff = "staff"
    admin = "admin"


ROLE_RANK = {Role.customer: 0, Role.staff: 1, Role.admin: 2}


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, taken from a verified access token."""

    subject: int
    role: Role
    token_id: str

    @property
    def is_staff(self) -> bool:
        """Staff and admins."""
        return ROLE_RANK[self.role] >= ROLE_RANK[Role.staff]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A signed token with its id and expiry."""

    token: str
    jti: str
    expires_at: datetime


def hash_password(password: str) -> str:
    """Argon2id hash of a password."""
    return _hasher.hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    """Check a password; takes the same time whether or not the user exists."""
    try:
        return _hasher.verify(hashed or _DUMMY_HASH, password) and hashed is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _issue(
    settings: Settings,
    subject: int,
    role: Role,
    kind: str,
    ttl: timedelta,
    family: str | None = None,
) -> IssuedToken:
    now = datetime.now(UTC)
    jti = uuid.uuid4().hex
    claims: dict[str, Any] = {
        "sub": str(subject),
        "role": str(role),
        "typ": kind,
        "jti": jti,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "iss": "cartwise",
    }
    if family:
        claims["fam"] = family
    token = jwt.encode(
        claims, settings.jwt_secret.get_secret_value(), algorithm=settings.jwt_algorithm
    )
    return IssuedToken(token=token, jti=jti, expires_at=now + ttl)


def issue_access_token(settings: Settings, subject: int, role: Role) -> IssuedToken:
    """A short-lived access token."""
    return _issue(
        settings, subject, role, "access", timedelta(minutes=settings.access_token_minutes)
    )


def issue_refresh_token(
    settings: Settings, subject: int, role: Role, family: str | None = None
) -> IssuedToken:
    """A long-lived refresh token in a rotation family."""
    return _issue(
        settings,
        subject,
        role,
        "refresh",
        timedelta(days=settings.refresh_token_days),
        family or uuid.uuid4().hex,
    )


def decode_token(settings: Settings, token: str, kind: str) -> dict[str, Any]:
    """Verify a token's signature, expiry, issuer and kind; raise 401 otherwise."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.jwt_secret.get_secret_value(),
            algorithms=[settings.jwt_algorithm],
            issuer="cartwise",
            options={"require": ["exp", "sub", "jti", "typ"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The token has expired.") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("The token is invalid.") from exc
    if claims.get("typ") != kind:
        raise Unauthorized(f"A {kind} token is required.")
    try:
        int(claims["sub"])
        Role(claims["role"])
    except (KeyError, ValueError) as exc:
        raise Unauthorized("The token is invalid.") from exc
    return claims


def _access_claims(request: Request, token: str) -> dict[str, Any]:
    """``decode_token`` of an access token, once per request: the rate limit's key and the
    principal read the same bearer token, and verifying it is a measurable share of a request."""
    memo: tuple[str, dict[str, Any]] | None = getattr(request.state, "access_claims", None)
    if memo is not None and memo[0] == token:
        return memo[1]
    claims = decode_token(request.app.state.settings, token, "access")
    request.state.access_claims = (token, claims)
    return claims


def peek_subject(request: Request) -> str | None:
    """The verified subject of a bearer token, or None; never raises (used for rate keys)."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    try:
        claims = _access_claims(request, header[7:])
    except Unauthorized:
        return None
    return str(claims["sub"])


def _principal(request: Request, token: str | None) -> Principal | None:
    if not token:
        return None
    claims = _access_claims(request, token)
    principal = Principal(
        subject=int(claims["sub"]), role=Role(claims["role"]), token_id=str(claims["jti"])
    )
    request.state.principal = principal
    return principal


async def optional_principal(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Principal | None:
    """The caller if a valid bearer token is present; an invalid one is still a 401."""
    return _principal(request, token)


async def current_principal(
    request: Request, token: Annotated[str | None, Depends(oauth2_scheme)]
) -> Principal:
    """The authenticated caller, or 401."""
    principal = _principal(request, token)
    if principal is None:
        raise Unauthorized("Authentication is required.")
    return principal


def require_roles(
    *roles: Role,
) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that admits only the given roles (403 otherwise)."""
    allowed = frozenset(roles)

    async def dependency(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        if principal.role not in allowed:
            raise Forbidden("Your role does not allow this action.")
        return principal

    return dependency


PrincipalDep = Annotated[Principal, Depends(current_principal)]
OptionalPrincipalDep = Annotated[Principal | None, Depends(optional_principal)]
StaffDep = Annotated[Principal, Depends(require_roles(Role.staff, Role.admin))]
AdminDep = Annotated[Principal, Depends(require_roles(Role.admin))]
