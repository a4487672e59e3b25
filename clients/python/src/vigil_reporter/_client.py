"""Calls made by the host program itself: register services and heartbeat many in one request.

Unlike :class:`~vigil_reporter.Reporter`, nothing runs on a thread of its own and a call that
fails as a whole raises :class:`~vigil_reporter.VigilError`: the caller decides when to beat
and what to do about an error. One beat of a batch that the server refuses (its service was
deleted, an agent token for another host...) is only that beat's result: the others are applied.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

from ._reporter import (
    DEFAULT_REPORT_INTERVAL,
    MAX_HEALTH_MESSAGE_LEN,
    MAX_LAST_ERROR_LEN,
    REPORT_INTERVAL_RANGE,
    _build_opener,
    _CallError,
    _check_field,
    _check_url,
    _now_rfc3339,
    _post_json,
)

__all__ = ["Beat", "BeatResult", "BatchResult", "Client", "MAX_BATCH_BEATS"]

#: Most beats one ``POST /v1/heartbeats`` may carry; the server refuses more, whole, with 400
#: ``batch_too_large``.
MAX_BATCH_BEATS = 10_000

_HEALTH = ("ok", "warning", "failing")


@dataclass(frozen=True)
class Beat:
    """One service's beat in a batch: its ``id`` and the fields of a single heartbeat, each
    left out when ``None``. ``sent_at`` (a ``datetime`` or the server's RFC 3339 text) defaults
    to the moment the batch is sent; ``health`` is ``ok``, ``warning`` or ``failing``, with
    ``message`` the reason."""

    id: int
    zone: Optional[str] = None
    sent_at: Union[_dt.datetime, str, None] = None
    health: Optional[str] = None
    message: Optional[str] = None
    last_error: Optional[str] = None
    last_rtt_s: Optional[float] = None
    overrun_s: Optional[float] = None

    def _body(self, now: str) -> Dict[str, Any]:
        if isinstance(self.id, bool) or not isinstance(self.id, int):
            raise TypeError(f"a beat's id must be an int, not {type(self.id).__name__}")
        if self.health is not None and self.health not in _HEALTH:
            raise ValueError(f"health must be one of {', '.join(_HEALTH)}, not {self.health!r}")
        body: Dict[str, Any] = {"id": self.id}
        sent_at = self.sent_at
        if isinstance(sent_at, _dt.datetime):
            if sent_at.tzinfo is None:
                raise ValueError("sent_at must be an aware datetime (UTC or with an offset)")
            sent_at = sent_at.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body["sent_at"] = now if sent_at is None else sent_at
        for key, value in (
            ("zone", self.zone),
            ("health", self.health),
            ("message", None if self.message is None else self.message[:MAX_HEALTH_MESSAGE_LEN]),
            ("last_error", None if self.last_error is None else self.last_error[:MAX_LAST_ERROR_LEN]),
            ("last_rtt_s", self.last_rtt_s),
            ("overrun_s", self.overrun_s),
        ):
            if value is not None:
                body[key] = value
        return body


@dataclass(frozen=True)
class BeatResult:
    """What became of one beat: its ``report_count``, or the error the single heartbeat would
    have answered (``code``: ``service_not_found``, ``host_not_allowed``, ``invalid_zone``,
    ``database_unavailable``...; ``message``: the server's words)."""

    id: int
    report_count: Optional[int] = None
    code: Optional[str] = None
    message: Optional[str] = None

    @property
    def ok(self) -> bool:
        """The beat was taken."""
        return self.code is None


@dataclass(frozen=True)
class BatchResult:
    """The answer to a batch: one result per beat, in the order of the beats, and the server's
    ``service_down_time`` in seconds."""

    results: List[BeatResult]
    service_down_time: float


class Client:
    """Calls to a Vigil server from the host program's own thread: ``server`` is its URL,
    ``token`` an agent token (default: the ``VIGIL_AGENT_TOKEN`` variable; ``None`` and no
    variable: none sent), ``ca_file`` as for :class:`~vigil_reporter.Reporter`, ``timeout`` the
    limit of each call in seconds. Settings the server would refuse raise ``ValueError`` here;
    a call the server refuses or does not answer raises :class:`~vigil_reporter.VigilError`."""

    def __init__(
        self,
        server: str,
        *,
        token: Optional[str] = None,
        ca_file: Optional[str] = None,
        timeout: float = 10.0,
    ) -> None:
        self._base = _check_url(server)
        self._token = token if token is not None else (os.environ.get("VIGIL_AGENT_TOKEN") or None)
        if not float(timeout) > 0:
            raise ValueError("timeout must be greater than zero")
        self._timeout = float(timeout)
        self._opener = _build_opener(self._base, ca_file)

    def _post(self, path: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        return _post_json(self._opener, self._base, self._token, path, body, self._timeout)

    def register(
        self,
        host: str,
        binary: str,
        *,
        topic: Optional[str] = None,
        zone: Optional[str] = None,
        report_interval: float = DEFAULT_REPORT_INTERVAL,
        version: Optional[str] = None,
    ) -> int:
        """``POST /v1/services``: gets or creates the service ``(host, binary)``; its id."""
        _check_field("host", host, True)
        _check_field("binary", binary, True)
        _check_field("topic", topic, False)
        _check_field("zone", zone, False)
        _check_field("version", version, False)
        low, high = REPORT_INTERVAL_RANGE
        interval = float(report_interval)
        if not low <= interval <= high:
            raise ValueError(
                f"report interval must be between {low} and {high} seconds, not {interval:.3f}"
            )
        body: Dict[str, Any] = {"host": host, "binary": binary, "report_interval": interval}
        for key, value in (("topic", topic), ("zone", zone), ("version", version)):
            if value is not None:
                body[key] = value
        answer = self._post("/v1/services", body)
        try:
            return int(answer["id"])
        except (KeyError, TypeError, ValueError) as err:
            raise _CallError(f"unreadable answer: {err}", outage=False) from None

    def heartbeat_batch(self, beats: Iterable[Union[Beat, int]]) -> BatchResult:
        """``POST /v1/heartbeats``: every beat in one request (an ``int`` is a beat of that
        service with no other field). Each beat is applied as a single heartbeat would be and
        gets its own :class:`BeatResult`, in order: a refused beat (``service_not_found``,
        ``host_not_allowed``...) does not fail the others. A request refused as a whole (no
        valid token, more than :data:`MAX_BATCH_BEATS` beats, the server unreachable) raises
        :class:`~vigil_reporter.VigilError`; an ill-formed beat raises ``ValueError`` or
        ``TypeError`` before anything is sent."""
        now = _now_rfc3339()
        items = [(beat if isinstance(beat, Beat) else Beat(beat))._body(now) for beat in beats]
        answer = self._post("/v1/heartbeats", {"beats": items})
        try:
            results = [_result(item) for item in answer["results"]]
            down_time = float(answer["service_down_time"])
        except (KeyError, TypeError, ValueError) as err:
            raise _CallError(f"unreadable answer: {err!r}", outage=False) from None
        if [r.id for r in results] != [item["id"] for item in items]:
            raise _CallError(
                f"unreadable answer: {len(results)} results for {len(items)} beats, "
                "or not in their order",
                outage=False,
            )
        return BatchResult(results=results, service_down_time=down_time)


def _result(item: Mapping[str, Any]) -> BeatResult:
    error = item.get("error")
    if error is not None:
        return BeatResult(
            id=int(item["id"]), code=str(error["code"]), message=str(error["message"])
        )
    return BeatResult(id=int(item["id"]), report_count=int(item["report_count"]))
