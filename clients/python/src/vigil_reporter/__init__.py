"""Heartbeat reporter that Python services embed to tell a Vigil server they are alive.

A service registers once (get-or-create by ``(host, binary)``) and then heartbeats every
``report_interval`` on a thread of its own, as Cinder's ``Service.report_state`` does; the
server shows it down when its newest heartbeat is older than ``service_down_time`` by the
server's own clock. Pure standard library; the same meaning as the Rust ``vigil-reporter``
crate.

>>> from vigil_reporter import Reporter
>>> reporter = Reporter("http://127.0.0.1:8799", "node-1", "cinder-volume").start()  # doctest: +SKIP
>>> reporter.stop()  # doctest: +SKIP

A host agent carrying many services' beats sends them in one request with
:meth:`Client.heartbeat_batch`, one result per beat.
"""

from ._client import MAX_BATCH_BEATS, BatchResult, Beat, BeatResult, Client
from ._loop import FixedIntervalLoop
from ._reporter import DEFAULT_REPORT_INTERVAL, HealthCheck, Reporter, VigilError, __version__

__all__ = [
    "DEFAULT_REPORT_INTERVAL",
    "MAX_BATCH_BEATS",
    "BatchResult",
    "Beat",
    "BeatResult",
    "Client",
    "FixedIntervalLoop",
    "HealthCheck",
    "Reporter",
    "VigilError",
    "__version__",
]
