"""Users, sign-in with its limits, and browser sessions, in the database.

Sessions are server-side rows (the cookie holds a random id, the table its
SHA-256): signing out or deactivating a user ends every session at once, on
every replica. Failed sign-ins are rows too, so the lockout holds whichever
replica a request reaches. Every function takes the time; none reads a clock.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controller.auth import tenancy
from controller.auth.passwords import Passwords, password_problem
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.auth.security import LoginPolicy, digest, new_secret
from controller.db.auth_tables import LoginAttempt, User, WebSession
from controller.i18n import Refusal


class Unchanged:
    """A change not asked for (None is a value: the province)."""


UNCHANGED = Unchanged()
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")
LAST_SEEN_EVERY_MS = 60_000  # a session's last_seen is written at most once a minute


@dataclass(frozen=True)
class AuthConfig:
    """What sign-in and sessions need from the settings."""

    passwords: Passwords = field(default_factory=Passwords)
    policy: LoginPolicy = field(default_factory=LoginPolicy)
    session_ms: int = 12 * 3_600_000
    idle_ms: int = 120 * 60_000


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise Refusal(422, "error.bad_role") from None


def check_username(username: str) -> str:
    name = username.strip().lower()
    if not USERNAME.match(name):
        raise Refusal(422, "error.bad_username")
    return name


def check_display_name(display_name: str) -> str:
    name = " ".join(display_name.split())
    if not 1 <= len(name) <= 100 or not name.isprintable():
        raise Refusal(422, "error.bad_display_name")
    return name


def check_password(password: str) -> str:
    problem = password_problem(password)
    if problem:
        raise Refusal(422, problem)
    return password


def check_commune(actor: str | None, wanted: str | None, known: Collection[str]) -> str | None:
    """The commune a user is given: one of ``known``, or None (the province's).

    A commune admin gives only their own (and cannot make a province user)."""
    wanted = wanted or None
    if wanted is not None and wanted not in known:
        raise Refusal(422, "error.bad_commune", commune=wanted[:48])
    if not tenancy.may_manage_user(actor, wanted):
        raise Refusal(403, "error.other_commune")
    return wanted


def find_user(db: Session, username: str, scope: str | None = None) -> User:
    """The user of that name, if within ``scope`` (a commune: its users only)."""
    name = username.strip().lower()
    user = db.scalar(select(User).where(User.username == name)) if USERNAME.match(name) else None
    if user is None or not tenancy.may_manage_user(scope, user.commune):
        raise Refusal(404, "error.no_user", username=name[:40])
    return user


def list_users(db: Session, scope: str | None = None) -> list[User]:
    """Every user, or a commune's only."""
    query = select(User).order_by(User.username)
    if scope is not None:
        query = query.where(User.commune == scope)
    return list(db.scalars(query))


def create_user(
    db: Session,
    passwords: Passwords,
    *,
    username: str,
    display_name: str,
    role: str,
    password: str,
    now_ms: int,
    commune: str | None = None,
) -> User:
    """A new active user; the caller commits (and writes the audit entry).

    ``commune`` is the one it acts within (None: the province), checked by the
    caller (``check_commune``)."""
    name = check_username(username)
    display = check_display_name(display_name or name)
    checked_role = parse_role(role).value
    check_password(password)
    if db.scalar(select(User.id).where(User.username == name)) is not None:
        raise Refusal(409, "error.username_taken", username=name)
    user = User(
        username=name,
        display_name=display,
        role=checked_role,
        password_hash=passwords.hash(password),
        active=True,
        created_ms=now_ms,
        commune=commune or None,
    )
    db.add(user)
    try:
        db.flush()
    except IntegrityError:  # another request took the name since the check
        db.rollback()
        raise Refusal(409, "error.username_taken", username=name) from None
    return user


def _active_province_admins(db: Session) -> int:
    """Active administrators of the province (every one, on a site of one commune): only
    they manage every commune, so the last of them must stay."""
    query = select(func.count()).select_from(User)
    return db.scalar(query.where(User.role == "admin", User.active, User.commune.is_(None))) or 0


def update_user(
    db: Session,
    passwords: Passwords,
    actor: Principal,
    user: User,
    *,
    role: str | None = None,
    active: bool | None = None,
    display_name: str | None = None,
    password: str | None = None,
    commune: str | Unchanged | None = UNCHANGED,
) -> dict[str, object]:
    """Apply the changes given; return what changed, for the audit log.

    Nobody demotes or deactivates themselves, and the last active province
    administrator stays one (not demoted, deactivated or moved into a commune):
    the controller can never be left without someone who manages every commune.
    ``commune`` (checked by the caller, ``check_commune``) moves the user to
    another commune, or to the province (None).
    """
    changes: dict[str, object] = {}
    new_role = parse_role(role).value if role is not None else user.role
    new_active = user.active if active is None else active
    new_commune = user.commune if isinstance(commune, Unchanged) else commune
    moved = new_commune != user.commune
    if (new_role != user.role or not new_active or moved) and user.id == actor.user_id:
        raise Refusal(409, "error.self_lockout")
    province_admin = user.role == "admin" and user.active and user.commune is None
    losing = new_role != "admin" or not new_active or new_commune is not None
    if province_admin and losing and _active_province_admins(db) <= 1:
        raise Refusal(409, "error.last_admin")
    if new_role != user.role:
        changes["role"] = [user.role, new_role]
        user.role = new_role
    if moved:
        changes["commune"] = [user.commune, new_commune]
        user.commune = new_commune
        db.execute(delete(WebSession).where(WebSession.user_id == user.id))
    if new_active != user.active:
        changes["active"] = new_active
        user.active = new_active
        if not new_active:
            db.execute(delete(WebSession).where(WebSession.user_id == user.id))
    if display_name is not None:
        name = check_display_name(display_name)
        if name != user.display_name:
            changes["display_name"] = name
            user.display_name = name
    if password is not None:
        set_password(db, passwords, user, password)
        changes["password_changed"] = True
    return changes


def set_password(db: Session, passwords: Passwords, user: User, password: str) -> None:
    """A new password ends every session of the user (a stolen cookie dies with it)."""
    user.password_hash = passwords.hash(check_password(password))
    db.execute(delete(WebSession).where(WebSession.user_id == user.id))


def _lockout(db: Session, policy: LoginPolicy, name: str, ip: str, now_ms: int) -> int | None:
    """When the lockout on this username from this address ends, if one is on now.

    Three counts, each locked after its limit within a window (`LoginPolicy`):
    the username from this address (since its last success from here); the
    address over any usernames; and the username from anywhere, which holds
    only for an address that has never signed in as this user (within
    `policy.known_ms`). So guesses from elsewhere slow every new address down
    but never keep the user out of a place they have signed in from before.
    """
    since = policy.since(now_ms)
    mine = (LoginAttempt.username == name, LoginAttempt.ip == ip)
    known = db.scalar(select(func.max(LoginAttempt.at_ms)).where(*mine, LoginAttempt.succeeded))

    def failures(*where: ColumnElement[bool]) -> list[int]:
        failed = (~LoginAttempt.succeeded, LoginAttempt.at_ms > since)
        return list(db.scalars(select(LoginAttempt.at_ms).where(*failed, *where)))

    counts = [
        (failures(*mine, LoginAttempt.at_ms > (known or since)), policy.max_failures),
        (failures(LoginAttempt.ip == ip), policy.ip_max_failures),
    ]
    if known is None:
        counts.append((failures(LoginAttempt.username == name), policy.max_failures))
    ends = [
        until
        for until in (policy.locked_until(times, limit) for times, limit in counts)
        if until is not None and until > now_ms
    ]
    return max(ends) if ends else None


def _locked(until: int, now_ms: int) -> Refusal:
    seconds = max(1, (until - now_ms + 999) // 1000)
    return Refusal(
        429, "login.locked", headers={"Retry-After": str(seconds)}, minutes=(seconds + 59) // 60
    )


def _forget_old_attempts(
    db: Session, policy: LoginPolicy, name: str, ip: str, now_ms: int, *, ok: bool
) -> None:
    """Failures live for the window and lockout; a success, the latest per username and
    address, for `policy.known_ms` (it makes the address known)."""
    failed = ~LoginAttempt.succeeded & (LoginAttempt.at_ms < policy.since(now_ms))
    stale = LoginAttempt.succeeded & (LoginAttempt.at_ms < now_ms - policy.known_ms)
    db.execute(delete(LoginAttempt).where(failed | stale))
    if ok:
        mine = (LoginAttempt.username == name, LoginAttempt.ip == ip)
        db.execute(delete(LoginAttempt).where(*mine, LoginAttempt.succeeded))


def sign_in(
    db: Session, auth: AuthConfig, username: str, password: str, *, ip: str, now_ms: int
) -> User:
    """The user whose password this is, or a Refusal (wrong: 401, locked out: 429).

    Commits the attempt itself: a failure must be counted even though the
    request fails.
    """
    name = "".join(c for c in username.strip().lower() if c.isprintable())[:64]
    ip = ip[:45]  # as stored
    until = _lockout(db, auth.policy, name, ip, now_ms)
    if until is not None:
        raise _locked(until, now_ms)
    user = db.scalar(select(User).where(User.username == name)) if name else None
    password = password[:1024]
    if user is None:
        auth.passwords.burn(password)
        ok = False
    else:
        ok = auth.passwords.verify(user.password_hash, password) and user.active
    _forget_old_attempts(db, auth.policy, name, ip, now_ms, ok=ok)
    db.add(LoginAttempt(username=name, ip=ip[:45], at_ms=now_ms, succeeded=ok))
    if ok and user is not None and auth.passwords.needs_rehash(user.password_hash):
        user.password_hash = auth.passwords.hash(password)
    db.commit()
    if not ok or user is None:
        until = _lockout(db, auth.policy, name, ip, now_ms)
        if until is not None:
            raise _locked(until, now_ms)
        raise Refusal(401, "login.failed")
    return user


def open_session(
    db: Session, auth: AuthConfig, user: User, ip: str, now_ms: int
) -> tuple[str, WebSession]:
    """A new session for `user`: the cookie value (never stored) and its row."""
    token = new_secret()
    db.execute(delete(WebSession).where(WebSession.expires_ms <= now_ms))
    row = WebSession(
        token_sha256=digest(token),
        user_id=user.id,
        csrf_token=new_secret(),
        created_ms=now_ms,
        last_seen_ms=now_ms,
        expires_ms=now_ms + auth.session_ms,
        ip=ip[:45],
    )
    db.add(row)
    db.flush()
    return token, row


def session_principal(
    db: Session, auth: AuthConfig, token: str, ip: str, now_ms: int
) -> Principal | None:
    """Who holds this session cookie, if the session is alive and its user active."""
    found = db.execute(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.token_sha256 == digest(token))
    ).first()
    if found is None:
        return None
    row, user = found
    if row.expires_ms <= now_ms or row.last_seen_ms + auth.idle_ms <= now_ms or not user.active:
        return None
    if now_ms - row.last_seen_ms >= LAST_SEEN_EVERY_MS:
        row.last_seen_ms = now_ms
        db.commit()
    role = Role(user.role)
    return Principal(
        kind="user",
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=role,
        permissions=PERMISSIONS[role],
        ip=ip,
        csrf_token=row.csrf_token,
        commune=user.commune,
    )


def close_session(db: Session, token: str) -> None:
    db.execute(delete(WebSession).where(WebSession.token_sha256 == digest(token)))
