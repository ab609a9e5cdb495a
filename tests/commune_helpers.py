"""Two communes on one controller, shared by the communes' tests (tests/test_communes_*.py):
their devices, a user and an API token per (commune, role) and the province admin's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.testclient import TestClient

from controller.auth.accounts import create_user
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.auth.tokens import create_token
from controller.db.broadcast_tables import BroadcastRow
from controller.db.fleet_tables import Alert
from controller.site.communes import add_commune
from controller.site.devices import add_device
from controller.site.directory import Site
from tests.broadcast_api_helpers import PASSWORD

COMMUNES = {"phu-an": "Xã Phú An", "tan-binh": "Xã Tân Bình"}
DEVICES = {"loa-an-1": ("phu-an", "an-thon-1"), "loa-binh-1": ("tan-binh", "binh-thon-1")}
OWN = {"phu-an": "loa-an-1", "tan-binh": "loa-binh-1"}
VILLAGE = {"phu-an": "an-thon-1", "tan-binh": "binh-thon-1"}
ROLES = ("broadcaster", "admin", "technician")
OTHER = {"phu-an": "tan-binh", "tan-binh": "phu-an"}


def add_communes(site: Site, port: int = 1883) -> None:
    """The two communes, and a speaker in a village of each (and in "all": the province)."""
    for commune, name in COMMUNES.items():
        add_commune(site.dir, commune, name)
    for device, (commune, village) in DEVICES.items():
        add_device(site.dir, device, ["speaker"], [village, "all"], broker_host="127.0.0.1",
                   broker_port=port, commune=commune)  # fmt: skip


def broadcast_id(commune: str) -> str:
    return ("a" if commune == "phu-an" else "b") * 32


class Two:
    """The app, a token per (commune, role) and the province's (``province`` roles)."""

    def __init__(
        self,
        app: Any,
        roles: Sequence[str] = ROLES,
        province: Sequence[str] = ("admin",),
        client: TestClient | None = None,
    ) -> None:
        self.app = app
        self.tokens: dict[tuple[str | None, str], str] = {}
        state = app.state.xaso
        people: list[tuple[str | None, str]] = [(c, r) for c in COMMUNES for r in roles]
        people += [(None, r) for r in province]
        with state.sessions() as db:
            for commune, role in people:
                name = f"{role}-{commune or 'tinh'}"
                user = create_user(db, state.auth.passwords, username=name, display_name=name,
                                   role=role, password=PASSWORD, now_ms=state.now_ms(),
                                   commune=commune)  # fmt: skip
                owner = Principal("user", user.id, name, name, Role(role), PERMISSIONS[Role(role)],
                                  commune=commune)  # fmt: skip
                self.tokens[commune, role], _ = create_token(db, owner, name, role, 1)
            for device, (commune, _village) in DEVICES.items():
                db.add(Alert(kind="device.offline", device_id=device, severity="critical",
                             raised_ms=state.now_ms(), message_vi="Mất kết nối",
                             message_en="Offline", details={}))  # fmt: skip
                db.add(BroadcastRow(id=broadcast_id(commune),
                                    kind="play", targets=[{"kind": "group", "id": commune}],
                                    level="normal", priority=2, label=f"Tin {commune}",
                                    created_by="x", created_ms=1, status="sent",
                                    devices=[device], commune=commune))  # fmt: skip
            db.commit()
        state.fleet.sync_registry(force=True)
        self.client = client or TestClient(app)

    def call(self, who: tuple[str | None, str], method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.tokens[who]}", **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)
