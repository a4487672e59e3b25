"""An oslo.service-style daemon that reports to Vigil, as a Cinder service reports its state.

The shape is oslo.service's: a ``Service`` with ``start()``, ``wait()`` and ``stop()``, and a
launcher that runs it until SIGTERM or SIGINT. The manager's ``is_working()`` (Cinder's own name)
is the reporter's health check, so a service that is alive but not working goes down; the
reporter's thread keeps beating while the main thread is busy or blocked.

    python3 oslo_style_daemon.py --server http://127.0.0.1:8799 --binary cinder-volume
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
import types
from typing import Optional

from vigil_reporter import Reporter


class VolumeManager:
    """The service's work; here a stand-in that is working unless told otherwise."""

    def __init__(self) -> None:
        self.working = True

    def is_working(self) -> bool:
        return self.working

    def periodic_tasks(self) -> None:
        logging.getLogger(__name__).debug("periodic tasks ran")


class Service:
    """oslo.service's ``Service``: start, wait until stopped, stop."""

    def __init__(self, server: str, host: str, binary: str, report_interval: float) -> None:
        self.manager = VolumeManager()
        self.reporter = Reporter(
            server,
            host,
            binary,
            topic=binary,
            report_interval=report_interval,
            health_check=self.manager.is_working,
            fuzzy_delay=report_interval / 2,
        )
        self._stopped = threading.Event()

    def start(self) -> None:
        # As Cinder's Service.start(): register, then report_state every report_interval.
        self.reporter.start()

    def wait(self) -> None:
        while not self._stopped.wait(1.0):
            self.manager.periodic_tasks()

    def stop(self) -> None:
        self.reporter.stop()
        self._stopped.set()


def launch(service: Service) -> None:
    """oslo.service's ``launch()``: run until SIGTERM or SIGINT, then stop gracefully."""

    def handle(signum: int, frame: Optional[types.FrameType]) -> None:
        logging.info("caught signal %d, stopping", signum)
        service.stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    service.start()
    service.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8799")
    parser.add_argument("--host", default=socket.gethostname())
    parser.add_argument("--binary", default="cinder-volume")
    parser.add_argument("--report-interval", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    launch(Service(args.server, args.host, args.binary, args.report_interval))


if __name__ == "__main__":
    main()
