import logging, socket, time
from vigil_reporter import Reporter

logging.basicConfig(level=logging.INFO)
reporter = Reporter("http://127.0.0.1:8799", socket.gethostname(), "my-worker",
                    report_interval=10, health_check=lambda: True).start()
try:
    time.sleep(3600)  # the service's own work; the beats run on the reporter's thread
finally:
    reporter.stop()
