"""Mosquitto's ACL file, parsed and checked in pure Python, for the embedded broker.

The embedded broker must refuse exactly what Mosquitto refuses with the same
``broker/acl``, so this follows Mosquitto 2's ``acl_file`` rules rather than
inventing a format:

- ``user NAME`` starts a section; ``topic [read|write|readwrite|deny] FILTER``
  lines belong to the section above them (before any ``user`` line, to
  clients without a user name). With no access word a line is ``readwrite``.
- ``pattern [ACCESS] FILTER`` applies to every client, with ``%u`` replaced by
  its user name and ``%c`` by its client id. A user name or client id holding
  ``+``, ``#`` or ``/`` gets no pattern at all (it could widen the filter).
- A client's own lines are checked first, then the patterns; within each,
  a matching ``deny`` wins over a grant. Nothing matching means denied.
- A line starting with ``#`` is a comment; other unknown lines are ignored.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class AclError(ValueError):
    """A line Mosquitto would refuse to load; the message names the line."""


class Access(enum.IntFlag):
    DENY = 0
    READ = 1
    WRITE = 2


_ACCESS_WORDS = {
    "read": Access.READ,
    "write": Access.WRITE,
    "readwrite": Access.READ | Access.WRITE,
    "deny": Access.DENY,
}
_DANGEROUS = frozenset("+#/")


@dataclass(frozen=True)
class Rule:
    access: Access
    filter: str


@dataclass(frozen=True)
class Acl:
    """The parsed file: rules by user name (``None``: no user name) and the patterns."""

    users: Mapping[str | None, tuple[Rule, ...]] = field(default_factory=dict)
    patterns: tuple[Rule, ...] = ()

    def allows(self, username: str | None, client_id: str, topic: str, access: Access) -> bool:
        """Whether a client may ``access`` (READ or WRITE) the topic name ``topic``."""
        verdict = _decide(self.users.get(username, ()), topic, access)
        if verdict is not None:
            return verdict
        names = [client_id] if username is None else [client_id, username]
        if any(_DANGEROUS & set(name) for name in names):
            return False
        patterns = [
            Rule(rule.access, _substitute(rule.filter, username, client_id))
            for rule in self.patterns
            if username is not None or "%u" not in rule.filter
        ]
        return _decide(patterns, topic, access) is True


def parse_acl(text: str) -> Acl:
    """Parse ACL text as Mosquitto's ``acl_file`` loader does; raise AclError where it fails."""
    users: dict[str | None, list[Rule]] = {}
    patterns: list[Rule] = []
    user: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.startswith("#"):
            continue
        words = raw.split(maxsplit=1)
        if not words:
            continue
        keyword, rest = words[0], words[1].strip() if len(words) > 1 else ""
        if keyword == "user":
            if not rest:
                raise AclError(f"line {number}: missing user name")
            user = rest
        elif keyword in ("topic", "pattern"):
            rule = _rule(rest, number)
            if keyword == "pattern":
                patterns.append(rule)
            else:
                users.setdefault(user, []).append(rule)
    return Acl({name: tuple(rules) for name, rules in users.items()}, tuple(patterns))


def valid_filter(topic_filter: str) -> bool:
    """An MQTT topic filter: not empty; ``#`` only as the whole last level, ``+`` a whole level."""
    if not topic_filter or "\0" in topic_filter:
        return False
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether a topic name matches a filter (MQTT 3.1.1 section 4.7).

    ``a/#`` matches ``a`` itself; a topic starting with ``$`` is not matched by
    a wildcard in the first level.
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    wanted = topic_filter.split("/")
    levels = topic.split("/")
    for index, part in enumerate(wanted):
        if part == "#":
            return True
        if index >= len(levels) or part not in ("+", levels[index]):
            return False
    return len(wanted) == len(levels)


def _rule(rest: str, number: int) -> Rule:
    words = rest.split(maxsplit=1)
    if not words:
        raise AclError(f"line {number}: empty topic")
    if len(words) == 1:
        access, topic_filter = Access.READ | Access.WRITE, words[0]
    elif words[0] in _ACCESS_WORDS:
        access, topic_filter = _ACCESS_WORDS[words[0]], words[1].strip()
    else:
        raise AclError(f"line {number}: invalid topic access type {words[0]!r}")
    if not valid_filter(topic_filter):
        raise AclError(f"line {number}: invalid topic filter {topic_filter!r}")
    return Rule(access, topic_filter)


def _decide(rules: list[Rule] | tuple[Rule, ...], topic: str, access: Access) -> bool | None:
    """Deny if a deny rule matches, grant if a granting rule matches, else no verdict."""
    matching = [rule for rule in rules if topic_matches(rule.filter, topic)]
    if any(rule.access == Access.DENY for rule in matching):
        return False
    if any(rule.access & access for rule in matching):
        return True
    return None


def _substitute(topic_filter: str, username: str | None, client_id: str) -> str:
    """Replace ``%c`` and ``%u`` in one left-to-right pass, as Mosquitto does."""
    out, i = [], 0
    while i < len(topic_filter):
        pair = topic_filter[i : i + 2]
        if pair == "%c":
            out.append(client_id)
        elif pair == "%u" and username is not None:
            out.append(username)
        else:
            out.append(topic_filter[i])
            i += 1
            continue
        i += 2
    return "".join(out)
