"""The reporter against the real ``vigil server``: registration, beats, a health check that
fails, a deleted service, a server that goes away and comes back, stop()."""

from __future__ import annotations

import logging
import time
import urllib.error
from pathlib import Path

import pytest

from conftest import VigilServer, free_port, messages, wait_until
from vigil_reporter import Reporter


def test_registers_and_heartbeats(server: VigilServer) -> None:
    reporter = Reporter(
        server.url, "py-node-1", "cinder-volume",
        topic="cinder-volume", zone="az-1", version="1.2.3", report_interval=0.2,
    ).start()
    try:
        wait_until("registered", lambda: reporter.service_id is not None)
        wait_until("three beats", lambda: reporter.report_count >= 3)
        listed = server.service("py-node-1", "cinder-volume")
        assert listed is not None
        assert listed["id"] == reporter.service_id
        assert listed["report_interval"] == 0.2
        assert (listed["zone"], listed["topic"], listed["version"]) == ("az-1", "cinder-volume", "1.2.3")
        assert listed["state"] == "up"
        assert listed["updated_at"] is not None
        # Get-or-create: a second reporter for the same service gets the same id.
        again = Reporter(server.url, "py-node-1", "cinder-volume", report_interval=0.2).start()
        wait_until("registered again", lambda: again.service_id is not None)
        assert again.service_id == reporter.service_id
        again.stop()
    finally:
        reporter.stop()


def test_stop_tells_the_server_and_the_service_is_stopped_at_once(server: VigilServer) -> None:
    reporter = Reporter(server.url, "py-node-2", "cinder-backup", report_interval=0.2).start()
    wait_until("two beats", lambda: reporter.report_count >= 2)
    started = time.monotonic()
    reporter.stop()
    assert time.monotonic() - started < 1.0, "stop() returns within one interval"
    reporter.stop()  # again: nothing
    service = server.service("py-node-2", "cinder-backup")
    assert service is not None and service["state"] == "stopped", service
    count = service["report_count"]
    time.sleep(1.5)
    service = server.service("py-node-2", "cinder-backup")
    assert service is not None and service["state"] == "stopped", service
    assert service["report_count"] == count


def test_stop_without_announcing_is_a_crash_and_the_service_goes_down(server: VigilServer) -> None:
    reporter = Reporter(server.url, "py-node-2b", "cinder-backup", report_interval=0.2).start()
    wait_until("two beats", lambda: reporter.report_count >= 2)
    reporter.stop(announce=False)
    wait_until(
        "down after stop",
        lambda: server.service("py-node-2b", "cinder-backup")["state"] == "down",  # type: ignore[index]
    )


def test_a_failed_health_check_is_sent_with_the_beats(
    server: VigilServer, caplog: pytest.LogCaptureFixture
) -> None:
    healthy = {"now": True}

    def check() -> bool:
        if not healthy["now"]:
            raise RuntimeError("disk unwritable")
        return True

    with Reporter(server.url, "py-node-3", "cinder-volume", report_interval=0.2, health_check=check) as reporter:
        wait_until("beats", lambda: reporter.report_count >= 2)
        assert server.service("py-node-3", "cinder-volume")["health"] == "ok"  # type: ignore[index]
        healthy["now"] = False
        wait_until(
            "alive but failing",
            lambda: server.service("py-node-3", "cinder-volume")["health"] == "failing",  # type: ignore[index]
        )
        service = server.service("py-node-3", "cinder-volume")
        assert service is not None
        assert (service["state"], service["health_message"]) == ("up", "disk unwritable")
        healthy["now"] = True
        wait_until(
            "ok again",
            lambda: server.service("py-node-3", "cinder-volume")["health"] == "ok",  # type: ignore[index]
        )
    assert messages(caplog.records, "health check fails: disk unwritable")
    assert messages(caplog.records, "health check passes again")


def test_a_health_check_returning_false_counts_as_failing(server: VigilServer) -> None:
    with Reporter(server.url, "py-node-4", "cinder-volume", report_interval=0.2, health_check=lambda: False) as reporter:
        wait_until("beats", lambda: reporter.report_count >= 2)
        service = server.service("py-node-4", "cinder-volume")
        assert service is not None
        assert (service["state"], service["health"]) == ("up", "failing")
        assert service["health_message"] == "the health check returned false"


def test_a_deleted_service_is_registered_again(
    server: VigilServer, caplog: pytest.LogCaptureFixture
) -> None:
    with Reporter(server.url, "py-node-5", "cinder-volume", report_interval=0.2) as reporter:
        wait_until("beats", lambda: reporter.report_count >= 1)
        old_id = reporter.service_id
        server.call("DELETE", f"/v1/services/{old_id}?force=true", admin=True)
        new_id = wait_until(
            "registered again",
            lambda: reporter.service_id if reporter.service_id not in (None, old_id) else None,
        )
        wait_until("beating again", lambda: (server.service("py-node-5", "cinder-volume") or {}).get("report_count", 0) >= 1)
        assert server.service("py-node-5", "cinder-volume")["id"] == new_id  # type: ignore[index]
    assert messages(caplog.records, rf"registered again \(old id {old_id}, new id {new_id}\)")


def test_the_server_going_away_and_coming_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = VigilServer(tmp_path / "data").start()
    try:
        reporter = Reporter(server.url, "py-node-6", "cinder-volume", report_interval=0.2).start()
        wait_until("beats", lambda: reporter.report_count >= 2)
        service_id = reporter.service_id
        server.stop()
        # Several ticks fail while it is away; none raises, the loss is logged once.
        time.sleep(1.5)
        assert reporter._thread is not None and reporter._thread.is_alive()
        server.start()
        wait_until("recovered", lambda: messages(caplog.records, "recovered connection"))
        before = server.service("py-node-6", "cinder-volume")["report_count"]  # type: ignore[index]
        wait_until(
            "beats after the restart",
            lambda: server.service("py-node-6", "cinder-volume")["report_count"] > before + 1,  # type: ignore[index]
        )
        assert reporter.service_id == service_id, "the same service, kept by the database"
        assert server.service("py-node-6", "cinder-volume")["state"] == "up"  # type: ignore[index]
        reporter.stop()
    finally:
        server.stop()
    lost = messages(caplog.records, "lost connection to vigil server")
    assert len(lost) == 1, lost
    assert lost[0].startswith(f"lost connection to vigil server {server.url}: heartbeat failed: ")
    assert len(messages(caplog.records, "recovered connection to vigil server")) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]


def test_an_unreachable_server_at_start_raises_nothing(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    reporter = Reporter(url, "py-node-7", "cinder-volume", report_interval=0.1).start()
    time.sleep(0.5)
    reporter.stop()
    assert reporter.service_id is None
    lost = messages(caplog.records, "lost connection")
    assert len(lost) == 1 and "registration failed" in lost[0], lost


def test_a_refusal_is_a_warning_not_an_outage(
    server: VigilServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A path prefix that is not a Vigil API: the server answers 404 not_found, a refusal.
    reporter = Reporter(server.url + "/nowhere", "py-node-8", "cinder-volume", report_interval=0.1).start()
    time.sleep(0.35)
    reporter.stop()
    refused = messages(caplog.records, "refused the registration")
    assert refused and "404" in refused[0], refused
    assert not messages(caplog.records, "lost connection")


def test_settings_the_server_would_refuse_fail_at_once() -> None:
    for kwargs in (
        {"report_interval": 0.05},
        {"report_interval": 4000},
        {"request_timeout": 0},
    ):
        with pytest.raises(ValueError):
            Reporter("http://127.0.0.1:1", "h", "b", **kwargs)
    with pytest.raises(ValueError, match="host"):
        Reporter("http://127.0.0.1:1", " ", "b")
    with pytest.raises(ValueError, match="binary"):
        Reporter("http://127.0.0.1:1", "h", "x" * 256)
    with pytest.raises(ValueError, match="scheme"):
        Reporter("127.0.0.1:8799", "h", "b")
    with pytest.raises(ValueError, match="ca_file"):
        Reporter("http://127.0.0.1:1", "h", "b", ca_file="/etc/ssl/certs/ca-certificates.crt")


def test_interval_not_shorter_than_service_down_time_is_warned_once(
    server: VigilServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Found by the beat's answer (service_down_time 1 s); the first beat comes after 1 s.
    with Reporter(server.url, "py-node-9", "cinder-volume", report_interval=1.0) as reporter:
        wait_until("two beats", lambda: reporter.report_count >= 2, limit=5)
    assert len(messages(caplog.records, "is not shorter than the server's service_down_time")) == 1


def test_admin_calls_in_the_test_helper_work(server: VigilServer) -> None:
    # The helper's own admin path, so a failure above is not blamed on it.
    with pytest.raises(urllib.error.HTTPError) as refused:
        server.call("DELETE", "/v1/services/999999")
    assert refused.value.code == 401
