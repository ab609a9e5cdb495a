"""kiosk.officers and the [[kiosk.officers]] configuration: PIN hashes, lockout, sessions."""

from __future__ import annotations

from typing import Any

import pytest
from msgspec import ValidationError

from kiosk.config import KioskOfficer, KioskSection
from kiosk.office import KioskError
from kiosk.officers import Officers, PinGuard, hash_pin, verify_pin
from plumbing.validation import convert

T0 = 1_795_399_200_000
HASH = hash_pin("2468")
AN = KioskOfficer(id="can-bo-an", name="Nguyễn Văn An", pin_hash=HASH)
BINH = KioskOfficer(id="can-bo-binh", name="Trần Thị Bình", pin_hash=HASH, counters=[3])


def officers(**kw: Any) -> Officers:
    settings = {"session_s": 3600.0, "attempts": 3, "lockout_s": 10.0} | kw
    return Officers([AN, BINH], 3, **settings)


def test_a_pin_is_kept_as_a_salted_scrypt_hash() -> None:
    assert verify_pin("2468", HASH) and not verify_pin("2469", HASH)
    assert "2468" not in HASH and hash_pin("2468") != HASH  # salted
    for bad in ("123", "1" * 13, "12a4", "", "２４６８"):
        with pytest.raises(ValueError, match="4 to 12 digits"):
            hash_pin(bad)


def test_wrong_pins_lock_a_counter_for_longer_each_round() -> None:
    guard = PinGuard(attempts=3, lockout_s=10)
    for i in range(2):
        guard.failed(1, T0 + i)
    assert guard.wait_s(1, T0) == 0
    guard.failed(1, T0)
    assert guard.wait_s(1, T0) == 10 and guard.wait_s(1, T0 + 9_001) == 1
    assert guard.wait_s(2, T0) == 0  # another counter is not locked
    assert guard.wait_s(1, T0 + 10_000) == 0
    for _ in range(3):
        guard.failed(1, T0 + 10_000)
    assert guard.wait_s(1, T0 + 10_000) == 20  # doubled
    guard.succeeded(1)
    assert guard.wait_s(1, T0 + 10_000) == 0


def test_sessions_are_per_kind_and_counter_expire_and_end_on_sign_out() -> None:
    o = officers()
    staff = o.sign_in("staff", 2, "can-bo-an", "2468", T0)
    assert o.session(staff.token, "staff", 2, T0) == staff.session
    assert staff.session.officer_name == "Nguyễn Văn An"
    assert o.session(staff.token, "rate", 2, T0) is None
    assert o.session(staff.token, "staff", 1, T0) is None
    assert o.session(staff.token, "staff", 2, T0 + 3600_000) is None  # expired
    assert o.session(staff.token + "x", "staff", 2, T0) is None
    assert o.session(None, "staff", 2, T0) is None
    o.sign_out(staff.token)
    assert o.session(staff.token, "staff", 2, T0) is None
    assert o.names(1) == [("can-bo-an", "Nguyễn Văn An")]
    assert [n for _, n in o.names(3)] == ["Nguyễn Văn An", "Trần Thị Bình"]


def refusal(action: Any) -> tuple[str, int]:
    with pytest.raises(KioskError) as exc:
        action()
    assert exc.value.vi and exc.value.en and exc.value.vi != exc.value.en
    return exc.value.code, exc.value.status


def test_sign_in_refusals_say_what_to_do() -> None:
    o = officers()
    assert refusal(lambda: o.sign_in("staff", 1, "can-bo-an", "1111", T0)) == ("wrong_pin", 401)
    assert refusal(lambda: o.sign_in("staff", 1, "khong-co", "2468", T0)) == ("wrong_pin", 401)
    assert refusal(lambda: o.sign_in("staff", 1, "can-bo-an", "abc", T0)) == ("wrong_pin", 401)
    # the third wrong try locked counter 1, even for the right PIN
    assert refusal(lambda: o.sign_in("staff", 1, "can-bo-an", "2468", T0)) == ("locked", 429)
    later = T0 + 10_000
    assert refusal(lambda: o.sign_in("staff", 1, "can-bo-binh", "2468", later)) == (
        "not_this_counter",
        403,
    )
    assert o.sign_in("staff", 1, "can-bo-an", "2468", later).session.counter == 1
    nobody = Officers([], 3, session_s=1, attempts=1, lockout_s=1)
    assert refusal(lambda: nobody.sign_in("staff", 1, "can-bo-an", "2468", T0)) == (
        "no_officers",
        503,
    )


def test_the_configuration_refuses_bad_officers_naming_the_fix() -> None:
    good = {"id": "can-bo-an", "name": "An", "pin_hash": HASH}
    cases = [
        ([good | {"pin_hash": "2468"}], "python -m kiosk.officers"),
        ([good | {"pin_hash": "scrypt$3$8$1$YQ==$YQ=="}], "make it again"),
        ([good, good], "unique; repeated: can-bo-an"),
        ([good | {"counters": [4]}], "counters are numbered 1 to 3"),
        ([good | {"id": "Cán bộ"}], "id"),
    ]
    for entries, words in cases:
        with pytest.raises(ValidationError, match=words.replace("$", r"\$")):
            convert({"officers": entries}, KioskSection, strict=False)
    assert convert({"officers": [good]}, KioskSection, strict=False).officers[0].counters == []
