"""A site directory: reading it, and the atomic, locked writes every change makes.

Plain files an operator can read and back up; no network. Every write is
atomic (temp file + rename), so a crash never leaves half a file, and every
change takes a lock, so two operators cannot interleave. What writes them:
controller/site/keys.py (the site and its signing keys), devices.py (the
registry and the agent configurations) and broker_files.py (the broker's
password and ACL files).

    site/
      site.json           topic root, active key id, controller users' hashes (0600)
      controller.password the controller's MQTT password (0600)
      keys/<kid>.pem      Ed25519 signing keys: the active one and retired ones (0600)
      devices.json        the device registry (0600)
      communes.json       the province's communes, the tenants (absent: one commune, as before)
      devices/<id>.toml   one agent configuration per device, password included (0600)
      broker/passwd       mosquitto password file, from site.json and the registry
      broker/acl          mosquitto ACL file, from the registry
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from protocol.errors import ProtocolError
from protocol.signing import SigningKey

CONTROLLER_USER = "controller"
T = TypeVar("T")


class ProvisioningError(Exception):
    """A site operation that cannot be done; the message says why and what to do.

    The message is for the command line (it may name the site directory and
    options such as --force). One that the web can meet also has a ``code``
    and its ``params``, which the web app says in words of its own
    (controller/site/admin.py ``refusal``)."""

    def __init__(self, message: str, code: str = "", **params: object) -> None:
        super().__init__(message)
        self.code = code
        self.params = params


@dataclass(frozen=True)
class DeviceEntry:
    id: str
    roles: tuple[str, ...]
    groups: tuple[str, ...] = ()
    name: str = ""
    password_hash: str = ""
    created_ms: int = 0
    calls_from: tuple[str, ...] = ()  # a hall speaker: the kiosks whose calls it plays
    queue: str = ""  # a kiosk: the office queue it shares with the other kiosks of that office
    commune: str = ""  # the commune (tenant) it belongs to; "": the province's, or no communes


@dataclass(frozen=True)
class Commune:
    """A tenant of the province's controller: an MQTT id (``phu-an``) and its name."""

    id: str
    name: str  # as people say it: "Xã Phú An"
    created_ms: int = 0


@dataclass(frozen=True)
class Site:
    """Read access to an initialised site directory.

    The registry and the keys are parsed once and kept until their files
    change (another process, such as the CLI, may change them): an emergency
    to a thousand speakers should not wait for devices.json to be parsed.
    """

    dir: Path
    _parsed: dict[str, tuple[tuple[int, ...], Any]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def _cached(self, name: str, paths: tuple[Path, ...], parse: Callable[[], T]) -> T:
        """``parse()`` again only when one of ``paths`` changed (inode, mtime, size).

        Stamped before reading: a change during the read is seen on the next call.
        """
        stamp: list[int] = []
        for path in paths:
            try:
                st = path.stat()
            except FileNotFoundError:
                stamp += (-1, -1, -1)
                continue
            stamp += (st.st_ino, st.st_mtime_ns, st.st_size)
        held = self._parsed.get(name)
        if held is not None and held[0] == tuple(stamp):
            value: T = held[1]
            return value
        value = parse()
        self._parsed[name] = (tuple(stamp), value)
        return value

    @property
    def keys_dir(self) -> Path:
        return self.dir / "keys"

    @property
    def devices_dir(self) -> Path:
        return self.dir / "devices"

    @property
    def passwd_path(self) -> Path:
        return self.dir / "broker" / "passwd"

    @property
    def acl_path(self) -> Path:
        return self.dir / "broker" / "acl"

    @property
    def controller_password_path(self) -> Path:
        return self.dir / "controller.password"

    def meta(self) -> dict[str, Any]:
        return read_json(self.dir / "site.json")

    def _meta_read_only(self) -> dict[str, Any]:
        path = self.dir / "site.json"
        return self._cached("meta", (path,), lambda: read_json(path))

    @property
    def root(self) -> str:
        root: str = self._meta_read_only()["root"]
        return root

    def active_kid(self) -> str:
        kid: str = self._meta_read_only()["active_key"]
        return kid

    def signing_keys(self) -> dict[str, SigningKey]:
        """Every key of the site by id, the active one and the retired ones alike."""
        pems = tuple(sorted(self.keys_dir.glob("*.pem")))  # a key added or removed: parsed again
        return dict(self._cached("keys", pems, self._read_signing_keys))

    def _read_signing_keys(self) -> dict[str, SigningKey]:
        keys = {}
        for pem in sorted(self.keys_dir.glob("*.pem")):
            try:
                key = SigningKey.from_pem(pem.read_bytes())
            except ProtocolError as exc:
                raise ProvisioningError(f"{pem}: {exc}") from None
            keys[key.kid] = key
        return keys

    def signing_key(self) -> SigningKey:
        """The key that signs new commands and documents."""
        kid = self.active_kid()
        try:
            return self.signing_keys()[kid]
        except KeyError:
            raise ProvisioningError(f"{self.keys_dir}: the active key {kid} is missing") from None

    def trusted_keys(self) -> dict[str, str]:
        """What a device's ``[trust] keys`` lists: key id to public key, base64url."""
        return {kid: key.public.b64 for kid, key in self.signing_keys().items()}

    def controller_credentials(self) -> tuple[str, str]:
        password = self.controller_password_path.read_text(encoding="utf-8").strip()
        return CONTROLLER_USER, password

    def devices(self) -> list[DeviceEntry]:
        path = self.dir / "devices.json"
        return list(self._cached("devices", (path,), self._read_devices))

    def derived(self, name: str, make: Callable[[list[DeviceEntry]], T]) -> T:
        """``make(devices)``, made again only when the registry changes: what pages derive
        from a province's 20,000 devices (a commune's few dozen, the speakers, the groups)
        is not walked again on every request."""
        path = self.dir / "devices.json"
        return self._cached(f"devices/{name}", (path,), lambda: make(self.devices()))

    def devices_of(self, commune: str) -> tuple[DeviceEntry, ...]:
        """A commune's devices ("": the province's own), from an index of the registry."""
        return self.derived("by_commune", _by_commune).get(commune, ())

    def _read_devices(self) -> list[DeviceEntry]:
        raw = read_json(self.dir / "devices.json")["devices"]
        try:
            return [
                DeviceEntry(
                    **{
                        **d,
                        "roles": tuple(d["roles"]),
                        "groups": tuple(d["groups"]),
                        "calls_from": tuple(d.get("calls_from", ())),
                    }
                )
                for d in raw
            ]
        except (TypeError, KeyError) as exc:
            raise ProvisioningError(f"{self.dir / 'devices.json'}: damaged: {exc}") from None

    def communes(self) -> list[Commune]:
        """The province's communes by id; none (no file) is a site run by one commune."""
        path = self.dir / "communes.json"
        return list(self._cached("communes", (path,), self._read_communes))

    def _read_communes(self) -> list[Commune]:
        path = self.dir / "communes.json"
        if not path.exists():
            return []
        try:
            return [Commune(**c) for c in read_json(path)["communes"]]
        except (TypeError, KeyError) as exc:
            raise ProvisioningError(f"{path}: damaged: {exc}") from None

    def device_config_path(self, device_id: str) -> Path:
        return self.devices_dir / f"{device_id}.toml"


def open_site(directory: Path) -> Site:
    site = Site(Path(directory))
    if not (site.dir / "site.json").is_file():
        raise ProvisioningError(
            f"{site.dir} is not a site directory: create it with `xaso keys new --site {site.dir}`"
        )
    return site


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProvisioningError(f"{path} is missing") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProvisioningError(f"{path}: damaged: {exc}") from None
    if not isinstance(data, dict):
        raise ProvisioningError(f"{path}: damaged: not a JSON object")
    return data


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", 0o600)


def write_atomic(path: Path, data: str | bytes, mode: int, gid: int | None = None) -> None:
    """Atomic: a temp file with its final mode, synced, then renamed over ``path``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        if gid is not None:
            # Not root and not in the group: the owner keeps access, which is enough.
            with contextlib.suppress(PermissionError):
                os.fchown(fd, -1, gid)
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def make_dir(path: Path, mode: int) -> None:
    """Create ``path`` with ``mode`` (whatever the umask); leave an existing one alone."""
    if not path.is_dir():
        path.mkdir(parents=True)
        path.chmod(mode)


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _by_commune(devices: list[DeviceEntry]) -> dict[str, tuple[DeviceEntry, ...]]:
    by: dict[str, list[DeviceEntry]] = {}
    for d in devices:
        by.setdefault(d.commune, []).append(d)
    return {c: tuple(ds) for c, ds in by.items()}
