"""``Client.heartbeat_batch`` against the real ``vigil server``: one result per beat in order,
a refused beat (``service_not_found``, ``host_not_allowed``) failing only itself, and the
request refused as a whole raising ``VigilError``."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from typing import Any, Dict, List

import pytest

from conftest import VigilServer, free_port
from vigil_reporter import MAX_BATCH_BEATS, Beat, Client, VigilError


def create_agent_token(server: VigilServer, name: str, hosts: List[str]) -> str:
    body = json.dumps({"name": name, "role": "agent", "hosts": hosts}).encode()
    request = urllib.request.Request(
        server.url + "/v1/tokens",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {server.token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(json.loads(response.read())["secret"])


def listed(server: VigilServer, service_id: int) -> Dict[str, Any]:
    (service,) = [s for s in server.services() if s["id"] == service_id]
    return service


def test_a_batch_beats_every_service_and_answers_in_order(server: VigilServer) -> None:
    client = Client(server.url)
    ids = [client.register("py-batch-1", binary, zone="az-1") for binary in ("a", "b", "c")]
    assert len(set(ids)) == 3
    assert client.register("py-batch-1", "b") == ids[1], "get-or-create"
    first = client.heartbeat_batch(ids)
    assert [r.id for r in first.results] == ids
    assert all(r.ok and r.report_count == 1 for r in first.results), first
    assert first.service_down_time == 1.0
    # Reversed, with each field of a single beat: still one result per beat, in this order.
    beats = [
        Beat(ids[2], zone="az-2", health="failing", message="disk slow", overrun_s=0.0),
        Beat(ids[1], sent_at=dt.datetime.now(dt.timezone.utc), last_rtt_s=0.01),
        Beat(ids[0], last_error="timed out once", health="ok"),
    ]
    second = client.heartbeat_batch(beats)
    assert [(r.id, r.report_count, r.code) for r in second.results] == [
        (ids[2], 2, None), (ids[1], 2, None), (ids[0], 2, None),
    ]
    service = listed(server, ids[2])
    assert (service["zone"], service["health"], service["health_message"], service["state"]) == (
        "az-2", "failing", "disk slow", "up",
    )
    assert listed(server, ids[0])["health"] == "ok"
    assert client.heartbeat_batch([]).results == []


def test_an_unknown_service_fails_only_its_own_beat(server: VigilServer) -> None:
    client = Client(server.url)
    known = client.register("py-batch-2", "cinder-volume")
    answer = client.heartbeat_batch([known, 987654, Beat(known, zone="az-1")])
    ok, missing, again = answer.results
    assert (ok.id, ok.report_count, ok.ok) == (known, 1, True)
    assert (missing.id, missing.report_count, missing.ok) == (987654, None, False)
    assert missing.code == "service_not_found"
    assert missing.message and "987654" in missing.message
    assert (again.report_count, again.code) == (2, None)
    assert listed(server, known)["report_count"] == 2


def test_an_agent_token_for_another_host_fails_only_that_hosts_beats(server: VigilServer) -> None:
    other = Client(server.url).register("py-batch-other", "cinder-volume")  # the fleet's token
    token = create_agent_token(server, "py-batch-mine", ["py-batch-mine"])
    mine = Client(server.url, token=token)
    own = mine.register("py-batch-mine", "cinder-volume")
    answer = mine.heartbeat_batch([own, other, own])
    assert [(r.id, r.report_count, r.code) for r in answer.results] == [
        (own, 1, None), (other, None, "host_not_allowed"), (own, 2, None),
    ]
    assert listed(server, other)["report_count"] == 0
    # Registering on another host is refused as a whole, as any call.
    with pytest.raises(VigilError) as refused:
        mine.register("py-batch-other", "cinder-backup")
    assert (refused.value.status, refused.value.code) == (403, "host_not_allowed")


def test_a_request_refused_as_a_whole_raises(server: VigilServer) -> None:
    client = Client(server.url)
    known = client.register("py-batch-3", "cinder-volume")
    with pytest.raises(VigilError) as unauthorized:
        Client(server.url, token="not-a-token").heartbeat_batch([known])
    assert (unauthorized.value.status, unauthorized.value.code) == (401, "unauthorized")
    assert not unauthorized.value.outage
    with pytest.raises(VigilError) as too_large:
        client.heartbeat_batch([known] * (MAX_BATCH_BEATS + 1))
    assert (too_large.value.status, too_large.value.code) == (400, "batch_too_large")
    assert "400 batch_too_large" in str(too_large.value)
    assert listed(server, known)["report_count"] == 0, "nothing of a refused batch is applied"
    with pytest.raises(VigilError) as unreachable:
        Client(f"http://127.0.0.1:{free_port()}", timeout=2).heartbeat_batch([known])
    assert unreachable.value.outage and unreachable.value.status is None


def test_an_ill_formed_beat_is_refused_before_sending() -> None:
    client = Client("http://127.0.0.1:9")  # nothing is sent
    with pytest.raises(ValueError, match="health"):
        client.heartbeat_batch([Beat(1, health="sick")])
    with pytest.raises(ValueError, match="aware"):
        client.heartbeat_batch([Beat(1, sent_at=dt.datetime(2026, 1, 1))])
    with pytest.raises(TypeError, match="id"):
        client.heartbeat_batch([Beat("1")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="https"):
        Client("http://127.0.0.1:9", ca_file="/nonexistent.pem")
