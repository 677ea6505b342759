"""The compose file's services, run natively: the same commands, environment and healthchecks,
with container addresses mapped to loopback (no container engine runs here)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

import yaml

from scripts.check_compose import bad_references
from tests.support import ROOT, ServiceProcess, spawn

COMPOSE = ROOT / "docker-compose.yml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def native_env(env: dict[str, str], ports: dict[str, int]) -> dict[str, str]:
    """Container values to loopback ones: hosts, ports, the feed's service name, /app paths."""
    mapped = {}
    for key, value in env.items():
        value = str(value)
        if key.endswith("_HOST"):
            value = "127.0.0.1"
        elif key.endswith("_PORT"):
            value = str(ports[value])
        elif key == "EDGE_FEED_TARGET":
            host, _, port = value.partition(":")
            assert host == "feed"
            value = f"127.0.0.1:{ports[port]}"
        elif value.startswith("/app/"):
            value = str(ROOT / value.removeprefix("/app/"))
        mapped[key] = value
    return mapped


def healthy(check: list[str], ports: dict[str, int], deadline: float) -> bool:
    assert check[0] == "CMD"
    command = [sys.executable if part == "python" else part for part in check[1:]]
    for container, native in ports.items():
        command = [
            part.replace(f"127.0.0.1:{container}", f"127.0.0.1:{native}") for part in command
        ]
    while time.monotonic() < deadline:
        if subprocess.run(command, capture_output=True, timeout=10, check=False).returncode == 0:
            return True
        time.sleep(0.5)
    return False


def test_compose_services_come_up_healthy_natively() -> None:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert bad_references(compose) == []
    assert services["edge"]["depends_on"]["feed"]["condition"] == "service_healthy"
    ports = {"50051": free_port(), "8000": free_port()}
    started: list[ServiceProcess] = []
    try:
        for name in ("feed", "edge"):  # depends_on order
            service = services[name]
            assert service["stop_grace_period"], "the drain has a bound"
            command = service["command"]
            assert command[:2] == ["python", "-m"]
            env = native_env(service["environment"], ports)
            # The exact command: spawn runs `python -m <module> <args>` from the repo root.
            started.append(spawn(name, command[2], command[3:], env=env))
            check = service["healthcheck"]
            budget = float(check["retries"]) * float(check["interval"].rstrip("s")) + 30
            assert healthy(check["test"], ports, time.monotonic() + budget), (
                f"{name} never healthy:\n" + started[-1].output()
            )
    finally:
        for process in reversed(started):
            process.stop()
    assert all(p.popen.returncode is not None for p in started)
