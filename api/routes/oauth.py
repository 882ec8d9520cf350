"""`POST /oauth/token`: the password grant the SDK's TokenProviderConf uses."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response

from api.deps import ServicesDep
from scheduler import accounts

router = APIRouter(tags=["auth"])


def _oauth_error(status: int, error: str, description: str) -> Response:
    # OAuth 2 error shape: the SDK reads `error_description`, then `error`.
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


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
    ttl_s = svc.settings.oauth_token_ttl_s
    with svc.sessions.begin() as session:
        user = accounts.user_by_name(session, username)
        if (
            user is None
            or not user.password_hash
            or not accounts.verify_password(password, user.password_hash)
        ):
            return _oauth_error(401, "invalid_grant", "wrong username or password")
        issued = accounts.create_token(session, user.id, name="oauth", ttl=timedelta(seconds=ttl_s))
    return JSONResponse({"access_token": issued.token, "expires_in": ttl_s, "token_type": "Bearer"})
