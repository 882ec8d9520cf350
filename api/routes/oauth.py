"""`POST /oauth/token`: the password grant the SDK's TokenProviderConf uses."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from api.deps import Services, ServicesDep
from api.login import HashingBusy
from api.rate_limit import client_address
from scheduler import accounts

router = APIRouter(tags=["auth"])


def _oauth_error(
    status: int, error: str, description: str, retry_after_s: int | None = None
) -> Response:
    # OAuth 2 error shape: the SDK reads `error_description`, then `error`.
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


class TokenOut(BaseModel):
    access_token: str = Field(description="An API token for `Authorization: Bearer`.")
    expires_in: int = Field(description="Its lifetime in seconds.")
    token_type: str = Field(description="'Bearer'.")


class OAuthError(BaseModel):
    error: str = Field(description="The OAuth 2 error code, e.g. invalid_grant.")
    error_description: str = Field(description="What was wrong.")


@router.post(
    "/oauth/token",
    summary="Get Access Token",
    responses={
        200: {"model": TokenOut},
        400: {"model": OAuthError, "description": "A malformed request or another grant"},
        401: {"model": OAuthError, "description": "Wrong username or password"},
        429: {"model": OAuthError, "description": "Too many failed logins (Retry-After)"},
        503: {"model": OAuthError, "description": "Too many logins at once (Retry-After)"},
    },
)
async def token(request: Request, svc: ServicesDep) -> Response:
    """Form-encoded `grant_type=password&username=...&password=...`; returns
    `{"access_token", "expires_in", "token_type"}`. The token is a regular API token."""
    try:
        text = (await request.body()).decode("utf-8")
        form = {k: v[0] for k, v in parse_qs(text, errors="strict").items()}
    except UnicodeDecodeError:
        return _oauth_error(400, "invalid_request", "the form is not UTF-8")
    if any("\x00" in v for v in form.values()):
        return _oauth_error(400, "invalid_request", "NUL characters are not allowed")
    if form.get("grant_type", "password") != "password":
        return _oauth_error(400, "unsupported_grant_type", "only the password grant is supported")
    username, password = form.get("username", ""), form.get("password", "")
    if len(username) > 200 or len(password) > 1024:
        return _oauth_error(400, "invalid_request", "username or password too long")
    # Database and Redis calls run in the thread pool, the hash in its own bounded pool:
    # the event loop keeps serving other requests while a login works.
    address = client_address(request)
    refusal, stored = await run_in_threadpool(_refusal_and_hash, svc, username, address)
    if refusal is not None:
        return refusal
    try:
        ok, new_hash = await svc.hashing.run(accounts.check_password, password, stored)
    except HashingBusy:
        return _oauth_error(503, "temporarily_unavailable", "too many logins at once", 1)
    if not ok:
        await run_in_threadpool(_count_failure, svc, username, address)
        return _oauth_error(401, "invalid_grant", "wrong username or password")
    ttl_s = svc.settings.oauth_token_ttl_s
    issued = await run_in_threadpool(_issue, svc, username, stored, new_hash, ttl_s)
    if issued is None:
        return _oauth_error(401, "invalid_grant", "wrong username or password")
    return JSONResponse({"access_token": issued.token, "expires_in": ttl_s, "token_type": "Bearer"})


def _failure_limits(svc: Services, username: str, address: str) -> list[tuple[str, str, str]]:
    return [
        (svc.settings.login_failures_per_address, "login-address", address),
        (svc.settings.login_failures_per_user, "login-user", username),
    ]


def _refusal_and_hash(
    svc: Services, username: str, address: str
) -> tuple[Response | None, str | None]:
    """A 429 while this address or user name is over its failed-login limit, else the user's
    stored password hash (None for an unknown user)."""
    for limit, kind, ident in _failure_limits(svc, username, address):
        verdict = svc.limiter.check(limit, kind, ident)
        if not verdict.allowed:
            what = "client address" if kind == "login-address" else "user"
            return _oauth_error(
                429,
                "too_many_attempts",
                f"more than {limit} failed logins for this {what}; try again later",
                verdict.retry_after_s,
            ), None
    with svc.sessions() as session:
        user = accounts.user_by_name(session, username)
        return None, user.password_hash if user is not None else None


def _count_failure(svc: Services, username: str, address: str) -> None:
    for limit, kind, ident in _failure_limits(svc, username, address):
        svc.limiter.hit(limit, kind, ident)


def _issue(
    svc: Services, username: str, stored: str | None, new_hash: str | None, ttl_s: int
) -> accounts.IssuedToken | None:
    """A token for the user; an outdated password hash is replaced by `new_hash` (unless it
    changed since it was read)."""
    with svc.sessions.begin() as session:
        user = accounts.user_by_name(session, username)
        if user is None or user.password_hash != stored:
            return None  # deleted, or its password changed meanwhile
        if new_hash is not None:
            user.password_hash = new_hash
        return accounts.create_token(session, user.id, name="oauth", ttl=timedelta(seconds=ttl_s))
