"""Issue 15: the ticket's QR code links to an address a citizen's phone can open.

controller_url first (the controller's page, /ve/<device>/<ticket>), then public_url,
else the kiosk on the office network (office_address, or web_host when it is one
address); a kiosk on every interface with none of them is
refused when the agent's configuration is read, saying what to set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from msgspec import ValidationError

from edge.config import ConfigError, load_config
from kiosk.config import KioskSection
from kiosk.escpos_read import qr_data
from kiosk.service import Kiosk
from kiosk.virtual_printer import VirtualPrinter
from plumbing.validation import convert

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "agent.example.toml"
AGENT = """
[device]
id = "kiosk-1"
roles = {roles}

[trust]
keys = {{ "70ae4ad3a7147332" = "OL_VTvN8P0tBFzMW5KL7qztej3bWZmDdpDDIE4IwER8" }}

[kiosk]
{kiosk}
"""


def agent_file(tmp_path: Path, kiosk: str, roles: str = '["kiosk"]') -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(AGENT.format(roles=roles, kiosk=kiosk), encoding="utf-8")
    return path


def base_url(**settings: Any) -> str | None:
    return convert(settings, KioskSection, strict=False).ticket_base_url


def test_public_url_first_then_office_address_then_a_single_web_host() -> None:
    both = {"office_address": "192.168.1.10", "public_url": "https://tanphu.xaso.vn/"}
    assert base_url(**both) == "https://tanphu.xaso.vn"
    assert base_url(office_address="192.168.1.10") == "http://192.168.1.10:8080"
    assert base_url(office_address="kiosk-1.lan", web_port=80) == "http://kiosk-1.lan:80"
    assert base_url(web_host="10.0.0.7", web_port=8081) == "http://10.0.0.7:8081"
    assert base_url(web_host="::", office_address="fd00::7") == "http://[fd00::7]:8080"
    # a bench or the demo, whose pages are on this machine only
    assert base_url(web_host="127.0.0.1") == "http://127.0.0.1:8080"
    assert base_url() is None and base_url(web_host="::") is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_kiosk_on_every_interface_with_no_address_is_refused_saying_what_to_set(
    tmp_path: Path, host: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(agent_file(tmp_path, f'web_host = "{host}"'))
    message = str(refused.value)
    assert f"web_host = '{host}'" in message
    assert "[kiosk] office_address" in message and "[kiosk] public_url" in message
    assert "192.168.1.10" in message  # an example of what to write


def test_a_device_without_the_kiosk_role_needs_no_address(tmp_path: Path) -> None:
    config = load_config(agent_file(tmp_path, 'web_host = "0.0.0.0"', roles='["speaker"]'))
    assert config.kiosk.ticket_base_url is None


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"public_url": "http://127.0.0.1:8080"}, "public_url 'http://127.0.0.1:8080' cannot"),
        ({"public_url": "http://localhost/"}, "cannot be reached from a citizen's phone"),
        ({"public_url": "http://[::1]:8080"}, "cannot be reached"),
        ({"public_url": "http://0.0.0.0:8080"}, "cannot be reached"),
        ({"public_url": "ftp://tanphu.xaso.vn"}, "public_url"),
        ({"office_address": "127.0.0.1"}, "office_address '127.0.0.1' is not this kiosk's"),
        ({"office_address": "0.0.0.0"}, "office_address"),
        ({"office_address": "192.168.1.10/24"}, "office_address"),
        ({"office_address": "http://192.168.1.10"}, "office_address"),
        ({"hall_notice": "x" * 301}, "hall_notice"),
    ],
)
def test_unreachable_or_malformed_addresses_are_refused(
    settings: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ValidationError, match=needle.replace("[", r"\[").replace("(", r"\(")):
        convert(settings, KioskSection, strict=False)


def test_the_example_kiosk_prints_no_loopback_qr(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8").replace(
        'roles = ["speaker"]', 'roles = ["speaker", "kiosk"]', 1
    )
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    kiosk = load_config(path).kiosk
    assert kiosk.web_host == "0.0.0.0" and kiosk.ticket_base_url == "http://192.168.1.10:8080"
    assert kiosk.hall_notice.startswith("Xin quý khách")


def test_the_printed_qr_code_links_to_the_office_address(
    make_kiosk: Callable[..., Kiosk], virtual_printer: VirtualPrinter
) -> None:
    kiosk = make_kiosk(web_host="0.0.0.0", office_address="192.168.1.10")
    issued = kiosk.issue("ho-tich")
    (ticket,) = virtual_printer.wait_tickets(1)
    expected = f"http://192.168.1.10:{kiosk.cfg.web_port}/ve/{issued['ticket_id']}"
    assert qr_data(ticket.items) == expected.encode()


def test_the_controllers_address_takes_the_qr_code_with_the_office_as_fallback() -> None:
    cfg = convert({
        "controller_url": "https://tanphu.xaso.vn/",
        "office_address": "192.168.1.10",
    }, KioskSection, strict=False)  # fmt: skip
    assert cfg.status_url("kiosk-1", "t1") == "https://tanphu.xaso.vn/ve/kiosk-1/t1"
    assert cfg.status_url(None, "t1") == "http://192.168.1.10:8080/ve/t1"  # no device id known
    assert KioskSection().status_url("kiosk-1", "t1") == "http://127.0.0.1:8080/ve/t1"
    KioskSection(controller_url="https://tanphu.xaso.vn").check_ticket_address()  # reachable
    with pytest.raises(ValueError, match=r"controller_url .* cannot"):
        KioskSection(controller_url="http://127.0.0.1:8000")
    with pytest.raises(ValueError, match=r"\[kiosk\] controller_url"):
        KioskSection().check_ticket_address()


def test_the_printed_qr_code_opens_the_controllers_page(
    make_kiosk: Callable[..., Kiosk], virtual_printer: VirtualPrinter
) -> None:
    kiosk = make_kiosk(
        web_host="0.0.0.0", controller_url="https://tanphu.xaso.vn", device_id="kiosk-1"
    )
    issued = kiosk.issue("ho-tich")
    (ticket,) = virtual_printer.wait_tickets(1)
    expected = f"https://tanphu.xaso.vn/ve/kiosk-1/{issued['ticket_id']}"
    assert qr_data(ticket.items) == expected.encode()
