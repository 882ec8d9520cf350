"""Per-process services of the API and the request dependencies built on them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import redis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings
from core.errors import AuthenticationError
from core.names import RedisKeys
from scheduler.accounts import authenticate
from scheduler.intake import Intake
from scheduler.operations import Canceled

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    sessions: sessionmaker[Session]
    redis: redis.Redis
    intake: Intake
    secret_key: str

    @property
    def keys(self) -> RedisKeys:
        return RedisKeys(self.settings.namespace)

    def wake_dispatcher(self) -> None:
        """Tell the dispatcher work arrived; never fails the request (it also polls)."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.lpush(self.keys.dispatch_wakeup, 1)
            pipe.ltrim(self.keys.dispatch_wakeup, 0, 0)
            pipe.execute()
        except redis.RedisError:
            log.warning("could not wake the dispatcher; it will find the work on its next poll")

    def flag_canceled(self, canceled: Canceled) -> None:
        """Tell workers not to run canceled jobs whose messages may already be queued."""
        if not canceled.jobs:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for job in canceled.jobs:
                pipe.set(self.keys.cancel_flag(job.id), 1, ex=self.settings.job_time_limit_s * 2)
            pipe.execute()
        except redis.RedisError:
            # The jobs are CANCELED in the store; a worker that still runs one reports
            # events the scheduler ignores.
            log.warning("could not flag %d canceled jobs in Redis", len(canceled.jobs))


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def db_session(svc: Annotated[Services, Depends(services)]) -> Iterator[Session]:
    with svc.sessions.begin() as session:
        yield session


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
SessionDep = Annotated[Session, Depends(db_session)]
UserDep = Annotated[str, Depends(current_user)]
