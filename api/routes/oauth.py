"""`POST /oauth/token`: the password grant the SDK's TokenProviderConf uses."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from api.deps import ServicesDep
from scheduler import accounts

router = APIRouter(tags=["auth"])


def _oauth_error(status: int, error: str, description: str) -> Response:
    # OAuth 2 error shape: the SDK reads `error_description`, then `error`.
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


@router.post("/oauth/token", summary="Get Access Token")
async def token(request: Request, svc: ServicesDep) -> Response:
    """Form-encoded `grant_type=password&username=...&password=...`; returns
    `{"access_token", "expires_in", "token_type"}`. The token is a regular API token."""
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
    if form.get("grant_type", "password") != "password":
        return _oauth_error(400, "unsupported_grant_type", "only the password grant is supported")
    username, password = form.get("username", ""), form.get("password", "")
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
