"""`xaso controller` (run the web app), `xaso controller migrate` (upgrade its database
once, before replicas start) and `xaso user` (accounts from the shell).

Registered by `cli/main.py`; the heavy modules are imported only when one of
these commands runs, so `xaso agent` never loads the web stack. A refusal is
one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from pathlib import Path
from typing import Any

from plumbing.clock import wall_ms

ROLES = ("admin", "broadcaster", "technician", "officer")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "controller", help="run the controller's web app (`controller migrate`: the database)"
    )
    run.add_argument("--config", help="the controller's TOML configuration (required)")
    run.set_defaults(func=_controller)
    steps = run.add_subparsers(dest="step", metavar="STEP")
    migrate = steps.add_parser(
        "migrate", help="bring the database to the newest schema, under the migration lock"
    )
    # SUPPRESS: given after `migrate` or before it, --config lands in the same place
    migrate.add_argument("--config", default=argparse.SUPPRESS, help="as for the controller")
    migrate.set_defaults(func=_migrate)

    user = sub.add_parser("user", help="controller accounts: add a user, reset a password")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_sub.add_parser("add", help="add a user (prints a new password unless given one)")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--name", default="", help="the full name shown in the UI")
    reset = user_sub.add_parser("passwd", help="give a user a new password")
    reset.add_argument("username")
    listing = user_sub.add_parser("list", help="list users")
    for p in (add, reset, listing):
        p.add_argument("--config", required=True, help="the controller's TOML configuration")
    for p in (add, reset):
        p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=_user_add)
    reset.set_defaults(func=_user_passwd)
    listing.set_defaults(func=_user_list)


def _refuse(message: object) -> int:
    print(f"xaso: {message}", file=sys.stderr)
    return 2


def _controller(args: argparse.Namespace) -> int:
    from controller.settings import SettingsError, load_settings

    if args.config is None:
        return _refuse("controller: give --config FILE (the controller's configuration)")
    try:
        settings = load_settings(Path(args.config))
    except SettingsError as exc:
        return _refuse(exc)
    if settings.http.workers > 1:  # a parent that only supervises: it imports no app
        from controller.serving import serve_workers

        return serve_workers(settings)
    from controller.app import serve
    from controller.db.engine import MigrationError

    try:
        return serve(settings)
    except (SettingsError, MigrationError) as exc:
        return _refuse(exc)


def _migrate(args: argparse.Namespace) -> int:
    from controller.db.engine import MigrationError, upgrade
    from controller.settings import SettingsError, load_settings

    if args.config is None:
        return _refuse("controller migrate: give --config FILE (the controller's configuration)")
    try:
        applied = upgrade(load_settings(Path(args.config)).database_url)
    except (SettingsError, MigrationError) as exc:
        return _refuse(exc)
    print(f"Applied {', '.join(applied)}." if applied else "The schema was already the newest.")
    return 0


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password to set, and whether it was made here (and must be shown)."""
    if args.password_stdin:
        if sys.stdin.isatty():
            return getpass.getpass(), False
        return sys.stdin.readline().rstrip("\n"), False
    return secrets.token_urlsafe(12), True


def _open(config: str) -> Any:
    """The settings, the database session and the sign-in config for `config`."""
    from controller.app import auth_config
    from controller.db.engine import make_engine, session_factory, upgrade
    from controller.settings import load_settings

    settings = load_settings(Path(config))
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    return session_factory(engine)(), auth_config(settings), engine


def _with_db(handler: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from controller.i18n import Refusal
        from controller.settings import SettingsError

        try:
            db, auth, engine = _open(args.config)
        except SettingsError as exc:
            return _refuse(exc)
        try:
            code: int = handler(args, db, auth)
            return code
        except Refusal as exc:
            return _refuse(exc.text("en"))
        finally:
            db.close()
            engine.dispose()

    return run


@_with_db
def _user_add(args: argparse.Namespace, db: Any, auth: Any) -> int:

    from controller.auth.accounts import create_user
    from controller.auth.audit import audit

    password, generated = _password(args)
    user = create_user(
        db,
        auth.passwords,
        username=args.username,
        display_name=args.name,
        role=args.role,
        password=password,
        now_ms=wall_ms(),
    )
    audit(db, None, "user.create", f"user:{user.username}", {"role": user.role}, actor_name="cli")
    db.commit()
    print(f"Added {user.username} ({user.role}).")
    if generated:
        print(f"Password: {password}")
    return 0


@_with_db
def _user_passwd(args: argparse.Namespace, db: Any, auth: Any) -> int:
    from controller.auth.accounts import find_user, set_password
    from controller.auth.audit import audit

    password, generated = _password(args)
    user = find_user(db, args.username)
    set_password(db, auth.passwords, user, password)
    details = {"password_changed": True}
    audit(db, None, "user.update", f"user:{user.username}", details, actor_name="cli")
    db.commit()
    print(f"New password set for {user.username}.")
    if generated:
        print(f"Password: {password}")
    return 0


@_with_db
def _user_list(args: argparse.Namespace, db: Any, auth: Any) -> int:
    from controller.auth.accounts import list_users

    for user in list_users(db):
        state = "active" if user.active else "inactive"
        print(f"{user.username}\t{user.role}\t{state}\t{user.display_name}")
    return 0
