"""The one scope rule (controller/auth/tenancy.py): who sees, targets and stops what."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broadcast.levels import Level, level_of, preempts
from controller.auth import tenancy

communes = st.sampled_from(["phu-an", "tan-binh", "my-loc"])
whoever = st.none() | communes  # None: the province
levels = st.sampled_from(["normal", "priority", "emergency"])


@given(whoever, st.lists(communes, unique=True))
def test_the_province_sees_every_commune_and_a_commune_its_own(
    principal: str | None, known: list[str]
) -> None:
    seen = tenancy.visible_communes(principal, known)
    if principal is None:
        assert seen == sorted(known)
    else:
        assert seen == ([principal] if principal in known else [])


@given(whoever, st.none() | communes | st.just(""))
def test_a_principal_sees_its_communes_things_and_the_province_everything(
    principal: str | None, owner: str | None
) -> None:
    assert tenancy.sees(principal, owner) == (principal is None or (owner or None) == principal)
    assert tenancy.may_manage_user(principal, owner) == tenancy.sees(principal, owner)


@given(whoever, st.lists(st.none() | communes, max_size=6))
def test_a_target_is_allowed_only_if_every_speaker_it_reaches_is_in_scope(
    principal: str | None, reached: list[str | None]
) -> None:
    allowed = tenancy.target_allowed(principal, reached)
    if principal is None:
        assert allowed
    else:
        assert allowed == (bool(reached) and set(reached) == {principal})


def test_a_commune_user_may_not_target_a_province_speaker_or_nothing() -> None:
    assert not tenancy.target_allowed("phu-an", [None])
    assert not tenancy.target_allowed("phu-an", [])
    assert not tenancy.target_allowed("phu-an", ["phu-an", "tan-binh"])
    assert tenancy.target_allowed("phu-an", ["phu-an", "phu-an"])


@given(whoever, st.none() | communes, levels)
def test_only_the_province_stops_a_province_emergency(
    principal: str | None, made_for: str | None, level: str
) -> None:
    may = tenancy.may_stop(principal, made_for, level)
    if made_for is None and level == "emergency":
        assert may == (principal is None)
    else:
        assert may == tenancy.sees(principal, made_for)


@given(communes, st.integers(0, 9))
def test_a_communes_stop_never_reaches_a_province_emergency_on_the_speaker(
    commune: str, asked: int
) -> None:
    province = tenancy.emergency_priority(None)
    own = tenancy.emergency_priority(commune)
    assert level_of(province) is level_of(own) is Level.EMERGENCY  # both ignore quiet hours
    assert preempts(province, own) and not preempts(own, province)
    cap = tenancy.stop_cap(commune, asked)
    assert cap < province and cap <= asked  # the player stops priorities <= cap only
    assert tenancy.stop_cap(None, asked) == asked
    assert tenancy.broadcast_commune(commune) == commune and tenancy.broadcast_commune(None) is None


@given(whoever, st.none() | communes | st.just(""))
def test_the_provinces_clips_and_stations_are_every_communes_to_use_not_to_change(
    principal: str | None, owner: str | None
) -> None:
    reads = tenancy.reads(principal, owner)
    assert reads == (principal is None or not owner or owner == principal)
    assert tenancy.sees(principal, owner) <= reads  # who may change it may read it
    if principal is not None and not owner:
        assert reads and not tenancy.sees(principal, owner)  # the province's: read-only


@given(whoever, st.lists(st.none() | communes, max_size=4))
def test_a_clip_held_by_several_communes_is_read_by_each_holder(
    principal: str | None, holders: list[str | None]
) -> None:
    assert tenancy.reads_any(principal, holders) == any(
        tenancy.reads(principal, h) for h in holders
    )
    assert not tenancy.reads_any("phu-an", ["tan-binh", "my-loc"])


@given(whoever, st.none() | communes, st.lists(st.none() | communes, max_size=4))
def test_a_commune_sees_its_entries_and_the_provinces_that_reach_its_speakers(
    principal: str | None, owner: str | None, reached: list[str | None]
) -> None:
    shown = tenancy.shows_in_calendar(principal, owner, reached)
    if principal is None or owner == principal:
        assert shown
    elif owner is None:
        assert shown == (principal in reached)
    else:  # another commune's entry, wherever it plays
        assert not shown


def test_a_communes_setting_is_its_own_and_the_provinces_the_site_wide_one() -> None:
    assert tenancy.setting_key(None, "local") == "local"
    assert tenancy.setting_key("phu-an", "local") == "phu-an"


@given(whoever, st.none() | communes)
def test_a_bulletin_is_for_the_commune_it_names_and_a_sender_addresses_only_its_own(
    sender: str | None, named: str | None
) -> None:
    addressed = tenancy.bulletin_for(sender, named)
    assert addressed == (named if named is not None else sender)
    allowed = tenancy.sees(sender, addressed)
    assert allowed == (sender is None or named in (None, sender))
    if sender is not None and allowed:
        assert addressed == sender  # a commune's token sends for its commune only
