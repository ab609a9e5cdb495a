"""The broadcasts page's weight at 10,000 speakers: the target lists, before and after.

A site with N speakers in 100 villages (the registry written in one go, as
`xaso device add` would leave it, without hashing N passwords) and the app on
it; then, in the same run, over the same registry:

1. the baseline: the former target list, a checkbox per group and per speaker,
   three times (emergency, play, stop), rendered from the same template engine;
2. the page as served now (GET /broadcasts), and a search (?q=) on it;
3. GET /api/targets, one page of a search.

    .venv/bin/python -m bench.broadcasts_page [--devices 10000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from fastapi.testclient import TestClient
from jinja2 import Template

from controller.app import create_app
from controller.auth.accounts import create_user
from controller.auth.roles import PERMISSIONS, Principal, Role
from controller.auth.tokens import create_token
from controller.settings import load_settings
from controller.site.devices import add_device
from controller.site.directory import DeviceEntry, Site, write_json
from controller.site.keys import init_site

# the former controller/web/templates/_targets.html, with its labels as they rendered
BEFORE = Template(
    '<fieldset class="targets"><legend>Nơi phát</legend>\n'
    "{% for value, name in targets %}"
    '<label class="check"><input type="checkbox" name="target" value="{{ value }}"> '
    "{{ name }}</label>\n{% endfor %}</fieldset>\n"
)
PASSWORD = "mot-mat-khau-dai"


def many_speakers(site: Site, count: int, villages: int = 100) -> None:
    """``count`` speakers, each in a village and in "all", in the site's registry."""
    add_device(site.dir, "loa-00000", ["speaker"], ["thon-000", "all"],
               broker_host="127.0.0.1", broker_port=1883)  # fmt: skip
    (first,) = site.devices()
    rows = [
        asdict(DeviceEntry(id=f"loa-{i:05d}", roles=("speaker",),
                           groups=(f"thon-{i % villages:03d}", "all"), name=f"Cụm loa số {i}",
                           password_hash=first.password_hash))
        for i in range(count)
    ]  # fmt: skip
    write_json(site.dir / "devices.json", {"version": 1, "devices": rows})


def app_on(tmp: Path, site: Site) -> TestClient:
    config = tmp / "controller.toml"
    config.write_text(
        "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
        f'[site]\ndir = "{site.dir}"\nclips_dir = "{tmp / "clips"}"\n'
        f'[database]\nurl = "sqlite:///{tmp / "c.db"}"\n[mqtt]\nport = 9\n',
        encoding="utf-8",
    )
    app = create_app(load_settings(config))
    state = app.state.xaso
    with state.sessions() as db:
        user = create_user(
            db,
            state.auth.passwords,
            username="lan",
            display_name="Lan",
            role="broadcaster",
            password=PASSWORD,
            now_ms=state.now_ms(),
        )
        role = Role.BROADCASTER
        owner = Principal(
            "user", user.id, user.username, user.display_name, role, PERMISSIONS[role]
        )
        token, _row = create_token(db, owner, "bench", role.value, state.now_ms())
        db.commit()  # fmt: skip
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


def run(devices: int) -> None:
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        site = init_site(tmp / "site")
        many_speakers(site, devices)
        speakers = site.devices()
        groups = sorted({g for d in speakers for g in d.groups})
        targets = [(f"group:{g}", f"Nhóm {g}") for g in groups]
        targets += [(f"device:{d.id}", f"Cụm loa {d.id}") for d in speakers]
        before = 3 * len(BEFORE.render(targets=targets).encode())
        client = app_on(tmp, site)
        print(f"{devices} speakers in {len(groups) - 1} villages; load average "
              f"{os.getloadavg()[0]:.1f}")  # fmt: skip
        print(f"{'what':42} {'bytes':>10} {'checkboxes':>11} {'ms':>7}")
        print(f"{'before: the target lists alone (3 forms)':42} {before:>10} "
              f"{3 * len(targets):>11} {'':>7}")  # fmt: skip
        for label, path in (
            ("now: GET /broadcasts (whole page)", "/broadcasts"),
            ("now: GET /broadcasts?q=loa-0999", "/broadcasts?q=loa-0999"),
            ("now: GET /api/targets?q=loa-0999", "/api/targets?q=loa-0999"),
        ):
            t0 = time.perf_counter()
            got = client.get(path)
            ms = (time.perf_counter() - t0) * 1000
            assert got.status_code == 200, got.text[:300]
            boxes = got.text.count('type="checkbox"')
            print(f"{label:42} {len(got.content):>10} {boxes:>11} {ms:>7.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    run(parser.parse_args().devices)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
