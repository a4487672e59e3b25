"""Fixtures: the real ``vigil server`` binary on a free loopback port with a temporary data dir.

The binary is ``$VIGIL_BIN`` (``scripts/test`` sets it to the one ``cargo`` built), else
``target/debug/vigil`` of this repository. Without it, tests that need a server skip with a
notice; under CI (``CI=true``) they fail instead, so a missing component never passes silently.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]


def vigil_binary() -> str:
    candidates = [os.environ.get("VIGIL_BIN", "")]
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
    candidates.append(os.path.join(target, "debug", "vigil"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    message = (
        "the vigil binary is missing (set VIGIL_BIN or run `cargo build -p vigil`); "
        "looked at " + ", ".join(c for c in candidates if c)
    )
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VigilServer:
    """A ``vigil server`` child process: ``service_down_time`` 1 s, flush every 0.1 s."""

    def __init__(self, data_dir: Path, port: Optional[int] = None) -> None:
        self.binary = vigil_binary()
        self.data_dir = data_dir
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Optional[subprocess.Popen[str]] = None
        self.log: List[str] = []

    def start(self) -> "VigilServer":
        env = dict(os.environ, VIGIL_LOG="info")
        env.pop("VIGIL_ADMIN_TOKEN", None)
        env.pop("VIGIL_AGENT_TOKEN", None)  # the server's own token is given below
        self.process = subprocess.Popen(
            [
                self.binary, "server",
                "--listen", f"127.0.0.1:{self.port}",
                "--data-dir", str(self.data_dir),
                "--service-down-time", "1",
                "--flush-interval", "0.1",
                "--agent-token", "py-test-agent-token",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        listening = threading.Event()
        stderr = self.process.stderr
        assert stderr is not None

        def read() -> None:
            for line in stderr:
                self.log.append(line)
                if "vigil server listening" in line:
                    listening.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + 20
        while not listening.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("vigil server did not start:\n" + "".join(self.log))
        return self

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it; waits for the final flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None

    @property
    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    @property
    def agent_token(self) -> str:
        return "py-test-agent-token"

    def call(self, method: str, path: str, admin: bool = False) -> Any:
        request = urllib.request.Request(self.url + path, method=method)
        if admin:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=5) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def services(self, **query: str) -> List[Dict[str, Any]]:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return list(self.call("GET", "/v1/services?" + q)["services"])

    def service(self, host: str, binary: str) -> Optional[Dict[str, Any]]:
        found = self.services(host=host, binary=binary)
        return found[0] if found else None


def wait_until(what: str, check: Any, limit: float = 10.0) -> Any:
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def agent_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test's servers take one agent token (``--agent-token``), and reporters take it from
    the environment (``VIGIL_AGENT_TOKEN``), as on a real host."""
    token = "py-test-agent-token"
    monkeypatch.setenv("VIGIL_AGENT_TOKEN", token)
    return token


@pytest.fixture
def server(tmp_path: Path) -> Iterator[VigilServer]:
    running = VigilServer(tmp_path / "data").start()
    try:
        yield running
    finally:
        running.stop()


def messages(records: List[Any], text: str) -> List[str]:
    return [r.getMessage() for r in records if re.search(text, r.getMessage())]
