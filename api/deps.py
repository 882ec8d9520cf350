"""Per-process services of the API and the request dependencies built on them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from api.limiter import Limiter
from api.login import PasswordHashing
from api.metrics import ApiMetrics
from api.specs_cache import SpecsCache
from core.config import Settings
from core.errors import AuthenticationError
from core.names import RedisKeys
from scheduler.accounts import authenticate
from scheduler.estimates import QueueEstimator
from scheduler.intake import Intake
from scheduler.specs import DeviceSpecs


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    redis: redis.Redis
    intake: Intake
    specs: DeviceSpecs
    estimator: QueueEstimator
    # Results-link keys: the first signs, any verifies (ATOMFLEET_SECRET_KEY).
    secret_keys: tuple[str, ...]
    metrics: ApiMetrics
    specs_cache: SpecsCache
    limiter: Limiter
    hashing: PasswordHashing

    @property
    def keys(self) -> RedisKeys:
        return RedisKeys(self.settings.namespace)


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


_bearer = HTTPBearer(auto_error=False, description="An API token from `atomfleet admin`.")


def current_user(
    svc: Annotated[Services, Depends(services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The id of the authenticated user."""
    if credentials is None:
        raise AuthenticationError("missing bearer token")
    with svc.sessions() as session:
        return authenticate(session, credentials.credentials).id


ServicesDep = Annotated[Services, Depends(services)]
UserDep = Annotated[str, Depends(current_user)]
