"""How a page or a report names a group: by what it is, not by its id where it has a name.

The group every speaker is in ("all") is the commune, or on a province's site
the province; a commune's own group is the commune's name. Pages (routes/) and
report files (report_sheets) share it, so it sits below both.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller import i18n

i18n.register(
    {"group.all": ("Toàn xã", "Whole commune"), "group.province": ("Toàn tỉnh", "Whole province")}
)


def group_name(lang: i18n.Lang, ident: str, communes: Mapping[str, str] | None = None) -> str:
    """A group in a list of groups; ``communes``: the site's communes by id (none on a
    one-commune site)."""
    if ident == "all":
        return i18n.t(lang, "group.province" if communes else "group.all")
    return communes.get(ident, ident) if communes else ident
