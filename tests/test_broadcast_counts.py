"""A broadcast counts its answers as they come (no recount), its rows are made by the acks,
older broadcasts are carried over by broadcast_0002, and the site's registry and key are
parsed again only when their files change. Real SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from controller.db.broadcast_tables import BroadcastAckRow, BroadcastRow
from controller.db.engine import alembic_config, make_engine, session_factory, upgrade
from controller.fleet.ingest_writes import Item, write_batch
from controller.radio.broadcasting import Broadcasting
from controller.radio.clip_library import ClipLibrary
from controller.site import directory
from controller.site.devices import add_device
from controller.site.directory import Site
from controller.site.keys import new_key
from protocol.uplink import Ack
from tests import test_scheduling as harness

sessions = harness.sessions  # the fixture, shared


def _broadcasting(sessions: sessionmaker[Session], site: Site, tmp: Path) -> Broadcasting:
    return Broadcasting(sessions, site, ClipLibrary(sessions, tmp / "clips"),
                        publisher=None, clip_base_url="http://x")  # type: ignore[arg-type]  # fmt: skip


def _record(sessions: sessionmaker[Session], b: Broadcasting, acks: list[tuple[str, Ack]]) -> None:
    items = [Item(device, "ack", ack, ack.ts) for device, ack in acks]
    with sessions.begin() as s:
        write_batch(s, items, 20, touch=set(), on_acks=b.record_acks_in)


def test_answers_are_counted_once_each_whatever_comes_twice_or_from_elsewhere(
    sessions: sessionmaker[Session], site: Site, tmp_path: Path
) -> None:
    b = _broadcasting(sessions, site, tmp_path)
    with sessions.begin() as s:
        s.add(BroadcastRow(id="bc1", kind="play", targets=[], level="emergency", priority=9,
                           created_by="bt", created_ms=1, status="sent",
                           devices=["loa-1", "loa-2", "loa-3"]))  # fmt: skip
    assert b.get("bc1").acks[0].ok is None and not b.get("bc1").answered  # no row yet: none
    _record(sessions, b, [("loa-1", Ack(cmd="bc1", ok=True, ts=10)),
                          ("loa-9", Ack(cmd="bc1", ok=True, ts=10))])  # fmt: skip
    _record(sessions, b, [("loa-1", Ack(cmd="bc1", ok=True, ts=11)),  # redelivered
                          ("loa-2", Ack(cmd="bc1", ok=False, error="busy", ts=11))])  # fmt: skip
    half = b.get("bc1")
    assert (half.answered_count, half.ok_count, half.status) == (2, 1, "sent")
    assert [a.device for a in half.acks] == ["loa-1", "loa-2", "loa-3"]  # not the stranger
    assert [a.ok for a in half.acks] == [True, False, None]
    # a speaker that refused then accepted (a retry): one answer, now a yes
    _record(sessions, b, [("loa-2", Ack(cmd="bc1", ok=True, ts=12)),
                          ("loa-3", Ack(cmd="bc1", ok=True, ts=12))])  # fmt: skip
    done = b.wait_acks("bc1", timeout_s=0)
    assert (done.answered_count, done.ok_count, done.status) == (3, 3, "acked")
    assert done.acks[1].acked_ms == 12 and done.acks[1].error is None
    with sessions() as s:
        assert s.scalar(select(BroadcastAckRow.device).where(BroadcastAckRow.device == "loa-9"))\
            is None  # fmt: skip


def test_broadcast_0002_carries_the_answers_of_older_broadcasts_over(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "broadcast_0001")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO broadcasts (id, kind, targets, level, priority, label, created_by,"
            " created_ms, status) VALUES ('old', 'play', '[]', 'normal', 2, '', 'bt', 1, 'sent')"
        ))  # fmt: skip
        for device, ok in (("loa-2", None), ("loa-1", True), ("loa-3", False)):
            conn.execute(
                text("INSERT INTO broadcast_acks (broadcast_id, device, ok)"
                     " VALUES ('old', :d, :ok)"),
                {"d": device, "ok": ok},
            )  # fmt: skip
    engine.dispose()
    assert "broadcast_0002" in upgrade(database_url)
    engine = make_engine(database_url)
    with session_factory(engine)() as s:
        row = s.get(BroadcastRow, "old")
        assert row is not None
        assert (row.devices, row.answered, row.answered_ok) == (["loa-1", "loa-2", "loa-3"], 2, 1)
    engine.dispose()
    # and back: the older code wants a row per speaker reached
    command.downgrade(alembic_config(database_url), "broadcast_0001")
    engine = make_engine(database_url)
    with engine.connect() as conn:
        acks = conn.execute(text("SELECT device FROM broadcast_acks ORDER BY device")).scalars()
        assert list(acks) == ["loa-1", "loa-2", "loa-3"]
    engine.dispose()


def test_the_registry_and_the_key_are_parsed_again_only_once_their_files_change(
    site: Site, monkeypatch: Any
) -> None:
    add_device(site.dir, "loa-1", ["speaker"], ["thon-1"], broker_host="h", broker_port=1883)
    reads: list[Path] = []
    real = directory.read_json
    monkeypatch.setattr(directory, "read_json", lambda p: reads.append(p) or real(p))
    first, key = site.devices(), site.signing_key()
    assert [d.id for d in first] == ["loa-1"]
    assert site.devices() == first and site.signing_key().kid == key.kid
    assert [p.name for p in reads].count("devices.json") == 1  # the second call: no parse
    # another writer (the CLI, another Site object) changes the files
    add_device(site.dir, "loa-2", ["speaker"], ["thon-1"], broker_host="h", broker_port=1883)
    assert [d.id for d in site.devices()] == ["loa-1", "loa-2"]
    rotated = new_key(site.dir)
    assert site.signing_key().kid == rotated != key.kid
    site.devices().clear()  # a caller's list is its own
    assert len(site.devices()) == 2
