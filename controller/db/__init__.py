"""The controller's database: SQLAlchemy models, engine and Alembic migrations."""
