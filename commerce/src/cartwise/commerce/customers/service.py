"""Registration, login, refresh-token rotation and revocation, addresses."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from cartwise.commerce.customers.models import (
    Address,
    AddressCreate,
    RefreshToken,
    TokenPair,
    User,
    UserCreate,
    UserUpdate,
)
from cartwise.platform.auth import (
    Role,
    decode_token,
    hash_password,
    issue_access_token,
    issue_refresh_token,
    verify_password,
)
from cartwise.platform.errors import Conflict, NotFound, Unauthorized
from cartwise.platform.settings import Settings
from cartwise.platform.types import utcnow


def normalize_email(email: str) -> str:
    """Emails compare case-insensitively."""
    return email.strip().lower()


def get_user_by_email(*, session: Session, email: str) -> User | None:
    """The user with this email, if any."""
    return session.exec(select(User).where(User.email == normalize_email(email))).first()


def create_user(*, session: Session, data: UserCreate, role: Role = Role.customer) -> User:
    """Create a user; 409 when the email is taken."""
    email = normalize_email(str(data.email))
    if get_user_by_email(session=session, email=email) is not None:
        raise Conflict("An account with this email already exists.", slug="email-taken")
    user = User(
        email=email,
        full_name=data.full_name.strip(),
        hashed_password=hash_password(data.password),
        role=role,
    )
    session.add(user)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict("An account with this email already exists.", slug="email-taken") from exc
    session.refresh(user)
    return user


def update_user(*, session: Session, user: User, data: UserUpdate) -> User:
    """Change a user's name or password."""
    if data.full_name is not None:
        user.full_name = data.full_name.strip()
    if data.password is not None:
        user.hashed_password = hash_password(data.password)
    session.add(user)
    session.commit()
    session.refresh(user)
    return user


def authenticate(*, session: Session, email: str, password: str) -> User:
    """The user for valid credentials, or 401 (same answer for unknown email and bad password)."""
    user = get_user_by_email(session=session, email=email)
    ok = verify_password(password, user.hashed_password if user else None)
    if user is None or not ok or not user.is_active:
        raise Unauthorized("Incorrect email or password.", slug="bad-credentials")
    return user


def issue_tokens(
    *, session: Session, settings: Settings, user: User, family: str | None = None
) -> TokenPair:
    """A new access/refresh pair; the refresh token is recorded for rotation."""
    assert user.id is not None
    access = issue_access_token(settings, user.id, user.role)
    refresh = issue_refresh_token(settings, user.id, user.role, family)
    claims = decode_token(settings, refresh.token, "refresh")
    session.add(
        RefreshToken(
            jti=refresh.jti,
            user_id=user.id,
            family=str(claims["fam"]),
            expires_at=refresh.expires_at,
        )
    )
    session.commit()
    return TokenPair(
        access_token=access.token,
        refresh_token=refresh.token,
        expires_in=settings.access_token_minutes * 60,
    )


def _revoke_family(session: Session, family: str) -> None:
    session.execute(
        update(RefreshToken)
        .where(col(RefreshToken.family) == family, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=utcnow())
    )


def rotate_refresh_token(*, session: Session, settings: Settings, token: str) -> TokenPair:
    """Exchange a refresh token for a new pair; a reused token revokes its whole family."""
    claims = decode_token(settings, token, "refresh")
    jti = str(claims["jti"])
    # Mark used atomically, so two concurrent refreshes cannot both succeed.
    result = session.execute(
        update(RefreshToken)
        .where(
            col(RefreshToken.jti) == jti,
            col(RefreshToken.used_at).is_(None),
            col(RefreshToken.revoked_at).is_(None),
        )
        .values(used_at=utcnow())
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        stored = session.get(RefreshToken, jti)
        if stored is not None and stored.revoked_at is None:
            # Reuse of a rotated token: someone else has it. Revoke the family.
            _revoke_family(session, stored.family)
            session.commit()
        raise Unauthorized("The refresh token is no longer valid.", slug="refresh-revoked")
    stored = session.get(RefreshToken, jti)
    assert stored is not None
    user = session.get(User, stored.user_id)
    if user is None or not user.is_active:
        session.rollback()
        raise Unauthorized("The account is not active.")
    if stored.expires_at < datetime.now(UTC):
        session.rollback()
        raise Unauthorized("The refresh token has expired.")
    return issue_tokens(session=session, settings=settings, user=user, family=stored.family)


def revoke_refresh_token(*, session: Session, settings: Settings, token: str, user_id: int) -> None:
    """Log out: revoke the token's family (the caller's own tokens only)."""
    claims = decode_token(settings, token, "refresh")
    stored = session.get(RefreshToken, str(claims["jti"]))
    if stored is None or stored.user_id != user_id:
        raise NotFound("Unknown refresh token.")
    _revoke_family(session, stored.family)
    session.commit()


def list_addresses(*, session: Session, user_id: int) -> list[Address]:
    """A user's addresses, default first."""
    stmt = (
        select(Address)
        .where(Address.user_id == user_id)
        .order_by(col(Address.is_default).desc(), col(Address.id))
    )
    return list(session.exec(stmt))


def add_address(*, session: Session, user_id: int, data: AddressCreate) -> Address:
    """Save an address; a new default clears the old one."""
    if data.is_default or not list_addresses(session=session, user_id=user_id):
        session.execute(
            update(Address).where(col(Address.user_id) == user_id).values(is_default=False)
        )
        data.is_default = True
    address = Address(user_id=user_id, **data.model_dump())
    session.add(address)
    session.commit()
    session.refresh(address)
    return address


def get_address(*, session: Session, user_id: int, address_id: int) -> Address:
    """One of the user's addresses, or 404 (also for another user's)."""
    address = session.get(Address, address_id)
    if address is None or address.user_id != user_id:
        raise NotFound("Address not found.")
    return address


def delete_address(*, session: Session, user_id: int, address_id: int) -> None:
    """Remove one of the user's addresses."""
    address = get_address(session=session, user_id=user_id, address_id=address_id)
    session.delete(address)
    session.commit()


def ensure_admin(*, session: Session, email: str, password: str) -> tuple[User, bool]:
    """Create an admin, or promote and reset an existing account; returns (user, created)."""
    user = get_user_by_email(session=session, email=email)
    if user is None:
        user = create_user(
            session=session,
            data=UserCreate(email=email, password=password, full_name="Admin"),
            role=Role.admin,
        )
        return user, True
    user.role = Role.admin
    user.hashed_password = hash_password(password)
    user.is_active = True
    session.add(user)
    session.commit()
    session.refresh(user)
    return user, False
