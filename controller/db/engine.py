"""Engines and schema upgrades for SQLite files and PostgreSQL URLs.

SQLite gets WAL and a busy timeout so that ingest and the web app, in one
process or several, can share the file, and auto_vacuum=INCREMENTAL so that
what retention prunes is given back; PostgreSQL is used as it comes.
The schema is only ever made by Alembic (`upgrade`), never by create_all,
so a test database is built exactly as a production one is.

Several replicas share one database and each may upgrade it as it starts, so
`upgrade` runs under a lock: a PostgreSQL advisory lock (held across hosts),
or for SQLite, which lives on one host, a file lock beside the database. The
first process applies the migrations; the others wait, then find nothing to do.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
MIGRATION_LOCK_KEY = 0x7861736F6D696772  # "xasomigr": one advisory lock per database
LOCK_WAIT_S = 600.0  # how long a replica waits for another one's migrations
SQLITE_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL


class MigrationError(Exception):
    """The schema cannot be brought to, or is not at, the version this controller needs."""


def make_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite, WAL, foreign keys and a 10 s busy wait."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 10})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            # before anything is written, so a new file frees pruned pages (fleet/rollups.py)
            cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, wait_s: float = LOCK_WAIT_S) -> list[str]:
    """Bring the database at `url` to the newest schema (every branch head), under the
    migration lock; returns the revisions this call applied, none if another had."""
    cfg = alembic_config(url)
    applied: list[str] = []
    cfg.attributes["applied"] = applied  # filled by migrations/env.py
    with migration_lock(url, wait_s):
        command.upgrade(cfg, "heads")
        if url.startswith("sqlite") and make_url(url).database not in (None, "", ":memory:"):
            _incremental_vacuum_on(url)
    return applied


def _incremental_vacuum_on(url: str) -> None:
    """Make an SQLite file one that can shrink: auto_vacuum=INCREMENTAL only takes
    hold on an existing file through a VACUUM, which rewrites it once (it needs
    the file's size again in free disk space for a moment)."""
    engine = make_engine(url)
    try:
        with engine.connect() as plain:
            conn = plain.execution_options(isolation_level="AUTOCOMMIT")
            if conn.exec_driver_sql("PRAGMA auto_vacuum").scalar() != SQLITE_INCREMENTAL:
                conn.exec_driver_sql("VACUUM")  # the connect pragma already asked for it
    finally:
        engine.dispose()


def check_schema(url: str) -> None:
    """Raise `MigrationError` unless the database is at every head this code knows."""
    script = ScriptDirectory.from_config(alembic_config(url))
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    heads = set(script.get_heads())
    if current == heads:
        return
    unknown = current - {rev.revision for rev in script.walk_revisions()}
    if unknown:
        raise MigrationError(
            f"the database is at {sorted(unknown)}, which this controller does not know:"
            " a newer version migrated it; run that version"
        )
    raise MigrationError(
        f"the database schema is at {sorted(current) or 'nothing'}, not {sorted(heads)}:"
        " run `xaso controller migrate --config ...` first"
    )


@contextmanager
def migration_lock(url: str, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """One process at a time per database; `MigrationError` after `wait_s` seconds."""
    if not url.startswith("sqlite"):
        with _advisory_lock(url, wait_s):
            yield
        return
    database = make_url(url).database
    if not database or database == ":memory:":
        yield  # a private in-memory database: nobody else can see it
        return
    with _file_lock(Path(database + ".migrate-lock"), wait_s):
        yield


@contextmanager
def _advisory_lock(url: str, wait_s: float) -> Iterator[None]:
    engine = make_engine(url)
    try:
        with engine.connect() as session_conn:
            conn = session_conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(
                text("SELECT set_config('lock_timeout', :ms, false)"),
                {"ms": f"{int(wait_s * 1000)}ms"},
            )
            try:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            except OperationalError as exc:
                raise MigrationError(_held_too_long(wait_s)) from exc
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
    finally:
        engine.dispose()


@contextmanager
def _file_lock(path: Path, wait_s: float) -> Iterator[None]:
    deadline = time.monotonic() + wait_s
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise MigrationError(_held_too_long(wait_s)) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _held_too_long(wait_s: float) -> str:
    return (
        f"another process has held the migration lock for over {wait_s:.0f} s;"
        " wait for its `xaso controller migrate` or start to finish, then try again"
    )


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
