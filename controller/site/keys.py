"""The site's signing keys: the first one (with the site itself), new ones, and rotation.

Every device configuration trusts every key of the site, the active one and
the retired ones alike; only the active key signs. Rotation stages a key the
configurations trust before it signs anything (docs/controller-data.md).
"""

from __future__ import annotations

import secrets
from pathlib import Path

from controller.site.broker_files import mosquitto_hash, write_broker_files
from controller.site.devices import rewrite_config
from controller.site.directory import (
    CONTROLLER_USER,
    ProvisioningError,
    Site,
    locked,
    make_dir,
    open_site,
    write_atomic,
    write_json,
)
from plumbing.clock import wall_ms
from protocol.signing import SigningKey
from protocol.topics import DEFAULT_ROOT, check_root


def init_site(directory: Path, *, root: str = DEFAULT_ROOT) -> Site:
    """Create a site with its first signing key and the controller's credentials; safe to re-run."""
    check_root(root)
    site = Site(Path(directory))
    make_dir(site.dir, 0o711)
    with locked(site.dir):
        if (site.dir / "site.json").is_file():
            if site.root != root:
                raise ProvisioningError(f"{site.dir} already uses the topic root {site.root!r}")
            return site
        for path, mode in ((site.keys_dir, 0o700), (site.devices_dir, 0o700)):
            make_dir(path, mode)
        make_dir(site.passwd_path.parent, 0o755)
        kid = _write_new_key(site)
        password = secrets.token_urlsafe(24)
        write_atomic(site.controller_password_path, password + "\n", 0o600)
        if not (site.dir / "devices.json").exists():
            write_json(site.dir / "devices.json", {"version": 1, "devices": []})
        # site.json last: its presence says the site is complete.
        meta = {
            "version": 1,
            "root": root,
            "active_key": kid,
            "users": {CONTROLLER_USER: mosquitto_hash(password)},
            "created_ms": wall_ms(),
        }
        write_json(site.dir / "site.json", meta)
        write_broker_files(site)
    return site


def new_key(directory: Path) -> str:
    """Make a new signing key the active one; older keys stay trusted (retired)."""
    site = open_site(directory)
    with locked(site.dir):
        kid = _write_new_key(site)
        _trust_every_key(site)
        write_json(site.dir / "site.json", {**site.meta(), "active_key": kid})
    return kid


def stage_key(directory: Path) -> str:
    """Rotation, step 1: a new key every device configuration trusts, that signs nothing yet.

    The agents learn it when their configuration is deployed again (the
    protocol carries no keys). ``activate_key`` then makes it sign. Staging
    again while a key is staged returns that key.
    """
    site = open_site(directory)
    with locked(site.dir):
        staged: str | None = site.meta().get("staged_key")
        if staged is None:
            staged = _write_new_key(site)
            write_json(site.dir / "site.json", {**site.meta(), "staged_key": staged})
        _trust_every_key(site)
    return staged


def activate_key(directory: Path, kid: str) -> None:
    """Rotation, last step: the staged key signs from now on; the old one stays trusted."""
    site = open_site(directory)
    with locked(site.dir):
        meta = site.meta()
        if meta.get("staged_key") != kid or kid not in site.signing_keys():
            raise ProvisioningError(
                f"key {kid!r} is not the staged key: stage a key first", "key_not_staged", kid=kid
            )
        meta.pop("staged_key")
        write_json(site.dir / "site.json", {**meta, "active_key": kid})


def _trust_every_key(site: Site) -> None:
    trusted = site.trusted_keys()
    for device in site.devices():
        rewrite_config(site, device.id, lambda doc: doc.update(trust={"keys": trusted}))


def _write_new_key(site: Site) -> str:
    key = SigningKey.generate()
    write_atomic(site.keys_dir / f"{key.kid}.pem", key.to_pem(), 0o600)
    return key.kid
