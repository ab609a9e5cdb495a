"""API tokens keyed by commune (issue 14), over the API and the page, on both databases: a
commune admin lists and revokes only their commune's users' tokens, as they manage only
their users; the province admin, every token. Another commune's token is a 404 and stays
live."""

from __future__ import annotations

import pytest

from tests import test_communes_api as api
from tests.broadcast_api_helpers import refused
from tests.commune_helpers import COMMUNES, OTHER, ROLES, Two

two = api.two  # the fixture, shared


def names(two: Two, who: tuple[str | None, str]) -> dict[str, int]:
    answer = two.call(who, "GET", "/api/tokens")
    assert answer.status_code == 200, answer.text
    return {t["name"]: t["id"] for t in answer.json()}


@pytest.mark.parametrize("commune", list(COMMUNES))
def test_a_commune_admin_lists_and_revokes_only_their_communes_tokens(
    two: Two, commune: str
) -> None:
    me, other = (commune, "admin"), OTHER[commune]
    assert set(names(two, me)) == {f"{role}-{commune}" for role in ROLES}
    listed = two.call(me, "GET", "/api/tokens").json()
    assert {t["commune"] for t in listed} == {commune}
    everyone = names(two, (None, "admin"))
    theirs = everyone[f"broadcaster-{other}"]
    refused(two.call(me, "DELETE", f"/api/tokens/{theirs}"), 404)
    page = two.call(me, "POST", f"/tokens/{theirs}/revoke")
    assert page.status_code == 404 and "broadcaster-" + other not in page.text
    assert two.call((other, "broadcaster"), "GET", "/api/clips").status_code == 200  # still live
    html = two.call(me, "GET", "/tokens").text
    assert f"broadcaster-{commune}" in html and f"broadcaster-{other}" not in html
    assert "admin-tinh" not in html  # the province's tokens are the province's
    mine = names(two, me)[f"broadcaster-{commune}"]
    revoked = two.call(me, "DELETE", f"/api/tokens/{mine}")
    assert revoked.status_code == 200 and revoked.json()["revoked_ms"] is not None
    assert two.call((commune, "broadcaster"), "GET", "/api/clips").status_code == 401


@pytest.mark.parametrize("role", [r for r in ROLES if r != "admin"])
def test_no_other_role_of_a_commune_lists_tokens(two: Two, role: str) -> None:
    refused(two.call(("phu-an", role), "GET", "/api/tokens"), 403)


def test_the_province_admin_lists_and_revokes_every_token(two: Two) -> None:
    everyone = names(two, (None, "admin"))
    assert set(everyone) == {f"{r}-{c}" for c in COMMUNES for r in ROLES} | {"admin-tinh"}
    html = two.call((None, "admin"), "GET", "/tokens").text
    assert all(name in html for name in COMMUNES.values())  # the owner's commune, by name
    answer = two.call((None, "admin"), "DELETE", f"/api/tokens/{everyone['technician-phu-an']}")
    assert answer.status_code == 200 and answer.json()["commune"] == "phu-an"
    assert two.call(("phu-an", "technician"), "GET", "/api/devices").status_code == 401
