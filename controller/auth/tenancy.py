"""Who may see and act on what, commune by commune: pure code, no I/O.

One controller serves a province; its communes are tenants (docs/communes.md).
A principal's ``commune`` is ``None`` for a province user (every user of a
site without communes is one) and a commune id for a commune user. This
module is the one place that decides, so that devices, targets and
broadcasts today, and clips, schedules and reports next, ask the same rule:

- a province user sees every commune; a commune user, their own only;
- a device (or group, or alert) is within a principal's scope when its
  commune is theirs; a device of no commune is the province's;
- a target is allowed to a commune user only if every speaker it reaches is
  in their commune (and it reaches one at least);
- a province emergency is stopped only by a province user, and a commune
  user's emergency is sent one priority below a province one, and their stop
  caps one below it too, so the speaker itself keeps the rule
  (``EMERGENCY_PRIORITY``, ``stop_cap``).

Roles (controller/auth/roles.py) say what a principal may do; this module
says where.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Commune = str | None  # None: the province (or a site of one commune)

# The contract's priorities (broadcast/levels.py): 7-9 is an emergency. The province's
# emergency takes the top one, a commune's the one below, so the province's preempts a
# commune's and a commune's stop (capped below the top) never cuts the province's.
PROVINCE_EMERGENCY_PRIORITY = 9
COMMUNE_EMERGENCY_PRIORITY = 8


def is_province(commune: Commune) -> bool:
    return commune is None


def visible_communes(principal: Commune, communes: Iterable[str]) -> list[str]:
    """The communes a principal sees: every one for the province, else their own."""
    known = sorted(set(communes))
    if principal is None:
        return known
    return [c for c in known if c == principal]


def sees(principal: Commune, owner: Commune) -> bool:
    """Whether something of ``owner``'s commune (a device, a group, an alert, a broadcast,
    a user) is within the principal's scope. ``""`` counts as no commune."""
    return principal is None or (owner or None) == principal


def sees_broadcast(principal: Commune, made_for: Commune, reached: Iterable[str]) -> bool:
    """A broadcast is seen by the province, by the commune it was made for, and by every
    commune whose speakers it reached (a province bulletin: read-only there)."""
    return sees(principal, made_for) or principal in set(reached)


def may_manage_user(principal: Commune, user_commune: Commune) -> bool:
    """A province admin manages any user; a commune admin only their commune's."""
    return sees(principal, user_commune)


def target_allowed(principal: Commune, reached: Sequence[Commune]) -> bool:
    """A target reaching speakers of communes ``reached`` (one entry per speaker)."""
    if principal is None:
        return True
    return bool(reached) and all((c or None) == principal for c in reached)


def broadcast_commune(principal: Commune) -> Commune:
    """The commune a broadcast is made for: its author's (None: the province's)."""
    return principal


def may_stop(principal: Commune, made_for: Commune, level: str) -> bool:
    """Whether a principal may stop or cancel a broadcast made for ``made_for`` at ``level``.

    A province emergency is the province's to stop; anything else is stopped by
    whoever sees it."""
    if made_for is None and level == "emergency":
        return principal is None
    return sees(principal, made_for)


def emergency_priority(principal: Commune) -> int:
    return PROVINCE_EMERGENCY_PRIORITY if principal is None else COMMUNE_EMERGENCY_PRIORITY


def stop_cap(principal: Commune, priority_max: int) -> int:
    """The highest priority a principal's stop may cut: a commune's never reaches the
    province's emergency."""
    if principal is None:
        return priority_max
    return min(priority_max, COMMUNE_EMERGENCY_PRIORITY)


def reads(principal: Commune, owner: Commune) -> bool:
    """Whether a principal may read (list, play, schedule) something the province or a
    commune offers: a clip, a relay station. The province's are every commune's to use
    (a province bulletin is played locally, VOV is defined once); a commune's are its
    own. Changing or deleting it stays ``sees``: the province's are the province's."""
    return principal is None or (owner or None) is None or (owner or None) == principal


def reads_any(principal: Commune, holders: Iterable[Commune]) -> bool:
    """``reads`` for something several communes hold one entry of each (a clip uploaded
    by two communes is one file, with a library entry for each)."""
    return any(reads(principal, h) for h in holders)


def shows_in_calendar(principal: Commune, owner: Commune, reached: Sequence[Commune]) -> bool:
    """Whether a schedule entry of ``owner``'s, reaching speakers of ``reached``, shows in
    a principal's calendar: their own entries, and (read-only, so that a commune sees
    what will air on its speakers) the province's entries reaching one of theirs."""
    if sees(principal, owner):
        return True
    return (owner or None) is None and any((c or None) == principal for c in reached)


def setting_key(commune: Commune, single: str) -> str:
    """The row a commune's setting (such as approval_required) is kept under; the
    province's, and a site of one commune's, is ``single`` (the site-wide one as before)."""
    return single if commune is None else commune


def bulletin_for(sender: Commune, named: Commune) -> Commune:
    """The commune a bulletin from above is for: the one it names, else its sender's
    (a province sender's: the province, every commune's). Whether the sender may
    address it is ``sees(sender, ...)``: a commune's token only its own commune."""
    return named if named is not None else sender
