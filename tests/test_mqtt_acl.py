"""The pure ACL module: Mosquitto's acl_file rules, and topic matching against paho's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from cli.brokers.mqtt_acl import Access, AclError, parse_acl, topic_matches, valid_filter
from controller.site.broker_files import DEVICE_READS, DEVICE_WRITES, acl_text
from controller.site.directory import DeviceEntry

R, W = Access.READ, Access.WRITE

LEVEL = st.sampled_from(["a", "b", "", "$x", "ab"])
topics = st.lists(LEVEL, min_size=1, max_size=4).map("/".join).filter(bool)
filters = (
    st.lists(st.sampled_from(["a", "b", "", "$x", "+"]), min_size=1, max_size=4)
    .flatmap(lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels, "#"]), "#"]))
    .filter(bool)
)


@given(filters, topics)
def test_matching_agrees_with_paho(topic_filter, topic):
    assert valid_filter(topic_filter)
    assert topic_matches(topic_filter, topic) == topic_matches_sub(topic_filter, topic)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("sport/#", "sport", True),
        ("sport/+", "sport", False),
        ("sport/+", "sport/", True),
        ("+/+", "/finance", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
    ],
)
def test_matching_examples_of_the_spec(topic_filter, topic, expected):
    assert topic_matches(topic_filter, topic) is expected


@pytest.mark.parametrize("bad", ["", "a/#/b", "a#", "a/b+", "++"])
def test_invalid_filters(bad):
    assert not valid_filter(bad)


def site_acl():
    devices = [
        DeviceEntry("loa-1", ("speaker",), ("thon-1", "all")),
        DeviceEntry("loa-2", ("speaker",), ("thon-2",)),
        DeviceEntry("kiosk-1", ("kiosk",)),
    ]
    return parse_acl(acl_text("xaso", devices, ["controller"]))


@pytest.mark.parametrize("leaf", DEVICE_WRITES)
def test_site_acl_a_device_writes_only_its_own_uplink(leaf):
    acl = site_acl()
    assert acl.allows("loa-1", "xaso-loa-1", f"xaso/dev/loa-1/{leaf}", W)
    # its own status it reads back too: a clone's there (docs/broker-security.md)
    readable = leaf == "status"
    assert acl.allows("loa-1", "xaso-loa-1", f"xaso/dev/loa-1/{leaf}", R) == readable
    assert not acl.allows("loa-1", "xaso-loa-1", f"xaso/dev/loa-2/{leaf}", W)
    assert not acl.allows("loa-1", "xaso-loa-1", f"xaso/dev/loa-2/{leaf}", R)


@pytest.mark.parametrize("leaf", DEVICE_READS)
def test_site_acl_a_device_reads_only_its_own_downlink(leaf):
    acl = site_acl()
    assert acl.allows("loa-1", "any-client-id", f"xaso/dev/loa-1/{leaf}", R)
    assert not acl.allows("loa-1", "any-client-id", f"xaso/dev/loa-1/{leaf}", W)
    assert not acl.allows("loa-2", "any-client-id", f"xaso/dev/loa-1/{leaf}", R)


def test_site_acl_groups_and_the_controller():
    acl = site_acl()
    assert acl.allows("loa-1", "c", "xaso/grp/thon-1/cmd", R)
    assert acl.allows("loa-1", "c", "xaso/grp/all/schedule", R)
    assert not acl.allows("loa-1", "c", "xaso/grp/thon-1/cmd", W)
    assert not acl.allows("loa-2", "c", "xaso/grp/thon-1/cmd", R)
    assert not acl.allows("kiosk-1", "c", "xaso/grp/all/cmd", R)
    assert acl.allows("controller", "c", "xaso/dev/loa-1/cmd", W)
    assert acl.allows("controller", "c", "xaso/dev/loa-1/status", R)
    assert not acl.allows("controller", "c", "other/topic", R)
    assert not acl.allows(None, "c", "xaso/dev/loa-1/status", R)  # anonymous: nothing


def test_dangerous_names_get_no_pattern():
    acl = parse_acl("pattern readwrite dev/%u/x\npattern readwrite cl/%c\n")
    assert acl.allows("u", "c", "dev/u/x", W) and acl.allows("u", "c", "cl/c", R)
    assert not acl.allows("+", "c", "dev/+/x", W)
    assert not acl.allows("u", "c/#", "cl/c/#", W)
    assert not acl.allows(None, "c", "dev/%u/x", W)  # no user name: %u lines are skipped
    assert acl.allows(None, "c", "cl/c", W)


def test_sections_deny_and_default_access():
    acl = parse_acl(
        "# comment\n"
        "topic read public/#\n"
        "user alice\n"
        "topic home/#\n"
        "topic deny home/secret\n"
        "user  bob \n"
        "topic write home/+\n"
        "pattern read home/%u\n"
        "something else is ignored\n"
    )
    assert acl.allows(None, "c", "public/news", R) and not acl.allows("alice", "c", "public/x", R)
    assert acl.allows("alice", "c", "home/x", R) and acl.allows("alice", "c", "home/x", W)
    assert not acl.allows("alice", "c", "home/secret", R)  # deny wins within the section
    assert acl.allows("bob", "c", "home/bob", R)  # the pattern, after bob's own lines
    assert acl.allows("bob", "c", "home/x", W) and not acl.allows("bob", "c", "home/x", R)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user loa-a\ntopic sometimes xaso/#\n", "line 2: invalid topic access type 'sometimes'"),
        ("topic\n", "line 1: empty topic"),
        ("user\n", "line 1: missing user name"),
        ("pattern read a/#/b\n", "invalid topic filter"),
    ],
)
def test_lines_mosquitto_refuses(text, message):
    with pytest.raises(AclError, match=message):
        parse_acl(text)
