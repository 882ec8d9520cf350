"""A user, their project and a token in one step: `atomfleet admin bootstrap`, the
benchmarks and the tests all make their accounts here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Account:
    user_id: str
    project_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        """What a client sends to authenticate as this user."""
        return {"Authorization": f"Bearer {self.token}"}


def bootstrap(
    session: Session,
    user: str,
    project: str,
    password: str | None = None,
    token_name: str = "",
    ttl: timedelta | None = None,
) -> Account:
    """A new user, member of a new project, with a new API token; the caller commits."""
    from scheduler import accounts

    row = accounts.create_user(session, user, password)
    found = accounts.create_project(session, project)
    accounts.add_member(session, row.id, found.id)
    token = accounts.create_token(session, row.id, name=token_name, ttl=ttl)
    return Account(row.id, found.id, token.token)
