"""Event bodies: one model per type, the wire as it always was, bad bodies refused clearly."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import Refusal, RefusalReason
from protocol.events import (
    DETAIL_MAX,
    EVENT_BODIES,
    EVENT_TYPES,
    AgentStarted,
    AudioFault,
    Body,
    PlayMissed,
    PlayStarted,
    TicketCalled,
    detail_text,
    new_event,
    read_body,
)
from protocol.uplink import Event, uplink_json

TICKET = {
    "ticket_id": "0b6c2f1e-4d4c-4a57-9a38-4f1a6f0e2c11",
    "number": "A015",
    "service": "ho-tich",
    "queue": "ho-tich",
    "day": "2026-11-23",
    "priority": False,
}
PLAY = {
    "key": "morning@2026-11-23T06:30:00",
    "origin": "schedule",
    "item_id": "morning",
    "occurrence": "2026-11-23T06:30:00",
    "priority": 2,
    "label": "Bản tin sáng",
    "planned_ms": 1_795_000_000_000,
}
COMMAND_PLAY = {**PLAY, "key": "c0ffee", "origin": "command", "item_id": None, "occurrence": None}

# bodies as the edge has always written them, one or more per type (the keys in their order)
SAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("agent.started", {"agent": "0.4.0", "boot": 1_795_000_000_000}),
    ("play.started", {**PLAY, "actual_ms": 1_795_000_000_004}),
    ("play.started", {**COMMAND_PLAY, "resumed_from_ms": 1200, "actual_ms": 1_795_000_000_004}),
    (
        "play.finished",
        {**PLAY, "actual_ms": 1_795_000_000_004, "outcome": "completed", "played_ms": 30_000},
    ),
    (
        "play.finished",
        {
            **COMMAND_PLAY,
            "actual_ms": 1_795_000_000_004,
            "outcome": "failed",
            "played_ms": 120,
            "error": "the audio device failed",
        },
    ),
    (
        "play.finished",
        {
            **PLAY,
            "actual_ms": 1_795_000_000_004,
            "outcome": "preempted",
            "played_ms": 4_000,
            "resumes": True,
        },
    ),
    (
        "play.interrupted",
        {
            **PLAY,
            "actual_ms": 1_795_000_000_004,
            "played_ms": 2_000,
            "checkpoint_ms": 1_795_000_002_004,
            "reason": "power_loss",
        },
    ),
    (
        "play.interrupted",
        {
            **COMMAND_PLAY,
            "resumed_from_ms": 4_000,
            "actual_ms": None,
            "played_ms": 0,
            "checkpoint_ms": 1_795_000_004_004,
            "reason": "crash",
        },
    ),
    ("play.missed", {**PLAY, "reason": "quiet_hours"}),
    ("play.missed", {**COMMAND_PLAY, "reason": "late", "error": "2301 ms after the planned start"}),
    (
        "play.missed",
        {
            "key": "c0ffee",
            "planned_ms": None,
            "reason": "clip_unavailable",
            "detail": "clip ab: 404",
        },
    ),
    ("amp.state", {"on": True, "reason": "preroll"}),
    ("audio.fault", {"clip": "ab" * 32, "reason": "corrupt"}),
    ("audio.fault", {"reason": "device_busy", "detail": "hw:0 is in use", "key": "c0ffee"}),
    (
        "ticket.issued",
        {**TICKET, "issued_ms": 1_795_000_000_000, "people_ahead": 3, "wait_s": 412.5},
    ),
    (
        "ticket.issued",
        {**TICKET, "issued_ms": 1_795_000_000_000, "people_ahead": 0, "wait_s": None},
    ),
    ("ticket.called", {**TICKET, "counter": 2, "recall": 0, "waited_ms": 95_000}),
    ("ticket.served", {**TICKET, "counter": 2, "service_ms": 301_000}),
    ("ticket.skipped", {**TICKET, "counter": 2, "reason": "no_show"}),
    (
        "ticket.transferred",
        {
            **TICKET,
            "queue": "dat-dai",
            "counter": 2,
            "from_queue": "ho-tich",
            "to_queue": "dat-dai",
        },
    ),
    (
        "ticket.rated",
        {
            **TICKET,
            "counter": 2,
            "level": 5,
            "label_vi": "Rất hài lòng",
            "label_en": "Very satisfied",
        },
    ),
    ("counter.state", {"counter": 3, "paused": True}),
    # signed-in counters name their officer; a transfer may carry a note
    (
        "ticket.called",
        {**TICKET, "counter": 2, "recall": 1, "waited_ms": 5, "officer": "can-bo-an"},
    ),
    (
        "ticket.transferred",
        {
            **TICKET,
            "counter": 2,
            "from_queue": "ho-tich",
            "to_queue": "dat-dai",
            "officer": "can-bo-an",
            "note": "Thiếu bản sao sổ đỏ",
        },
    ),
    ("counter.state", {"counter": 3, "paused": False, "officer": "can-bo-an"}),
    (
        "printer.status",
        {"online": True, "paper": "near_end", "cover": "closed", "pending": ["A016"]},
    ),
]
SAMPLE_IDS = [f"{t}-{i}" for i, (t, _) in enumerate(SAMPLES)]


def wire(event: Event) -> bytes:
    return uplink_json(event)  # as the agent publishes


def refused(event_type: str, body: object) -> str:
    with pytest.raises(Refusal) as info:
        read_body(event_type, body)
    assert info.value.reason is RefusalReason.BAD_BODY
    return info.value.detail


def test_every_event_type_has_one_model_and_every_model_one_type():
    assert set(EVENT_TYPES) == {t for t, _ in SAMPLES}
    assert len(set(EVENT_BODIES.values())) == len(EVENT_BODIES)
    for event_type, model in EVENT_BODIES.items():
        assert event_type == model.TYPE


@pytest.mark.parametrize(("event_type", "body"), SAMPLES, ids=SAMPLE_IDS)
def test_every_body_round_trips_byte_for_byte(event_type, body):
    model = read_body(event_type, body)
    assert isinstance(model, EVENT_BODIES[event_type])
    assert model.wire() == body
    assert list(model.wire()) == list(body)  # the same keys in the same order
    old = Event(id="e1", type=event_type, ts=1, body=body)
    new = Event(id="e1", type=event_type, ts=1, body=model.wire())
    assert wire(new) == wire(old)
    assert read_body(event_type, json.loads(wire(new))["body"]) == model


def test_built_bodies_carry_exactly_what_the_emitter_set():
    body = PlayStarted(**COMMAND_PLAY, actual_ms=5)
    assert body.wire() == {**COMMAND_PLAY, "actual_ms": 5}  # the nulls it set, kept
    assert "resumed_from_ms" not in body.wire() and body.resumed_from_ms == 0
    event = new_event(AudioFault(reason="device_busy", detail="busy", key="k"), 7)
    assert (event.type, event.ts, event.body) == (
        "audio.fault",
        7,
        {"reason": "device_busy", "detail": "busy", "key": "k"},
    )
    assert new_event(AgentStarted(agent="1", boot=1), 2).id != event.id


def test_unknown_fields_are_kept_for_a_newer_agent():
    body = {**TICKET, "counter": 2, "recall": 1, "waited_ms": 5, "screen": "hall-2"}
    model = read_body("ticket.called", body)
    assert isinstance(model, TicketCalled)
    assert model.wire() == body and model.extra == {"screen": "hall-2"}


def test_an_unknown_event_type_is_not_read():
    assert read_body("door.opened", {"anything": [1, 2]}) is None
    assert read_body("door.opened", "not even an object") is None


@pytest.mark.parametrize(
    ("event_type", "body", "says"),
    [
        ("ticket.called", [1, 2], "ticket.called body: (the body): Input should be"),
        ("counter.state", None, "counter.state body: (the body)"),
        ("counter.state", {"counter": "2", "paused": True}, "counter: Input should be a valid int"),
        ("counter.state", {"counter": 2.0, "paused": True}, "counter: Input should be a valid int"),
        (
            "counter.state",
            {"counter": True, "paused": True},
            "counter: Input should be a valid int",
        ),
        ("counter.state", {"counter": 0, "paused": True}, "counter: Input should be greater"),
        ("counter.state", {"counter": 100, "paused": True}, "counter: Input should be less"),
        ("counter.state", {"counter": 1}, "paused: Field required"),
        (
            "ticket.rated",
            {**TICKET, "counter": 1, "level": 6, "label_vi": "", "label_en": ""},
            "level",
        ),
        (
            "ticket.called",
            {**TICKET, "number": "A" * 17, "counter": 1, "recall": 0, "waited_ms": 1},
            "number",
        ),
        (
            "ticket.called",
            {**TICKET, "day": "23/11/2026", "counter": 1, "recall": 0, "waited_ms": 1},
            "day",
        ),
        (
            "ticket.issued",
            {**TICKET, "issued_ms": 1, "people_ahead": -1, "wait_s": None},
            "people_ahead",
        ),
        (
            "play.started",
            {**PLAY, "label": "x" * 201, "actual_ms": 1},
            "label: String should have at most 200",
        ),
        ("play.started", {**PLAY, "priority": 10, "actual_ms": 1}, "priority"),
        ("play.started", {**PLAY, "actual_ms": -1}, "actual_ms"),
        ("play.started", {**PLAY, "origin": None, "actual_ms": 1}, "origin"),
        ("play.finished", {**PLAY, "actual_ms": 1, "outcome": "done", "played_ms": 1}, "outcome"),
        (
            "play.interrupted",
            {**PLAY, "actual_ms": 1, "played_ms": 1, "reason": "crash"},
            "checkpoint_ms",
        ),
        ("play.missed", {**PLAY, "reason": ""}, "reason"),
        ("play.missed", {**PLAY, "reason": "late", "error": "x" * (DETAIL_MAX + 1)}, "error"),
        ("audio.fault", {"clip": "not-a-hash", "reason": "corrupt"}, "clip"),
        ("printer.status", {"online": True, "paper": "low", "cover": "closed"}, "paper"),
        ("printer.status", {"online": 1, "paper": "ok", "cover": "closed"}, "online"),
        ("agent.started", {"agent": "1", "boot": 2**53 + 1}, "boot"),
    ],
)
def test_a_body_that_does_not_fit_is_refused_saying_where(event_type, body, says):
    assert says in refused(event_type, body)


def test_every_fault_is_counted_in_the_message():
    detail = refused("ticket.called", {"counter": 0})
    assert detail.startswith("ticket.called body: ")
    assert "(and " in detail and "more)" in detail


def test_a_misspelt_field_fails_on_the_edge_too():
    with pytest.raises(TypeError, match="key"):
        PlayMissed(kee="c0ffee", reason="late")  # type: ignore[call-arg]


def test_free_text_is_cut_to_what_a_body_carries():
    assert detail_text("short") == "short"
    cut = detail_text("é" * (DETAIL_MAX * 2))
    assert len(cut) == DETAIL_MAX and cut.endswith("…")
    PlayMissed(**PLAY, reason="late", error=cut)  # fits


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _read_or_refuse(event_type: str, body: object) -> Body | None:
    try:
        return read_body(event_type, body)
    except Refusal as exc:
        assert exc.reason is RefusalReason.BAD_BODY
        assert exc.detail.startswith(f"{event_type} body: ")
        return None


@settings(max_examples=400, deadline=None)
@given(sample=st.sampled_from(SAMPLES), data=st.data(), value=json_values)
def test_a_mutated_body_is_read_exactly_or_refused(sample, data, value):
    """Any one field set to any JSON value: refused with Refusal, or kept exactly as sent."""
    event_type, body = sample
    field = data.draw(st.sampled_from([*body, "extra"]), label="field")
    mutated = copy.deepcopy(body)
    mutated[field] = value
    model = _read_or_refuse(event_type, mutated)
    if model is not None:
        assert model.wire() == mutated


@settings(max_examples=300, deadline=None)
@given(event_type=st.sampled_from(sorted(EVENT_TYPES)), body=json_values)
def test_any_json_as_a_body_is_read_or_refused(event_type, body):
    model = _read_or_refuse(event_type, body)
    if model is not None:
        assert model.wire() == body
