"""`[http] workers = 2`: the real `xaso controller` as a parent and two workers on one port,
on a real Mosquitto, with SQLite and with PostgreSQL: each worker a replica with its own
client id, a killed worker started again, and SIGTERM stopping them all
(controller/serving.py)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.brokers.mosquitto import Mosquitto, free_port
from controller.serving import listening_socket
from controller.settings import SettingsError, load_settings
from controller.site.directory import Site
from tests.controller_process import until
from tests.fleet import ROOT

CHEAP = "[security]\nargon2_time_cost = 1\nargon2_memory_kib = 1024\nargon2_parallelism = 1\n"
CLIENT_ID = "ctl-serving"


class Served:
    """`xaso controller` started with its output in a file, and its base URL."""

    def __init__(self, proc: subprocess.Popen[bytes], log: Path, url: str) -> None:
        self.proc, self.log, self.url = proc, log, url

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def healthy(self) -> bool:
        assert self.proc.poll() is None, self.output()
        try:
            return httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def serving(self) -> dict[int, int]:
        """Each worker's pid, by index, as the parent last said it was serving."""
        return {
            int(i): int(pid)
            for i, pid in re.findall(r"worker (\d) \(pid (\d+)\) serving", self.output())
        }


def start(tmp: Path, config_text: str) -> Served:
    port = free_port()
    config = tmp / "controller.toml"
    config.write_text(f"{CHEAP}[http]\nport = {port}\n{config_text}", encoding="utf-8")
    log = tmp / "controller.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "controller", "--config", str(config)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return Served(proc, log, f"http://127.0.0.1:{port}")


@pytest.fixture
def served(tmp_path: Path, site: Site, broker: Mosquitto, database_url: str) -> Iterator[Served]:
    """Two workers on a fresh database, SQLite then PostgreSQL: both start at once, and
    each upgrades it under the migration lock, so the schema is made once."""
    run = start(
        tmp_path,
        f'workers = 2\n[site]\ndir = "{site.dir}"\nclips_dir = "{tmp_path / "clips"}"\n'
        f'[database]\nurl = "{database_url}"\n'
        f'[mqtt]\nport = {broker.port}\nclient_id = "{CLIENT_ID}"\n',
    )
    try:
        yield run
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(30)
        for pid in run.serving().values():  # what a failed test left behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def connections(broker: Mosquitto, client_id: str) -> int:
    """How many times ``client_id`` has connected to ``broker``, by its log."""
    text = broker.log_path.read_text(encoding="utf-8", errors="replace")
    return len(re.findall(rf"New client connected from \S+ as {re.escape(client_id)} ", text))


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_two_workers_serve_as_two_replicas_and_a_dead_one_is_started_again(
    served: Served, broker: Mosquitto
) -> None:
    until("the controller answers", served.healthy)
    first = until("both workers serve", lambda: len(served.serving()) == 2 and served.serving())
    assert first[1] != first[2] and served.proc.pid not in first.values()
    # each worker its own persistent session on the broker, never the parent's id alone
    until("worker 1 connects", lambda: connections(broker, f"{CLIENT_ID}-1") == 1)
    until("worker 2 connects", lambda: connections(broker, f"{CLIENT_ID}-2") == 1)
    assert connections(broker, CLIENT_ID) == 0

    os.kill(first[1], signal.SIGKILL)
    until("worker 1 is started again", lambda: served.serving()[1] != first[1])
    assert f"worker 1 (pid {first[1]}) exited with code -9; starting it again in 0.5 s" in (
        served.output()
    )
    until("worker 1 connects again, on its id", lambda: connections(broker, f"{CLIENT_ID}-1") == 2)
    second = served.serving()[1]
    os.kill(second, signal.SIGKILL)  # dying again soon: the pause doubles
    until("worker 1 is started once more", lambda: served.serving()[1] != second)
    assert f"worker 1 (pid {second}) exited with code -9; starting it again in 1.0 s" in (
        served.output()
    )
    until("worker 1 connects a third time", lambda: connections(broker, f"{CLIENT_ID}-1") == 3)
    assert served.serving()[2] == first[2]  # the other one served on throughout
    assert connections(broker, f"{CLIENT_ID}-2") == 1
    for _ in range(20):  # the kernel deals connections to both; each must answer
        assert served.healthy()

    workers = served.serving()
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(60) == 0, served.output()
    output = served.output()
    assert "SIGTERM: stopping the 2 workers" in output and "all 2 workers stopped\n" in output
    assert output.count("Application shutdown complete") == 2, output
    assert not [pid for pid in workers.values() if alive(pid)], output
    assert "Traceback" not in output, output


def test_a_fault_at_start_stops_the_command_with_the_workers_reason(tmp_path: Path) -> None:
    """No worker ever served (here the schema was never made and the start only checks it):
    the command stops at once with the refusal's code, as one process would."""
    run = start(
        tmp_path,
        f'workers = 2\n[database]\nurl = "sqlite:///{tmp_path / "fresh.db"}"\n'
        "migrate_at_start = false\n[mqtt]\nport = 9\n",
    )
    try:
        code = run.proc.wait(120)
    finally:
        run.proc.kill()
    output = run.output()
    assert code == 2, output
    assert "xaso: the database schema is at nothing" in output
    assert "run `xaso controller migrate --config ...` first" in output
    assert re.search(r"worker \d \(pid \d+\) exited with code 2 before serving: stopping", output)
    assert not re.search(r"\) serving$", output, re.MULTILINE)


def test_connections_to_the_workers_socket_send_at_once() -> None:
    """TCP_NODELAY on what the workers accept: asyncio sets it only when the listening
    socket says it is TCP, which uvicorn's own bind does not (answers waited 40 ms)."""

    async def accept_one() -> int:
        sock = listening_socket("127.0.0.1", 0)
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn = transport.get_extra_info("socket")
                accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
            nodelay = await asyncio.wait_for(accepted, 30)
            writer.close()
            return nodelay

    assert asyncio.run(accept_one()) != 0


def test_workers_must_be_a_whole_number_from_1(tmp_path: Path) -> None:
    config = tmp_path / "controller.toml"
    for value, problem in (
        ("0", "Input should be greater than or equal to 1 (use a larger number)"),
        ('"two"', "Input should be a valid integer (write a whole number)"),
        ("1.5", "Input should be a valid integer (write a whole number)"),
        ("33", "Input should be less than or equal to 32 (use a smaller number)"),
    ):
        config.write_text(f"[http]\nworkers = {value}\n", encoding="utf-8")
        with pytest.raises(SettingsError) as caught:
            load_settings(config)
        assert f"[http] workers: {problem}" in str(caught.value)
    config.write_text("", encoding="utf-8")
    assert load_settings(config).http.workers == 1


def test_each_worker_gets_its_own_stable_client_id(tmp_path: Path) -> None:
    config = tmp_path / "controller.toml"
    config.write_text('[mqtt]\nclient_id = "ctl"\n', encoding="utf-8")
    settings = load_settings(config)
    assert [settings.for_worker(i).mqtt_client_id for i in (1, 2, 3)] == ["ctl-1", "ctl-2", "ctl-3"]
    assert settings.for_worker(2).http == settings.http  # nothing else differs
    config.write_text("", encoding="utf-8")
    default = load_settings(config)
    assert default.mqtt_client_id.startswith("xaso-controller-")
    assert default.for_worker(1).mqtt_client_id == default.mqtt_client_id + "-1"
    config.write_text(f'[mqtt]\nclient_id = "{"c" * 64}"\n', encoding="utf-8")
    long = load_settings(config).for_worker(12).mqtt_client_id
    assert long == "c" * 61 + "-12"  # within the 64 the setting allows
