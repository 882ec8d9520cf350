"""Users, projects, memberships and API tokens (stored hashed, shown once)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import AuthenticationError, InvalidRequestError, NotFoundError
from scheduler.models import ApiToken, Membership, Project, User, utcnow
from scheduler.webhooks.signing import new_secret

TOKEN_PREFIX = "af_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# argon2id at OWASP's current guidance (19 MiB, 2 passes, 1 lane): ~20-40 ms of one core.
_ARGON2 = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return _ARGON2.hash(password)


def verify_password(password: str, stored: str) -> bool:
    """`password` against an argon2id hash, or an older `scrypt$salt$digest` one."""
    if stored.startswith("$argon2"):
        try:
            return _ARGON2.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
    try:
        _, salt_hex, digest_hex = stored.split("$")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return hmac.compare_digest(digest.hex(), digest_hex)


def needs_rehash(stored: str) -> bool:
    """A hash older than the current algorithm or its parameters (upgraded on login)."""
    return not stored.startswith("$argon2id$") or _ARGON2.check_needs_rehash(stored)


@functools.cache
def _dummy_hash() -> str:
    return _ARGON2.hash(secrets.token_urlsafe(16))


def check_password(password: str, stored: str | None) -> tuple[bool, str | None]:
    """Whether `password` matches `stored`, and the hash to store instead when it does and
    `stored` is outdated. Without a stored hash (an unknown user), the same work against a
    dummy hash: the time taken does not tell whether the user exists."""
    if not stored:
        verify_password(password, _dummy_hash())
        return False, None
    if not verify_password(password, stored):
        return False, None
    return True, hash_password(password) if needs_rehash(stored) else None


def create_user(session: Session, name: str, password: str | None = None) -> User:
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise InvalidRequestError.single("name", f"a user named {name!r} already exists")
    user = User(name=name, password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    return user


def create_project(session: Session, name: str) -> Project:
    project = Project(name=name, weight=1.0, webhook_secret=new_secret())
    session.add(project)
    session.flush()
    return project


def add_member(session: Session, user_id: str, project_id: str) -> None:
    if session.get(User, user_id) is None:
        raise NotFoundError("user", user_id)
    if session.get(Project, project_id) is None:
        raise NotFoundError("project", project_id)
    if session.get(Membership, (user_id, project_id)) is None:
        session.add(Membership(user_id=user_id, project_id=project_id))
        session.flush()


@dataclass(frozen=True)
class IssuedToken:
    id: str
    token: str


def create_token(
    session: Session, user_id: str, name: str = "", ttl: timedelta | None = None
) -> IssuedToken:
    """A new API token for `user_id`; the plain token exists only in the return value."""
    if session.get(User, user_id) is None:
        raise NotFoundError("user", user_id)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        user_id=user_id,
        token_hash=hash_token(token),
        name=name,
        expires_at=utcnow() + ttl if ttl else None,
    )
    session.add(row)
    session.flush()
    return IssuedToken(id=row.id, token=token)


def revoke_token(session: Session, token_id: str) -> None:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError("token", token_id)
    row.revoked_at = row.revoked_at or utcnow()


def authenticate(session: Session, token: str, now: datetime | None = None) -> User:
    """The user owning a valid (known, unexpired, unrevoked) token."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    now = now or utcnow()
    if row is None or row.revoked_at is not None:
        raise AuthenticationError("invalid token")
    if row.expires_at is not None and row.expires_at <= now:
        raise AuthenticationError("token expired")
    user = session.get(User, row.user_id)
    if user is None:
        raise AuthenticationError("invalid token")
    return user


def user_by_name(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def is_member(session: Session, user_id: str, project_id: str) -> bool:
    return session.get(Membership, (user_id, project_id)) is not None


def project_ids_of(session: Session, user_id: str) -> list[str]:
    return list(session.scalars(select(Membership.project_id).where(Membership.user_id == user_id)))
