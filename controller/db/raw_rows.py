"""Statements for ingest's hot path: compiled once per dialect, run with plain DBAPI rows."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import chain, islice
from operator import itemgetter
from typing import Any

from sqlalchemy import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


class RawRows:
    """A Core statement compiled once per dialect, run with plain DBAPI rows.

    For the per-message statements (samples, latest telemetry): SQLAlchemy's
    per-row parameter processing costs more than the database's own insert.
    ``keys`` names the tuple positions; values go to the driver as they are,
    so each must already be what the column takes (JSON as its text). A row
    may carry more values after them, which are not sent.

    ``multirow``: an INSERT is sent as one statement for many rows instead of
    one per row: ``VALUES (...), (...)`` of up to MULTIROW rows on SQLite (one
    step, one GIL release per chunk), one array per column through
    ``unnest`` on PostgreSQL (psycopg splits a long query text in Python).

    ``suffix``: SQL appended to every statement, the same in both dialects
    (``ON CONFLICT (...) DO NOTHING``), made of names from our code only.
    """

    def __init__(
        self,
        stmt: ClauseElement,
        keys: Sequence[str],
        *,
        multirow: bool = False,
        suffix: str = "",
    ) -> None:
        self.stmt = stmt
        self.keys = tuple(keys)
        self.multirow = multirow
        self.suffix = f" {suffix}" if suffix else ""
        self._compiled: dict[str, tuple[str, Callable[[tuple[Any, ...]], Any]]] = {}

    def _compile(self, dialect: Dialect) -> tuple[str, Callable[[tuple[Any, ...]], Any]]:
        key = f"{dialect.name}+{dialect.driver}:{dialect.paramstyle}"
        compiled = self._compiled.get(key)
        if compiled is None:
            done = self.stmt.compile(dialect=dialect, for_executemany=True)  # no RETURNING
            assert isinstance(done, SQLCompiler)
            if done.positional:  # "?" (SQLite)
                sql, names = done.string, list(done.positiontup or ())
            elif dialect.paramstyle == "pyformat":  # "%(name)s" (psycopg): made positional
                sql, names = _NAMED.sub("%s", done.string), _NAMED.findall(done.string)
            else:
                raise NotImplementedError(f"paramstyle {dialect.paramstyle}")
            order = [self.keys.index(n) for n in names]
            # a tuple of those positions, in C
            pick = itemgetter(*order) if len(order) > 1 else lambda r: (r[order[0]],)
            compiled = self._compiled[key] = (sql, pick)
        return compiled

    def execute(self, session: Session, rows: Sequence[tuple[Any, ...]]) -> None:
        conn = session.connection()
        if self.multirow and conn.dialect.name == "postgresql":
            columns = islice(zip(*rows, strict=True), len(self.keys))
            conn.exec_driver_sql(
                self._unnest(conn.dialect) + self.suffix, tuple(map(list, columns))
            )
            return
        sql, pick = self._compile(conn.dialect)
        if not self.multirow:
            conn.exec_driver_sql(sql + self.suffix, [pick(r) for r in rows])
            return
        head, values = sql.split(" VALUES ", 1)
        for start in range(0, len(rows), MULTIROW):
            chunk = rows[start : start + MULTIROW]
            params = tuple(chain.from_iterable(map(pick, chunk)))
            text = f"{head} VALUES {', '.join([values] * len(chunk))}{self.suffix}"
            conn.exec_driver_sql(text, params)

    def _unnest(self, dialect: Dialect) -> str:
        """PostgreSQL: one INSERT ... SELECT FROM unnest(one array per column)."""
        table = self.stmt.table  # type: ignore[attr-defined]
        casts = ", ".join(f"%s::{table.c[k].type.compile(dialect)}[]" for k in self.keys)
        names = ", ".join(self.keys)  # from the table's metadata, never from input
        return f"INSERT INTO {table.name} ({names}) SELECT * FROM unnest({casts})"  # noqa: S608


_NAMED = re.compile(r"%\((\w+)\)s")
MULTIROW = 500  # rows per INSERT statement: 6,000 parameters, well under every limit
