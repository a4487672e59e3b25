"""The reporter: register (get-or-create), then heartbeat every ``report_interval``.

Every error of the requests is handled here and turned into a log line and the next beat's
``last_error``; nothing escapes into the host program. There is no retry inside a tick: a retry
only stretches the tick past its interval while the server is struggling (Nova bug 1368989,
Cinder bug 2018595); the next tick is the retry.
"""

from __future__ import annotations

import os
import datetime as _dt
import http.client
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, Mapping, Optional, Union

from ._loop import FixedIntervalLoop

__all__ = ["Reporter", "HealthCheck", "VigilError", "DEFAULT_REPORT_INTERVAL", "__version__"]

__version__ = "0.1.0"

#: Cinder's default ``report_interval``, in seconds.
DEFAULT_REPORT_INTERVAL = 10.0
#: Accepted range of a declared ``report_interval``, in seconds (as the server checks it).
REPORT_INTERVAL_RANGE = (0.1, 3600.0)
#: Longest ``host``, ``binary``, ``topic``, ``zone`` or ``version``, in characters.
MAX_FIELD_LEN = 255
#: Longest ``last_error`` the server accepts, in characters.
MAX_LAST_ERROR_LEN = 4096
MAX_HEALTH_MESSAGE_LEN = 1024
#: The largest share of the interval a tick's requests may take, so a tick whose request times
#: out still ends before the next one is due.
TICK_SHARE = 0.95

#: The application's "am I working?" callback (Cinder's ``manager.is_working()``): return
#: ``True`` (or ``None``) when working; return ``False`` or raise when not (the exception's text
#: is the reason).
HealthCheck = Callable[[], Optional[bool]]

_LOG = logging.getLogger("vigil_reporter")


def _now_rfc3339() -> str:
    """UTC, RFC 3339, microseconds: the server's timestamp format."""
    now = _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class VigilError(Exception):
    """A request the server refused or did not answer: ``outage`` when it is unreachable or
    failing (no answer, a timeout, a 5xx); else ``status`` is the HTTP status and ``code`` the
    error code of its body (``unauthorized``, ``batch_too_large``...). The message says both.
    :class:`Reporter` never raises it (it logs it); :class:`Client`'s calls do."""

    outage: bool
    status: Optional[int]
    code: Optional[str]


class _CallError(VigilError):
    """One request that failed: ``outage`` when the server is unreachable or failing (5xx)."""

    def __init__(
        self,
        message: str,
        *,
        outage: bool,
        status: Optional[int] = None,
        code: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.outage = outage
        self.status = status
        self.code = code

    @property
    def service_not_found(self) -> bool:
        return self.status == 404 and self.code == "service_not_found"


def _check_field(name: str, value: Optional[str], required: bool) -> None:
    if value is None:
        if required:
            raise ValueError(f"invalid {name}: must not be empty")
        return
    if not isinstance(value, str):
        raise TypeError(f"invalid {name}: must be a string, not {type(value).__name__}")
    if required and not value.strip():
        raise ValueError(f"invalid {name}: must not be empty")
    if len(value) > MAX_FIELD_LEN:
        raise ValueError(f"invalid {name}: is longer than {MAX_FIELD_LEN} characters")


def _check_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        raise ValueError(
            f"invalid server url {url!r}: scheme must be http or https"
            + (f", not {parsed.scheme}" if parsed.scheme else "")
        )
    if not parsed.netloc:
        raise ValueError(f"invalid server url {url!r}: no host")
    if parsed.query or parsed.fragment:
        raise ValueError(f"invalid server url {url!r}: must have no query or fragment")
    return url.rstrip("/")


class Reporter:
    """Tells a Vigil server that the service ``(host, binary)`` is alive.

    ``Reporter(server, host, binary, ...)`` checks its settings (``ValueError`` or ``TypeError``
    for one the server would refuse) and does nothing else; :meth:`start` registers at once on
    a thread of its own and heartbeats every ``report_interval`` seconds from there, the first
    beat one interval after the start (as Cinder's ``Service.start()``). After that nothing is
    raised into the host program: an unreachable server is logged once ("lost connection to
    vigil server ...") and its return once ("recovered connection to vigil server"), a service
    deleted on the server is registered again, and every failure is sent as ``last_error`` with
    the next beat that goes through.

    ``health_check`` is called before each beat, and the beat carries its answer: ``health``
    ``ok``, or ``failing`` with the reason as ``message`` when it returns ``False`` or raises, so
    the server shows a service that is alive but not working as such rather than as dead. It
    runs on the reporter's thread, so it must be quick.

    :meth:`stop` tells the server the service stops (``POST /v1/services/{id}/stop``): it
    shows ``stopped`` at once rather than ``up`` and then ``down``; ``stop(announce=False)``
    stops as a crash would.

    ``token`` (an agent token; default: the ``VIGIL_AGENT_TOKEN`` variable) is sent as
    ``Authorization: Bearer <token>``; ``ca_file`` is a PEM file of the
    certificate authorities that an ``https`` server's certificate is checked against (default:
    the system's). ``request_timeout`` bounds each tick's requests together (default and at most
    the interval; at most 95 % of it is used). ``fuzzy_delay`` delays the first beat by a random
    extra amount up to that many seconds, so a fleet restarted together does not beat in
    lockstep. Logs go to the ``vigil_reporter`` logger unless ``logger`` is given.
    """

    def __init__(
        self,
        server: str,
        host: str,
        binary: str,
        *,
        topic: Optional[str] = None,
        zone: Optional[str] = None,
        report_interval: float = DEFAULT_REPORT_INTERVAL,
        version: Optional[str] = None,
        token: Optional[str] = None,
        ca_file: Optional[str] = None,
        health_check: Optional[HealthCheck] = None,
        request_timeout: Optional[float] = None,
        fuzzy_delay: float = 0.0,
        logger: Optional[logging.Logger] = None,
    ) -> None:
        self._base = _check_url(server)
        _check_field("host", host, True)
        _check_field("binary", binary, True)
        _check_field("topic", topic, False)
        _check_field("zone", zone, False)
        _check_field("version", version, False)
        interval = float(report_interval)
        low, high = REPORT_INTERVAL_RANGE
        if not low <= interval <= high:
            raise ValueError(
                f"report interval must be between {low} and {high} seconds, not {interval:.3f}"
            )
        timeout = interval if request_timeout is None else min(float(request_timeout), interval)
        if not timeout > 0:
            raise ValueError("request timeout must be greater than zero")
        if fuzzy_delay < 0:
            raise ValueError("fuzzy delay must not be negative")
        if health_check is not None and not callable(health_check):
            raise TypeError("health_check must be callable")
        self._register_body: Dict[str, Any] = {"host": host, "binary": binary}
        for key, value in (("topic", topic), ("zone", zone), ("version", version)):
            if value is not None:
                self._register_body[key] = value
        self._register_body["report_interval"] = interval
        self._zone = zone
        self._interval = interval
        self._budget = min(timeout, interval * TICK_SHARE)
        # An agent token: given, else the environment's (as the Rust crate and `vigil agent`).
        self._token = token if token is not None else (os.environ.get("VIGIL_AGENT_TOKEN") or None)
        self._health_check = health_check
        self._fuzzy = float(fuzzy_delay)
        self._log = logger or _LOG
        self._opener = _build_opener(self._base, ca_file)
        self._lock = threading.Lock()
        self._service_id: Optional[int] = None
        self._report_count = 0
        self._connected = True
        self._warned_down_time = False
        self._last_rtt: Optional[float] = None
        self._last_error: Optional[str] = None
        self._deadline = 0.0
        self._health: Optional[str] = None
        self._health_message: Optional[str] = None
        self._announce = True
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[FixedIntervalLoop] = None

    # -- what the host program sees ---------------------------------------------------------

    @property
    def service_id(self) -> Optional[int]:
        """The service's id on the server, once registered."""
        with self._lock:
            return self._service_id

    @property
    def report_count(self) -> int:
        """The ``report_count`` of the last acknowledged beat (or of the registration)."""
        with self._lock:
            return self._report_count

    def start(self) -> "Reporter":
        """Starts the reporter's thread (once; later calls do nothing) and returns it."""
        with self._lock:
            if self._thread is not None:
                return self
            self._thread = threading.Thread(
                target=self._drive, name="vigil-reporter", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: Optional[float] = None, announce: bool = True) -> None:
        """Stops the reporter: no beat is sent after this returns, unless ``timeout`` (seconds)
        ran out first while a request was in flight. With ``announce`` (the default) the server
        is told the service stops, within one tick's time limit, before this returns. Calling
        it again does nothing."""
        if not self._stopping.is_set():
            self._announce = announce
        self._stopping.set()
        loop = self._loop
        if loop is not None:
            loop.stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> "Reporter":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the reporter's thread --------------------------------------------------------------

    def _drive(self) -> None:
        try:
            self._deadline = time.monotonic() + self._budget
            self._register()
            if self._stopping.is_set():
                return
            loop = FixedIntervalLoop(
                self._interval,
                self._tick,
                initial_delay=self._interval,
                fuzzy=self._fuzzy,
                name="vigil-reporter-beats",
                logger=self._log,
            )
            self._loop = loop
            if self._stopping.is_set():
                return
            loop.start()
            self._stopping.wait()
            loop.stop()
            loop.wait()
            if self._announce:
                self._announce_stop()
        except Exception:  # never into the host program
            self._log.exception("vigil reporter stopped by an unexpected error")

    def _tick(self, overrun_s: float) -> None:
        if self._stopping.is_set():
            return
        self._deadline = time.monotonic() + self._budget
        if self._health_check is not None:
            reason = self._check_health()
            health = "ok" if reason is None else "failing"
            if health != self._health:
                if reason is not None:
                    self._log.warning("health check fails: %s", reason)
                elif self._health is not None:
                    self._log.info("health check passes again")
            self._health = health
            self._health_message = None if reason is None else reason[:MAX_HEALTH_MESSAGE_LEN]
        service_id = self.service_id
        if service_id is None:
            service_id = self._register()
            if service_id is None:
                return
        registered_again = False
        while True:
            try:
                answer = self._heartbeat(service_id, overrun_s)
            except _CallError as err:
                if err.service_not_found and not registered_again:
                    with self._lock:
                        self._service_id = None
                    new_id = self._register()
                    if new_id is None:
                        return
                    self._log.info(
                        "service was deleted on the server, registered again "
                        "(old id %d, new id %d)",
                        service_id,
                        new_id,
                    )
                    service_id = new_id
                    registered_again = True
                    continue
                self._failed("heartbeat", err)
                return
            self._acknowledged(answer)
            return

    def _check_health(self) -> Optional[str]:
        """``None`` when healthy, else the reason."""
        if self._health_check is None:
            return None
        try:
            result = self._health_check()
        except Exception as err:  # the application's failure, not the reporter's
            return str(err) or type(err).__name__
        if result is False:
            return "the health check returned false"
        return None

    def _register(self) -> Optional[int]:
        try:
            service = self._post("/v1/services", self._register_body)
            service_id = int(service["id"])
            report_count = int(service.get("report_count", 0))
        except _CallError as err:
            self._failed("registration", err)
            return None
        except (KeyError, TypeError, ValueError) as err:
            self._failed("registration", _CallError(f"unreadable answer: {err}", outage=False))
            return None
        self._reachable()
        with self._lock:
            self._service_id = service_id
            self._report_count = report_count
        self._log.debug("registered as service %d", service_id)
        return service_id

    def _heartbeat(self, service_id: int, overrun_s: float) -> Mapping[str, Any]:
        beat: Dict[str, Any] = {"sent_at": _now_rfc3339(), "overrun_s": overrun_s}
        if self._zone is not None:
            beat["zone"] = self._zone
        if self._last_rtt is not None:
            beat["last_rtt_s"] = self._last_rtt
        if self._last_error is not None:
            beat["last_error"] = self._last_error[:MAX_LAST_ERROR_LEN]
        if self._health is not None:
            beat["health"] = self._health
            if self._health_message is not None:
                beat["message"] = self._health_message
        started = time.monotonic()
        answer = self._post(f"/v1/services/{service_id}/heartbeat", beat)
        self._last_rtt = time.monotonic() - started
        return answer

    def _announce_stop(self) -> None:
        """Tells the server the service stops; a failure is logged (it then goes down)."""
        service_id = self.service_id
        if service_id is None:
            return
        self._deadline = time.monotonic() + self._budget
        try:
            self._post(f"/v1/services/{service_id}/stop", {})
        except _CallError as err:
            self._log.warning(
                "could not tell the server the service stops; it will show down after "
                "service_down_time: %s",
                err,
            )
            return
        self._log.debug("told the server service %d stops", service_id)

    def _acknowledged(self, answer: Mapping[str, Any]) -> None:
        self._reachable()
        self._last_error = None
        try:
            count = int(answer["report_count"])
            down_time = float(answer["service_down_time"])
        except (KeyError, TypeError, ValueError):
            return
        with self._lock:
            self._report_count = count
        if self._interval >= down_time and not self._warned_down_time:
            self._warned_down_time = True
            self._log.warning(
                "report interval %s s is not shorter than the server's service_down_time "
                "%s s: the service will look down between heartbeats",
                self._interval,
                down_time,
            )

    def _reachable(self) -> None:
        if not self._connected:
            self._connected = True
            self._log.info("recovered connection to vigil server %s", self._base)

    def _failed(self, what: str, err: _CallError) -> None:
        if err.outage:
            if self._connected:
                self._connected = False
                self._log.error(
                    "lost connection to vigil server %s: %s failed: %s", self._base, what, err
                )
            else:
                self._log.debug(
                    "vigil server %s still unreachable: %s failed: %s", self._base, what, err
                )
        else:
            self._log.warning("vigil server %s refused the %s: %s", self._base, what, err)
        self._last_error = f"{what} failed: {err}"

    def _post(self, path: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """POSTs JSON within what is left of the tick's budget; the answer's JSON object."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _CallError("no answer within the time allowed to a tick", outage=True)
        return _post_json(self._opener, self._base, self._token, path, body, left)


def _build_opener(base: str, ca_file: Optional[str]) -> urllib.request.OpenerDirector:
    """An opener for ``base``: ``ca_file`` checks an https server (``ValueError`` for http)."""
    context: Optional[ssl.SSLContext] = None
    if base.startswith("https:"):
        # Reading the file here makes a wrong path an error of the host's configuration, at
        # once, rather than a failure of every beat.
        context = ssl.create_default_context(cafile=ca_file)
    elif ca_file is not None:
        raise ValueError("ca_file is only for an https server url")
    return urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context) if context else urllib.request.HTTPHandler(),
        # No proxy from the environment: a heartbeat through a proxy measures the proxy.
        urllib.request.ProxyHandler({}),
    )


def _post_json(
    opener: urllib.request.OpenerDirector,
    base: str,
    token: Optional[str],
    path: str,
    body: Mapping[str, Any],
    timeout: float,
) -> Mapping[str, Any]:
    """POSTs JSON; the answer's JSON object, or :class:`VigilError` (a ``_CallError``)."""
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"vigil-reporter-python/{__version__}",
        },
    )
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with opener.open(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        raise _refused(err) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _CallError(_transport_message(err), outage=True) from None
    try:
        answer = json.loads(raw or b"{}")
    except ValueError as err:
        raise _CallError(f"unreadable answer: {err}", outage=False) from None
    if not isinstance(answer, dict):
        raise _CallError("unreadable answer: not a JSON object", outage=False)
    return answer

def _transport_message(err: Union[urllib.error.URLError, OSError, http.client.HTTPException]) -> str:
    reason: object = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "no answer within the time allowed to a tick"
    return str(reason) or type(reason).__name__


def _refused(err: urllib.error.HTTPError) -> _CallError:
    """An error status: the server's ``{"error": {code, message}}``, or what came back."""
    try:
        text = err.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        text = ""
    finally:
        err.close()
    code, message = "unknown", text[:200]
    try:
        detail = json.loads(text)["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        pass
    return _CallError(
        f"server answered {err.code} {code}: {message}",
        outage=err.code >= 500,
        status=err.code,
        code=code,
    )
