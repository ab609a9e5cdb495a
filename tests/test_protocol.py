"""The wire contract: topics, signatures, every refusal reason, schemas."""

from __future__ import annotations

import hashlib
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.commands import ScheduleSet
from protocol.envelope import MAX_FUTURE_SKEW_MS, MAX_PAYLOAD_BYTES, open_envelope, seal
from protocol.errors import ProtocolError, Refusal, RefusalReason
from protocol.signing import Keyring, PublicKey, SigningKey, canonical_json
from protocol.topics import Topics, check_id
from tests.signing_helpers import resign, tamper

NOW = 1_790_000_000_000
KEY = SigningKey.generate()
RING = Keyring([KEY.public])
CMD = "xaso/dev/loa-1/cmd"
SCH = "xaso/dev/loa-1/schedule"
CLIP = {"sha256": "ab" * 32, "url": "http://c/api/clips/x", "bytes": 1000, "duration_ms": 5000}


def refusal(payload: bytes, now: int = NOW, ring: Keyring = RING) -> RefusalReason:
    with pytest.raises(Refusal) as info:
        open_envelope(payload, ring, now)
    return info.value.reason


def test_topics_are_spelled_once():
    t = Topics("xaso")
    assert t.status("loa-1") == "xaso/dev/loa-1/status"
    assert t.grp("thon-2", "cmd") == "xaso/grp/thon-2/cmd"
    assert t.device_inbound("loa-1", ["thon-2"]) == [
        "xaso/dev/loa-1/cmd",
        "xaso/dev/loa-1/config",
        "xaso/dev/loa-1/schedule",
        "xaso/dev/loa-1/bookings",
        "xaso/grp/thon-2/cmd",
        "xaso/grp/thon-2/schedule",
    ]
    ref = t.parse("xaso/grp/thon-2/schedule")
    assert (ref.scope, ref.id, ref.leaf) == ("grp", "thon-2", "schedule")
    for bad in ("xaso/dev/loa-1", "other/dev/a/cmd", "xaso/grp/a/status", "xaso/dev/A/cmd"):
        with pytest.raises(ProtocolError):
            t.parse(bad)


@pytest.mark.parametrize("bad", ["", "A", "-a", "a" * 49, "a/b", "a+", "thôn"])
def test_bad_ids_are_refused(bad):
    with pytest.raises(ProtocolError, match="not valid"):
        check_id(bad)


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": "Thôn"}) == '{"a":"Thôn","b":1}'.encode()


def test_round_trip_and_key_id():
    payload = seal("broadcast.play", {"clip": CLIP, "priority": 9}, KEY, NOW, to=CMD)
    opened = open_envelope(payload, RING, NOW)
    assert opened.envelope.kid == KEY.kid
    assert opened.body.priority == 9  # type: ignore[attr-defined]
    again = PublicKey.from_b64(KEY.public.b64)
    assert again.kid == KEY.kid
    with pytest.raises(ProtocolError, match="does not match"):
        PublicKey.from_b64(KEY.public.b64, kid="0" * 16)


def test_pem_round_trip():
    assert SigningKey.from_pem(KEY.to_pem()).kid == KEY.kid
    with pytest.raises(ProtocolError):
        SigningKey.from_pem(b"not a key")


# RFC 8032, section 7.1, test 2: one byte of message
RFC_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
RFC_PUBLIC = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
RFC_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


KEY_ID_OF_RFC = hashlib.sha256(RFC_PUBLIC).hexdigest()[:16]


def test_signatures_are_ed25519_as_rfc_8032_gives_them():
    key = SigningKey(RFC_SEED)
    assert key.public.raw == RFC_PUBLIC and key.kid == KEY_ID_OF_RFC
    assert key.sign(b"\x72") == RFC_SIGNATURE
    assert key.public.verify(RFC_SIGNATURE, b"\x72")
    assert not key.public.verify(RFC_SIGNATURE, b"\x73")


def test_a_site_key_written_before_pynacl_still_signs_what_edges_verify():
    """Sites made their keys with `cryptography` (PKCS#8 PEM): the same key, the same
    signatures, and a signature made either way verifies the other way."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    old = Ed25519PrivateKey.from_private_bytes(RFC_SEED)
    pem = old.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = SigningKey.from_pem(pem)
    assert key.public.raw == RFC_PUBLIC and key.to_pem() == pem
    message = canonical_json({"a": "Thôn 1"})
    assert key.sign(message) == old.sign(message)  # Ed25519 is deterministic
    old.public_key().verify(key.sign(message), message)  # raises if not
    assert key.public.verify(old.sign(message), message)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 63, b"\x00" * 65, b"\xff" * 64])
def test_a_signature_of_the_wrong_shape_does_not_verify(bad: bytes):
    assert not KEY.public.verify(bad, b"message")
    if bad:  # a good signature with bytes before it is not a signature either
        assert not KEY.public.verify(bad + KEY.sign(b"message"), b"message")


def test_a_private_key_is_a_32_byte_seed():
    for bad in (b"", b"\x00" * 31, b"\x00" * 64):
        with pytest.raises(ProtocolError, match="32-byte seed"):
            SigningKey(bad)


def good(**kw):
    return seal("device.ping", {}, KEY, NOW, to=CMD, **kw)


def test_every_stateless_refusal_reason():
    doc = json.loads(good())
    assert refusal(b"x" * (MAX_PAYLOAD_BYTES + 1)) is RefusalReason.TOO_LARGE
    assert refusal(b"\xff\xfe not json") is RefusalReason.NOT_JSON
    assert refusal(b'{"v":1,"x":NaN}') is RefusalReason.NOT_JSON
    assert refusal(b"[1,2]") is RefusalReason.BAD_ENVELOPE
    assert refusal(tamper(good(), v=2)) is RefusalReason.UNKNOWN_VERSION
    assert refusal(resign({**doc, "type": "device.explode"}, KEY)) is RefusalReason.UNKNOWN_TYPE
    assert refusal(tamper(good(), kid="ffffffffffffffff")) is RefusalReason.UNKNOWN_KID
    assert refusal(tamper(good(), ts=NOW + 1)) is RefusalReason.BAD_SIGNATURE
    assert refusal(tamper(good(), sig="%%%")) is RefusalReason.BAD_SIGNATURE
    other = SigningKey.generate()
    assert refusal(resign({**doc, "kid": KEY.kid}, other)) is RefusalReason.BAD_SIGNATURE
    assert refusal(good(), now=NOW + 61_000) is RefusalReason.EXPIRED
    future = seal("device.ping", {}, KEY, NOW + MAX_FUTURE_SKEW_MS + 1000, to=CMD)
    assert refusal(future) is RefusalReason.FROM_FUTURE
    bad_body = resign({**doc, "type": "device.volume", "body": {"volume_pct": 101}}, KEY)
    assert refusal(bad_body) is RefusalReason.BAD_BODY
    extra = resign({**doc, "body": {"surprise": 1}}, KEY)
    assert refusal(extra) is RefusalReason.BAD_BODY
    no_exp = resign({k: v for k, v in doc.items() if k != "exp"}, KEY)
    assert refusal(no_exp) is RefusalReason.BAD_ENVELOPE
    string_ts = resign({**doc, "ts": str(NOW)}, KEY)
    assert refusal(string_ts) is RefusalReason.BAD_ENVELOPE


def test_refusal_carries_the_command_id_when_readable():
    with pytest.raises(Refusal) as info:
        open_envelope(tamper(good(cmd_id="c-42"), sig="AAAA"), RING, NOW)
    assert info.value.cmd_id == "c-42"


def schedule_body(**item):
    base = {
        "id": "sang",
        "clip": CLIP,
        "rrule": "FREQ=DAILY;BYHOUR=6",
        "dtstart": "2026-01-01T06:00:00",
    }
    return {"version": 1, "items": [{**base, **item}]}


def test_schedule_document_validation():
    assert msgspec.convert(schedule_body(), ScheduleSet).items[0].id == "sang"
    for bad in (
        {"rrule": "FREQ=SOMETIMES"},
        {"rrule": "FREQ=DAILY;UNTIL=20270101T000000"},
        {"dtstart": "2026-01-01T06:00:00+07:00"},
        {"dtstart": "tomorrow"},
        {"stream": {"url": "http://vov/1", "duration_s": 60}},
        {"exdates": ["yesterday"]},
    ):
        with pytest.raises(ValueError):
            msgspec.convert(schedule_body(**bad), ScheduleSet)
    with pytest.raises(ValueError, match="time zone"):
        msgspec.convert({"version": 1, "tz": "Mars/Olympus"}, ScheduleSet)


def test_documents_carry_no_expiry():
    payload = seal("schedule.set", schedule_body(), KEY, NOW, to=SCH)
    assert "exp" not in json.loads(payload)
    assert open_envelope(payload, RING, NOW + 10**10).envelope.version == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_only_ever_refuse(data):
    with pytest.raises(Refusal):
        open_envelope(data, RING, NOW)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from(["v", "id", "type", "ts", "exp", "body", "kid", "sig"]), value=json_values
)
def test_mutated_envelopes_only_ever_refuse(field, value):
    doc = json.loads(seal("device.volume", {"volume_pct": 50}, KEY, NOW, to=CMD))
    if doc[field] == value:
        return
    doc[field] = value
    with pytest.raises(Refusal):
        open_envelope(json.dumps(doc).encode(), RING, NOW)


@pytest.mark.parametrize(
    "rule",
    ["FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "FREQ=MONTHLY;BYMONTH=4,6;BYMONTHDAY=31,-31"],
)
def test_a_rule_that_can_never_fire_is_refused(rule):
    with pytest.raises(ValueError, match="no day that exists"):
        msgspec.convert(schedule_body(rrule=rule), ScheduleSet)


def test_rare_but_real_days_are_accepted():
    for rule in ("FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29", "FREQ=MONTHLY;BYMONTHDAY=31"):
        msgspec.convert(schedule_body(rrule=rule), ScheduleSet)


def test_the_envelope_names_its_target_inside_the_signature():
    doc = json.loads(seal("device.ping", {}, KEY, NOW, to="xaso/dev/loa-1/cmd"))
    assert doc["to"] == {"scope": "dev", "id": "loa-1", "leaf": "cmd"}
    grp = json.loads(seal("schedule.set", {"version": 1}, KEY, NOW, to="x/y/grp/thon-2/schedule"))
    assert grp["to"] == {"scope": "grp", "id": "thon-2", "leaf": "schedule"}  # any root
    opened = open_envelope(canonical_json(doc), RING, NOW)
    assert str(opened.envelope.to) == "dev/loa-1/cmd"
    # re-addressed without the key: the signature no longer verifies
    moved = tamper(good(), to={"scope": "dev", "id": "loa-2", "leaf": "cmd"})
    assert refusal(moved) is RefusalReason.BAD_SIGNATURE
    # no target at all (a controller from before targets): refused
    untargeted = resign({k: v for k, v in doc.items() if k != "to"}, KEY)
    assert refusal(untargeted) is RefusalReason.BAD_ENVELOPE
    for bad in (
        {"scope": "dev", "id": "loa-1"},
        {"scope": "dev", "id": "loa-1", "leaf": "status"},
        {"scope": "zone", "id": "loa-1", "leaf": "cmd"},
        {"scope": "dev", "id": "LOA", "leaf": "cmd"},
        {"scope": "dev", "id": "loa-1", "leaf": "cmd", "root": "xaso"},
        "dev/loa-1/cmd",
    ):
        assert refusal(resign({**doc, "to": bad}, KEY)) is RefusalReason.BAD_ENVELOPE, bad


def test_seal_needs_a_target_of_the_contract():
    for bad in ("xaso/dev/loa-1/status", "loa-1/cmd", "xaso/grp/thon-1/config", "xaso/dev/A/cmd"):
        with pytest.raises(ProtocolError):
            seal("device.ping", {}, KEY, NOW, to=bad)


@pytest.mark.parametrize(
    ("msg_type", "body"),
    [
        ("device.volume", {"volume_pct": "50"}),
        ("device.volume", {"volume_pct": True}),
        ("device.volume", {"volume_pct": 50.0}),
        ("broadcast.play", {"clip": CLIP, "priority": "9"}),
        ("broadcast.play", {"clip": CLIP, "priority": False}),
        ("broadcast.play", {"clip": {**CLIP, "bytes": "1000"}}),
        ("broadcast.play", {"clip": CLIP, "gain_db": "3"}),
        ("broadcast.play", {"clip": CLIP, "gain_db": True}),
        ("broadcast.play", {"clip": CLIP, "label": 7}),
        ("broadcast.stream", {"url": "http://vov/1", "duration_s": "60"}),
        ("device.test_tone", {"duration_s": "3"}),
        ("config.set", {"version": "2"}),
        ("config.set", {"version": 2, "groups": "thon-1"}),
        ("schedule.set", {"version": True}),
    ],
)
def test_bodies_are_strict(msg_type, body):
    doc = json.loads(good())
    doc["type"] = msg_type
    doc["body"] = body
    if msg_type.endswith(".set"):
        del doc["exp"]
    assert refusal(resign(doc, KEY)) is RefusalReason.BAD_BODY
    with pytest.raises(ValueError):
        seal(msg_type, body, KEY, NOW, to=CMD)  # nor will the controller sign one


def test_an_integer_is_still_a_number_where_a_float_is_asked():
    payload = seal("broadcast.play", {"clip": CLIP, "gain_db": -6}, KEY, NOW, to=CMD)
    assert open_envelope(payload, RING, NOW).body.gain_db == -6.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(json.dumps({"v": 1, "id": "u16"}).encode("utf-16"), id="utf-16-bom"),
        pytest.param(json.dumps({"v": 1, "id": "u16"}).encode("utf-16-le"), id="utf-16-le"),
        pytest.param(json.dumps({"v": 1, "id": "u32"}).encode("utf-32"), id="utf-32-bom"),
        pytest.param(json.dumps({"v": 1, "id": "u32"}).encode("utf-32-be"), id="utf-32-be"),
        pytest.param(b"\xef\xbb\xbf" + b'{"v":1,"id":"bom"}', id="utf-8-bom"),
        pytest.param(b'{"v":1,"id":"\xed\xa0\x80"}', id="cesu-surrogate"),
        pytest.param(b'{"v":1,"id":"\xc0\xaf"}', id="overlong"),
    ],
)
def test_only_utf8_is_json(payload):
    with pytest.raises(Refusal) as info:
        open_envelope(payload, RING, NOW)
    assert info.value.reason is RefusalReason.NOT_JSON and info.value.cmd_id is None


def test_a_lone_surrogate_is_refused_and_the_id_kept_when_it_is_clean():
    doc = json.loads(good(cmd_id="c-7"))
    in_id = json.dumps({**doc, "id": "c-\ud800"}).encode()  # ascii JSON with a \ud800 escape
    with pytest.raises(Refusal) as info:
        open_envelope(in_id, RING, NOW)
    assert info.value.reason is RefusalReason.NOT_JSON and info.value.cmd_id is None
    elsewhere = json.dumps({**doc, "body": {"x": "\udfff"}}).encode()
    with pytest.raises(Refusal) as info:
        open_envelope(elsewhere, RING, NOW)
    assert info.value.reason is RefusalReason.NOT_JSON and info.value.cmd_id == "c-7"
    pair = resign({**doc, "type": "broadcast.stop", "body": {}}, KEY)  # a real pair is fine
    assert open_envelope(pair.replace(b"}", b',"x":"\\ud83d\\ude00"}', 0), RING, NOW)


def test_an_unforeseen_error_while_opening_is_a_refusal(monkeypatch):
    from protocol import envelope

    def boom(*_a, **_k):
        raise KeyError("surprise")

    monkeypatch.setattr(envelope, "_check_time", boom)
    with pytest.raises(Refusal) as info:
        open_envelope(good(cmd_id="c-9"), RING, NOW)
    assert info.value.reason is RefusalReason.BAD_ENVELOPE and info.value.cmd_id == "c-9"
    assert "KeyError" in info.value.detail


@pytest.mark.parametrize("bad_id", ["c-1\n", "", "c 1", "é", "x" * 65, 7, None])
def test_an_id_that_is_not_a_command_id_is_not_echoed(bad_id):
    doc = {**json.loads(good()), "id": bad_id}
    with pytest.raises(Refusal) as info:
        open_envelope(json.dumps(doc).encode(), RING, NOW)
    assert info.value.reason is RefusalReason.BAD_ENVELOPE and info.value.cmd_id is None


def test_legacy_to_fills_only_a_missing_target_and_checks_everything_else():
    topic = Topics().parse("xaso/dev/loa-1/schedule")
    doc = json.loads(seal("schedule.set", {"version": 2}, KEY, NOW, to=topic))
    old = resign({k: v for k, v in doc.items() if k != "to"}, KEY)
    opened = open_envelope(old, RING, NOW, legacy_to=topic)
    assert str(opened.envelope.to) == "dev/loa-1/schedule" and opened.envelope.version == 2
    assert refusal(old) is RefusalReason.BAD_ENVELOPE  # never without legacy_to
    # a signed target is never overridden by legacy_to
    other = Topics().parse("xaso/dev/loa-2/schedule")
    signed = open_envelope(canonical_json(doc), RING, NOW, legacy_to=other)
    assert str(signed.envelope.to) == "dev/loa-1/schedule"
    # the signature, the type and the envelope version are checked as always
    for spoiled, reason in (
        (tamper(old, body={"version": 9}), RefusalReason.BAD_SIGNATURE),
        (resign({**json.loads(old), "type": "schedule.zap"}, KEY), RefusalReason.UNKNOWN_TYPE),
        (resign({**json.loads(old), "v": 0}, KEY), RefusalReason.UNKNOWN_VERSION),
        (resign({**json.loads(old), "exp": NOW + 1}, KEY), RefusalReason.BAD_ENVELOPE),
    ):
        with pytest.raises(Refusal) as info:
            open_envelope(spoiled, RING, NOW, legacy_to=topic)
        assert info.value.reason is reason
