"""Roles, what each may do, and who is acting: pure code, no I/O.

The matrix is the one place that decides. Routes ask for a permission, never
for a role, so a commune that wants officers to see the audit log changes one
line here. A new area adds its permission to `Permission` and to the roles
that get it in `PERMISSIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    BROADCASTER = "broadcaster"
    TECHNICIAN = "technician"
    OFFICER = "officer"
    LEADER = "leader"  # lãnh đạo: approves what the commune airs


class Permission(StrEnum):
    VIEW_FLEET = "view_fleet"  # dashboard, devices, alerts
    BROADCAST = "broadcast"  # play now, emergency, stop
    MANAGE_SCHEDULES = "manage_schedules"  # schedules, bulletin inbox
    MANAGE_CLIPS = "manage_clips"  # upload, text to speech
    MANAGE_DEVICES = "manage_devices"  # provisioning, device settings, test tone
    VIEW_REPORTS = "view_reports"  # proof of play, queue statistics
    MANAGE_USERS = "manage_users"  # users, roles, API tokens
    VIEW_AUDIT = "view_audit"
    APPROVE = "approve"  # approve or reject what waits to air; review emergencies


_ALL = frozenset(Permission)

PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: _ALL,
    Role.BROADCASTER: frozenset(
        {
            Permission.VIEW_FLEET,
            Permission.BROADCAST,
            Permission.MANAGE_SCHEDULES,
            Permission.MANAGE_CLIPS,
            Permission.VIEW_REPORTS,
        }
    ),
    Role.TECHNICIAN: frozenset(
        {Permission.VIEW_FLEET, Permission.MANAGE_DEVICES, Permission.VIEW_REPORTS}
    ),
    Role.OFFICER: frozenset({Permission.VIEW_FLEET, Permission.VIEW_REPORTS}),
    Role.LEADER: frozenset({Permission.VIEW_FLEET, Permission.VIEW_REPORTS, Permission.APPROVE}),
}


def allows(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]


def token_permissions(token_role: Role, owner_role: Role) -> frozenset[Permission]:
    """A token may do what its role allows and its owner still may: no more than either."""
    return PERMISSIONS[token_role] & PERMISSIONS[owner_role]


@dataclass(frozen=True)
class Principal:
    """Who is acting: a signed-in user, or an API token acting for its owner."""

    kind: str  # "user" or "token"
    user_id: int
    username: str
    display_name: str
    role: Role
    permissions: frozenset[Permission]
    ip: str = ""
    token_id: int | None = None
    token_name: str = ""
    csrf_token: str = ""  # empty for tokens: they are not sent by browsers
    # the commune it acts within (a token: its owner's); None: the whole province, as every
    # user of a site without communes is (controller/auth/tenancy.py decides what it sees)
    commune: str | None = None

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions

    @property
    def name(self) -> str:
        """How the audit log names the actor."""
        if self.kind == "token":
            return f"{self.username} (token {self.token_name})"
        return self.username
