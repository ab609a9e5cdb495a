"""Communes in the site directory: adding and listing them, devices put in one, the
commune's own group, and the groups refused for spanning two (controller/site/communes.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from controller.site.communes import add_commune, list_communes
from controller.site.devices import list_devices, set_groups
from controller.site.directory import ProvisioningError, Site
from tests.site_helpers import add, run


def snapshot(site: Site) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(site.dir.rglob("*")) if p.is_file()}


@pytest.fixture
def two(site: Site) -> Site:
    add_commune(site.dir, "phu-an", "Xã Phú An")
    add_commune(site.dir, "tan-binh", "Xã  Tân Bình ")
    return site


def test_communes_are_listed_by_id_with_their_names(two: Site) -> None:
    assert [(c.id, c.name) for c in list_communes(two.dir)] == [
        ("phu-an", "Xã Phú An"),
        ("tan-binh", "Xã Tân Bình"),
    ]
    renamed = add_commune(two.dir, "phu-an", "Phường Phú An")  # a known id: a new name
    assert renamed.name == "Phường Phú An" and len(list_communes(two.dir)) == 2


def test_a_device_in_a_commune_is_in_its_group_and_its_config_says_so(two: Site) -> None:
    add(two, "loa-1", ("thon-1", "all"), commune="phu-an")
    [entry] = list_devices(two.dir)
    assert entry.commune == "phu-an" and entry.groups == ("thon-1", "all", "phu-an")
    config = tomllib.loads(two.device_config_path("loa-1").read_text())
    assert config["device"]["groups"] == ["thon-1", "all", "phu-an"]
    assert "xaso/grp/phu-an/cmd" in two.acl_path.read_text()
    set_groups(two.dir, "loa-1", ["thon-2"])  # regrouped: still in its commune's group
    assert list_devices(two.dir)[0].groups == ("thon-2", "phu-an")


def test_without_communes_the_registry_is_written_as_before(site: Site) -> None:
    add(site, "loa-1", ("thon-1", "all"))
    text = (site.dir / "devices.json").read_text()
    assert '"commune"' not in text and not (site.dir / "communes.json").exists()
    assert list_devices(site.dir)[0].groups == ("thon-1", "all")


@pytest.mark.parametrize(
    ("device", "groups", "commune", "says"),
    [
        ("loa-2", ("thon-1",), "tan-binh", "một nhóm chỉ thuộc một xã"),  # spans two
        ("loa-2", ("thon-1",), "", "a group belongs to one commune"),  # province + commune
        ("loa-2", ("phu-an",), "tan-binh", "is the whole of commune phu-an"),
        ("loa-2", ("phu-an",), "", "drop --group phu-an"),
        ("loa-2", ("thon-9",), "nope", "Không có xã 'nope'"),
    ],
)
def test_bad_communes_and_spanning_groups_are_refused_and_change_nothing(
    two: Site, device: str, groups: tuple[str, ...], commune: str, says: str
) -> None:
    add(two, "loa-1", ("thon-1", "all"), commune="phu-an")
    before = snapshot(two)
    with pytest.raises(ProvisioningError, match=says) as refused:
        add(two, device, groups, commune=commune)
    vi, _, en = str(refused.value).partition(" / ")
    assert vi and en and "\n" not in str(refused.value)
    assert snapshot(two) == before


def test_regrouping_into_another_communes_group_is_refused(two: Site) -> None:
    add(two, "loa-1", ("thon-1",), commune="phu-an")
    add(two, "loa-2", ("thon-2",), commune="tan-binh")
    before = snapshot(two)
    with pytest.raises(ProvisioningError, match="Group 'thon-1' already has loa-1"):
        set_groups(two.dir, "loa-2", ["thon-1"])
    assert snapshot(two) == before


@pytest.mark.parametrize(
    ("commune_id", "name", "says"),
    [
        ("Phu_An", "Xã Phú An", "commune id 'Phu_An' is not valid"),
        ("all", "Cả tỉnh", "not a commune id"),
        ("phu-an", "", "needs 1-100 characters"),
        ("thon-1", "Xã Thôn", "already a group"),
    ],
)
def test_bad_communes_are_refused(site: Site, commune_id: str, name: str, says: str) -> None:
    add(site, "loa-1", ("thon-1",))
    with pytest.raises(ProvisioningError, match=says):
        add_commune(site.dir, commune_id, name)
    assert list_communes(site.dir) == []


def test_the_commune_commands(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--site", str(site.dir)]
    assert run("commune", "list", *where) == 0
    assert "No communes" in capsys.readouterr().out
    assert run("commune", "add", "phu-an", "--name", "Xã Phú An", *where) == 0
    argv = ["device", "add", "loa-1", "--role", "speaker", "--broker-host", "h", *where]
    assert run(*argv, "--commune", "phu-an") == 0
    capsys.readouterr()
    assert run("commune", "list", *where) == 0
    assert capsys.readouterr().out.split() == ["phu-an", "1", "Xã", "Phú", "An"]
    assert run("device", "list", *where) == 0
    assert "[phu-an]" in capsys.readouterr().out
    assert run(*argv[:2], "loa-2", *argv[3:], "--commune", "tan-binh") == 2
    err = capsys.readouterr().err
    assert err.startswith("xaso: Không có xã 'tan-binh'") and err.count("\n") == 1
    assert "No commune 'tan-binh'" in err
