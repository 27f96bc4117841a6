"""Auth and account routes: register, token, refresh, logout, me, addresses."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, status
from fastapi.security import OAuth2PasswordRequestForm

from cartwise.commerce.customers import service
from cartwise.commerce.customers.models import (
    AddressCreate,
    AddressPublic,
    RefreshRequest,
    TokenPair,
    User,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from cartwise.commerce.deps import IntId, PrincipalDep, SessionDep, SettingsDep
from cartwise.platform.errors import PROBLEM_RESPONSES, Unauthorized

auth_router = APIRouter(prefix="/api/v1/auth", tags=["auth"], responses=PROBLEM_RESPONSES)
users_router = APIRouter(prefix="/api/v1/users", tags=["users"], responses=PROBLEM_RESPONSES)


@auth_router.post("/register", response_model=UserPublic, status_code=status.HTTP_201_CREATED)
def register(data: UserCreate, session: SessionDep) -> User:
    """Create a customer account."""
    return service.create_user(session=session, data=data)


@auth_router.post("/token", response_model=TokenPair)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    settings: SettingsDep,
    x_cart_id: Annotated[str | None, Header(max_length=32)] = None,
    x_cart_token: Annotated[str | None, Header(max_length=128)] = None,
) -> TokenPair:
    """Log in with the OAuth2 password form; a guest cart named in headers merges in."""
    if len(form.username) > 254 or len(form.password) > 128:
        raise Unauthorized("Incorrect email or password.", slug="bad-credentials")
    user = service.authenticate(session=session, email=form.username, password=form.password)
    if x_cart_id and x_cart_token:
        from cartwise.commerce.carts.service import merge_guest_cart

        assert user.id is not None
        merge_guest_cart(
            session=session,
            settings=settings,
            user_id=user.id,
            cart_id=x_cart_id,
            token=x_cart_token,
        )
    return service.issue_tokens(session=session, settings=settings, user=user)


@auth_router.post("/refresh", response_model=TokenPair)
def refresh(data: RefreshRequest, session: SessionDep, settings: SettingsDep) -> TokenPair:
    """Rotate a refresh token into a new token pair."""
    return service.rotate_refresh_token(
        session=session, settings=settings, token=data.refresh_token
    )


@auth_router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
def logout(
    data: RefreshRequest, principal: PrincipalDep, session: SessionDep, settings: SettingsDep
) -> None:
    """Revoke a refresh token (and its rotation family)."""
    service.revoke_refresh_token(
        session=session, settings=settings, token=data.refresh_token, user_id=principal.subject
    )


def _me(session: SessionDep, principal: PrincipalDep) -> User:
    user = session.get(User, principal.subject)
    if user is None or not user.is_active:
        raise Unauthorized("The account no longer exists.")
    return user


MeDep = Annotated[User, Depends(_me)]


@users_router.get("/me", response_model=UserPublic)
def read_me(user: MeDep) -> User:
    """The signed-in user."""
    return user


@users_router.patch("/me", response_model=UserPublic)
def update_me(data: UserUpdate, user: MeDep, session: SessionDep) -> User:
    """Change the signed-in user's name or password."""
    return service.update_user(session=session, user=user, data=data)


@users_router.get("/me/addresses", response_model=list[AddressPublic])
def list_my_addresses(principal: PrincipalDep, session: SessionDep) -> list[AddressPublic]:
    """The signed-in user's addresses."""
    return [
        AddressPublic.model_validate(a, from_attributes=True)
        for a in service.list_addresses(session=session, user_id=principal.subject)
    ]


@users_router.post(
    "/me/addresses", response_model=AddressPublic, status_code=status.HTTP_201_CREATED
)
def add_my_address(
    data: AddressCreate, principal: PrincipalDep, session: SessionDep
) -> AddressPublic:
    """Save an address for the signed-in user."""
    address = service.add_address(session=session, user_id=principal.subject, data=data)
    return AddressPublic.model_validate(address, from_attributes=True)


@users_router.delete("/me/addresses/{address_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_my_address(address_id: IntId, principal: PrincipalDep, session: SessionDep) -> None:
    """Remove one of the signed-in user's addresses."""
    service.delete_address(session=session, user_id=principal.subject, address_id=address_id)
