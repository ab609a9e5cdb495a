"""Alembic environment: the controller's models, the URL from the caller's Config."""

from __future__ import annotations

from alembic import context

import controller.db.models  # noqa: F401  (registers every table on Base.metadata)
from controller.db.base import Base
from controller.db.engine import make_engine

config = context.config


def _record(ctx, step, heads, run_args):  # type: ignore[no-untyped-def]
    """Tell `controller.db.engine.upgrade` which revisions this run applied."""
    applied = config.attributes.get("applied")
    if applied is not None and step.is_upgrade:
        applied.append(step.up_revision_id)


def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            on_version_apply=_record,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
