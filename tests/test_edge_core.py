"""The edge's pure and local parts: backoff, store, dispatcher, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.config import ConfigError, load_config
from edge.dispatch import Dispatcher
from edge.store import LocalStore, StoredDocument
from plumbing.backoff import Backoff
from protocol.envelope import seal
from protocol.errors import RefusalReason
from protocol.signing import Keyring, SigningKey, canonical_json
from protocol.topics import Topics
from protocol.uplink import uplink_json
from tests.signing_helpers import resign

NOW = 1_790_000_000_000
KEY = SigningKey.generate()


@settings(max_examples=200)
@given(st.floats(0.01, 5), st.floats(5, 600), st.integers(0, 200), st.floats(0, 1))
def test_backoff_is_bounded_and_never_zero(base, cap, attempts, r):
    b = Backoff(base, cap, rand=lambda: r)
    for _ in range(attempts):
        b.next_delay()
    d = b.next_delay()
    assert base * 0.1 <= d <= cap


def test_backoff_grows_then_resets():
    b = Backoff(1, 60, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    b.reset()
    assert b.next_delay() == 1


@pytest.fixture
def store(tmp_path):
    s = LocalStore(tmp_path / "agent.sqlite3")
    yield s
    s.close()


def test_store_outbox_survives_reopen(tmp_path):
    s = LocalStore(tmp_path / "a.db")
    seqs = [s.outbox_put("t", f"m{i}".encode(), 1, NOW) for i in range(5)]
    s.outbox_delete(seqs[:2])
    s.close()
    s = LocalStore(tmp_path / "a.db")
    rows = s.outbox_batch(0, 10)
    assert [r.payload for r in rows] == [b"m2", b"m3", b"m4"]
    assert [r.payload for r in s.outbox_batch(rows[0].seq, 1)] == [b"m3"]
    assert s.journal_mode() == "wal"
    s.close()


def test_store_replay_memory(store):
    assert store.remember_command("c1", NOW + 10)
    assert not store.remember_command("c1", NOW + 10)
    assert store.forget_commands_before(NOW + 11) == 1
    assert store.remember_command("c1", NOW + 10)


def make_dispatcher(store, now=NOW, device="loa-1"):
    d = Dispatcher(
        device_id=device,
        topics=Topics(),
        keyring=Keyring([KEY.public]),
        store=store,
        now_ms=lambda: now,
    )
    seen = []
    d.on_command("device.ping", lambda o: {"pong": 1})
    d.on_document("config.set", lambda topic, body: seen.append((topic, body.version)))
    d.on_document("schedule.set", lambda topic, body: seen.append((topic, body.version)))
    return d, seen


CMD = "xaso/dev/loa-1/cmd"
CFG = "xaso/dev/loa-1/config"
SCH = "xaso/dev/loa-1/schedule"


def test_dispatch_command_ack_and_replay(store):
    d, _ = make_dispatcher(store)
    payload = seal("device.ping", {}, KEY, NOW, to=CMD, cmd_id="p1")
    first = d.handle(CMD, payload)
    assert first.ack.ok and first.ack.cmd == "p1" and first.ack.result == {"pong": 1}
    again = d.handle(CMD, payload)
    assert again.refused is RefusalReason.REPLAY and not again.ack.ok
    assert d.refused == {"replay": 1}


def test_dispatch_unsupported_and_wrong_topic(store):
    d, _ = make_dispatcher(store)
    stop = seal("broadcast.stop", {}, KEY, NOW, to=CMD)
    assert d.handle(CMD, stop).refused is RefusalReason.UNSUPPORTED
    ping = seal("device.ping", {}, KEY, NOW, to=CMD)
    assert d.handle("xaso/dev/loa-2/cmd", ping).refused is RefusalReason.WRONG_TOPIC
    assert d.handle(CFG, ping).refused is RefusalReason.WRONG_TOPIC
    cfg = seal("config.set", {"version": 1}, KEY, NOW, to=CFG)
    assert d.handle("xaso/grp/all/schedule", cfg).refused is RefusalReason.WRONG_TOPIC


def test_dispatch_documents_rollback_and_redelivery(store):
    d, seen = make_dispatcher(store)
    v2 = seal("config.set", {"version": 2}, KEY, NOW, to=CFG)
    assert d.handle(CFG, v2).ack.ok
    assert d.handle(CFG, v2).ack is None  # the retained copy again: silent
    v1 = seal("config.set", {"version": 1}, KEY, NOW, to=CFG)
    assert d.handle(CFG, v1).refused is RefusalReason.ROLLBACK
    v2b = seal("config.set", {"version": 2}, KEY, NOW, to=CFG)
    assert d.handle(CFG, v2b).refused is RefusalReason.ROLLBACK
    assert d.handle(CFG, seal("config.set", {"version": 3}, KEY, NOW, to=CFG)).ack.ok
    grp = seal("schedule.set", {"version": 1}, KEY, NOW, to="xaso/grp/thon-1/schedule")
    assert d.handle("xaso/grp/thon-1/schedule", grp).ack.ok  # versions are per topic
    assert seen == [(CFG, 2), (CFG, 3), ("xaso/grp/thon-1/schedule", 1)]


def test_documents_restored_at_start_and_reverified(store):
    d, _ = make_dispatcher(store)
    d.handle(CFG, seal("config.set", {"version": 5}, KEY, NOW, to=CFG))
    forged = json.loads(seal("config.set", {"version": 9}, KEY, NOW, to=CFG))
    store.save_document(
        StoredDocument(
            "xaso/dev/loa-1/schedule",
            "schedule.set",
            9,
            forged["id"],
            resign({**forged, "type": "schedule.set"}, SigningKey.generate()),
        ),
        NOW,
    )
    d2, seen = make_dispatcher(store)
    assert d2.restore_documents() == 1
    assert seen == [(CFG, 5)]


def test_handler_failure_is_an_ack_not_a_crash(store):
    d, _ = make_dispatcher(store)
    d.on_command("device.ping", lambda o: 1 / 0)
    out = d.handle(CMD, seal("device.ping", {}, KEY, NOW, to=CMD))
    assert out.refused is RefusalReason.HANDLER_FAILED and "ZeroDivisionError" in out.ack.detail


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "agent.toml"
    p.write_text(text, encoding="utf-8")
    return p


GOOD = f"""
[device]
id = "loa-1"
roles = ["speaker"]
groups = ["thon-1"]
[trust]
keys = {{ "{KEY.kid}" = "{KEY.public.b64}" }}
"""


def test_config_loads_and_defaults(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.username == "loa-1" and cfg.client_id == "xaso-loa-1"
    assert cfg.mqtt.port == 1883 and cfg.telemetry.interval_s == 30


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[device\nid=1", "not valid TOML"),
        (GOOD + "\n[mqtt]\nprot = 1884\n", "'port'?"),
        (GOOD + "\n[mqtt]\nport = 70000\n", "[mqtt] port"),
        (GOOD.replace('"loa-1"', '"Loa 1"'), "[device] id"),
        (GOOD.replace('["speaker"]', '["toaster"]'), "[device] roles"),
        (GOOD.replace(KEY.public.b64, "short"), "[trust] keys"),
        ("[device]\nid='a'\n", "[trust]: Field required (add it)"),
    ],
)
def test_config_errors_name_key_and_fix(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert expected in str(info.value)
    assert str(tmp_path / "agent.toml") in str(info.value)


def test_config_missing_and_binary_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")
    p = tmp_path / "agent.toml"
    p.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(p)


def test_a_message_signed_for_another_target_is_refused_and_acked(store):
    d, seen = make_dispatcher(store)
    obeyed = []
    d.on_command("device.volume", lambda o: obeyed.append(o) or {})
    for_b = seal("device.volume", {"volume_pct": 5}, KEY, NOW, to="xaso/dev/loa-2/cmd", cmd_id="b1")
    out = d.handle(CMD, for_b)  # re-published on loa-1's topic by someone with publish rights
    assert out.refused is RefusalReason.WRONG_TARGET
    assert out.ack.cmd == "b1" and not out.ack.ok and "dev/loa-2/cmd" in out.ack.detail
    grp_cmd = seal("device.volume", {"volume_pct": 5}, KEY, NOW, to="xaso/grp/thon-1/cmd")
    assert d.handle(CMD, grp_cmd).refused is RefusalReason.WRONG_TARGET  # group's, on own topic
    own_cmd = seal("device.volume", {"volume_pct": 5}, KEY, NOW, to=CMD)
    assert d.handle("xaso/grp/thon-1/cmd", own_cmd).refused is RefusalReason.WRONG_TARGET
    thon2 = seal("schedule.set", {"version": 7}, KEY, NOW, to="xaso/grp/thon-2/schedule")
    out = d.handle("xaso/grp/thon-1/schedule", thon2)
    assert out.refused is RefusalReason.WRONG_TARGET and out.ack.cmd is not None
    mine = seal("schedule.set", {"version": 7}, KEY, NOW, to=SCH)
    assert d.handle("xaso/grp/thon-1/schedule", mine).refused is RefusalReason.WRONG_TARGET
    assert obeyed == [] and seen == [] and store.documents() == []
    assert d.refused == {"wrong_target": 5}
    assert d.handle(CMD, own_cmd).ack.ok  # the same command on its own topic is obeyed


def test_a_stored_document_is_restored_only_on_its_target_topic(store):
    other = seal("config.set", {"version": 4}, KEY, NOW, to="xaso/dev/loa-2/config")
    store.save_document(StoredDocument(CFG, "config.set", 4, json.loads(other)["id"], other), NOW)
    d2, seen = make_dispatcher(store)
    assert d2.restore_documents() == 0 and seen == []


def test_an_unreadable_id_still_gets_an_ack_that_can_be_sent(store):
    d, _ = make_dispatcher(store)
    doc = json.loads(seal("device.ping", {}, KEY, NOW, to=CMD))
    for payload in (
        json.dumps({**doc, "id": "\ud800"}).encode(),
        json.dumps(doc).encode("utf-16"),
        json.dumps(doc).encode("utf-32"),
    ):
        out = d.handle(CMD, payload)
        assert out.refused is RefusalReason.NOT_JSON and out.ack.cmd is None
        uplink_json(out.ack)  # what the agent publishes


# --- fuzz: nothing but a well-formed, well-addressed, well-signed message is obeyed ---

CLIP = {"sha256": "ab" * 32, "url": "http://c/api/clips/x", "bytes": 1000, "duration_ms": 5000}
# (type, a valid body, the topic it is signed for and sent on, paths to its numbers)
FUZZ_BASES = [
    ("device.volume", {"volume_pct": 40}, CMD, [("volume_pct",)]),
    (
        "broadcast.play",
        {"clip": CLIP, "priority": 5, "repeat": 1, "gain_db": -3.0, "at": NOW},
        "xaso/grp/thon-1/cmd",
        [("priority",), ("repeat",), ("gain_db",), ("at",), ("clip", "bytes")],
    ),
    ("broadcast.stream", {"url": "http://vov/1", "duration_s": 60}, CMD, [("duration_s",)]),
    ("broadcast.stop", {"priority_max": 9}, CMD, [("priority_max",)]),
    ("config.set", {"version": 3, "volume_pct": 50}, CFG, [("version",), ("volume_pct",)]),
    ("schedule.set", {"version": 3}, "xaso/grp/thon-1/schedule", [("version",)]),
]
OTHER_TOPICS = [
    "xaso/dev/loa-2/cmd",
    "xaso/grp/thon-2/cmd",
    "xaso/grp/all/cmd",
    CMD,
    "xaso/dev/loa-2/config",
    "xaso/grp/thon-2/schedule",
    "xaso/grp/thon-1/schedule",
    SCH,
]
ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "utf-8-sig"]


def _signed(base: int, cmd_id: str, *, to: str | None = None) -> tuple[str, dict]:
    msg_type, body, topic, _ = FUZZ_BASES[base]
    return topic, json.loads(seal(msg_type, body, KEY, NOW, to=to or topic, cmd_id=cmd_id))


def _set_path(body: dict, path: tuple[str, ...], value: object) -> dict:
    body = json.loads(json.dumps(body))
    inner = body
    for key in path[:-1]:
        inner = inner[key]
    inner[path[-1]] = value
    return body


_ids = st.uuids().map(lambda u: u.hex)
_bases = st.integers(0, len(FUZZ_BASES) - 1)


@st.composite
def _numbers_spoiled(draw):
    """Signed (so past the signature), but a string, a bool or 2.0 where an int belongs."""
    base = draw(_bases)
    topic, doc = _signed(base, draw(_ids))
    path = draw(st.sampled_from(FUZZ_BASES[base][3]))
    number = FUZZ_BASES[base][1]
    for key in path:
        number = number[key]
    spoilt = draw(
        st.sampled_from([str(number), f" {number}", True, False, [number], {"n": number}])
        | (st.just(float(number)) if isinstance(number, int) else st.nothing())
    )
    doc["body"] = _set_path(doc["body"], path, spoilt)
    return "number", topic, resign(doc, KEY)


@st.composite
def _misaddressed(draw):
    """Well signed, for another device, group or leaf, re-published here."""
    base = draw(_bases)
    topic = FUZZ_BASES[base][2]
    to = draw(st.sampled_from([t for t in OTHER_TOPICS if t != topic]))
    _, doc = _signed(base, draw(_ids), to=to)
    return "target", topic, canonical_json(doc)


@st.composite
def _encoded(draw):
    """A good message in an encoding that is not plain UTF-8."""
    topic, doc = _signed(draw(_bases), draw(_ids))
    return (
        "encoding",
        topic,
        json.dumps(doc, ensure_ascii=False).encode(draw(st.sampled_from(ENCODINGS))),
    )


@st.composite
def _surrogates(draw):
    """A good message with a lone surrogate, escaped or as (CESU-8) bytes, somewhere."""
    topic, doc = _signed(draw(_bases), draw(_ids))
    lone = chr(draw(st.integers(0xD800, 0xDFFF)))
    field = draw(st.sampled_from(["id", "kid", "type", "sig", "body"]))
    if field == "body":
        doc["body"] = {**doc["body"], "label": lone}
    else:
        doc[field] = draw(st.sampled_from([lone, doc[field] + lone, lone + doc[field]]))
    if draw(st.booleans()):
        return "surrogate", topic, json.dumps(doc).encode()  # "\udxxx" escapes
    return "surrogate", topic, json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


_json_any = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda i: st.lists(i, max_size=3) | st.dictionaries(st.text(max_size=6), i, max_size=3),
    max_leaves=8,
)


@st.composite
def _mutated(draw):
    """A good message with one field changed and not signed again."""
    topic, doc = _signed(draw(_bases), draw(_ids))
    field = draw(st.sampled_from([*doc, "extra"]))
    value = draw(_json_any)
    if doc.get(field, object()) == value:
        value = ["changed", value]
    return "mutated", topic, json.dumps({**doc, field: value}).encode()


_garbage = st.tuples(
    st.just("garbage"),
    st.sampled_from([CMD, CFG, SCH, "xaso/grp/thon-1/cmd"]),
    st.binary(max_size=300)
    | st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@pytest.mark.slow
def test_fuzzed_payloads_are_all_refused_and_acked_never_obeyed(tmp_path):
    """5,000 payloads through the dispatcher: each refused with an ack that can be sent."""
    store = LocalStore(tmp_path / "fuzz.sqlite3")
    d, seen = make_dispatcher(store)
    obeyed: list[object] = []
    for msg_type in ("device.volume", "broadcast.play", "broadcast.stream", "broadcast.stop"):
        d.on_command(msg_type, lambda o: obeyed.append(o) or {})
    kinds: dict[str, int] = {}

    @settings(max_examples=5000, deadline=None, database=None)
    @given(
        st.one_of(
            _numbers_spoiled(), _misaddressed(), _encoded(), _surrogates(), _mutated(), _garbage
        )
    )
    def fuzz(case):
        kind, topic, payload = case
        kinds[kind] = kinds.get(kind, 0) + 1
        out = d.handle(topic, payload)
        assert out.refused is not None and out.ack is not None and not out.ack.ok, (kind, payload)
        uplink_json(out.ack)
        if kind == "number":
            assert out.refused is RefusalReason.BAD_BODY
        if kind == "target":
            assert out.refused in (RefusalReason.WRONG_TARGET, RefusalReason.WRONG_TOPIC)
        if kind in ("number", "target"):
            assert out.ack.cmd is not None  # the id was readable: the controller hears why
        if kind == "encoding":
            assert out.refused is RefusalReason.NOT_JSON

    try:
        fuzz()
    finally:
        store.close()
    assert sum(kinds.values()) >= 5000 and min(kinds.values()) >= 200, kinds
    assert obeyed == [] and seen == []
    assert RefusalReason.WRONG_TARGET.value in d.refused
    # and the dispatcher still obeys a good one
    store = LocalStore(tmp_path / "fuzz.sqlite3")
    d, _ = make_dispatcher(store)
    assert d.handle(CMD, seal("device.ping", {}, KEY, NOW, to=CMD)).ack.ok
    store.close()


def _signed_before_to(msg_type: str, body: dict, topic: str, key: SigningKey = KEY) -> bytes:
    """A document as a controller from before ``to`` signed it: the same canonical
    envelope with no ``to``, signed with the key."""
    doc = json.loads(seal(msg_type, body, KEY, NOW - 86_400_000, to=topic))
    return resign({k: v for k, v in doc.items() if k != "to"}, key)


def test_documents_stored_before_the_upgrade_are_restored_with_no_network(tmp_path):
    clip = {"sha256": "ab" * 32, "url": "https://ctl/api/clips/x", "bytes": 10, "duration_ms": 5}
    schedule = {
        "version": 3,
        "items": [
            {"id": "sang", "clip": clip, "rrule": "FREQ=DAILY", "dtstart": "2026-01-01T06:00:00"}
        ],
    }
    old_sch = _signed_before_to("schedule.set", schedule, SCH)
    old_cfg = _signed_before_to("config.set", {"version": 2}, CFG)
    assert b'"to"' not in old_sch and b'"to"' not in old_cfg
    # the agent's state file, as the agent before the upgrade left it
    before = LocalStore(tmp_path / "agent.sqlite3")
    for topic, kind, version, payload in (
        (SCH, "schedule.set", 3, old_sch),
        (CFG, "config.set", 2, old_cfg),
    ):
        cmd_id = json.loads(payload)["id"]
        before.save_document(StoredDocument(topic, kind, version, cmd_id, payload), NOW - 1)
    before.close()

    store = LocalStore(tmp_path / "agent.sqlite3")  # the upgraded agent starts, no broker
    try:
        d, _ = make_dispatcher(store)
        applied = []
        d.on_document("schedule.set", lambda topic, body: applied.append((topic, body)))
        d.on_document("config.set", lambda topic, body: applied.append((topic, body)))
        assert d.restore_documents() == 2
        assert [(t, b.version) for t, b in applied] == [(CFG, 2), (SCH, 3)]
        assert [i.id for i in applied[1][1].items] == ["sang"]  # the schedule to play
        # live, the same old payload is still refused: only restore takes it
        assert d.handle(SCH, old_sch).refused is RefusalReason.BAD_ENVELOPE
        # the controller's re-signed copy (next version, with ``to``) replaces it
        resigned = seal("schedule.set", {**schedule, "version": 4}, KEY, NOW, to=SCH)
        assert d.handle(SCH, resigned).ack.ok
        assert store.document(SCH).version == 4 and len(applied) == 3
    finally:
        store.close()


def test_a_legacy_stored_document_is_still_verified_at_restore(store):
    cases = [
        # signed with a key this device does not trust
        (
            SCH,
            "schedule.set",
            _signed_before_to("schedule.set", {"version": 1}, SCH, SigningKey.generate()),
        ),
        # its body changed after signing
        (
            SCH,
            "schedule.set",
            json.dumps(
                {
                    **json.loads(_signed_before_to("schedule.set", {"version": 1}, SCH)),
                    "body": {"version": 9},
                }
            ).encode(),
        ),
        # a config stored under the schedule topic: wrong_topic as before
        (SCH, "config.set", _signed_before_to("config.set", {"version": 1}, CFG)),
        # another device's config stored under this device's topic: only its topic is implied
        (
            "xaso/dev/loa-2/config",
            "config.set",
            _signed_before_to("config.set", {"version": 1}, "xaso/dev/loa-2/config"),
        ),
    ]
    for topic, kind, payload in cases:
        store.save_document(StoredDocument(topic, kind, 1, json.loads(payload)["id"], payload), NOW)
    d, seen = make_dispatcher(store)
    assert d.restore_documents() == 0 and seen == []
