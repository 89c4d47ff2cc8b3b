"""Fixtures that run the real `sluice` binary for client integration tests.

`broker` starts `sluice serve` on free loopback ports with a fresh data dir,
waits (bounded) until /readyz answers 200, and stops it after the test
(SIGTERM, bounded wait, then SIGKILL). On a failed test the broker's log is
printed. `sluice_factory` starts brokers with extra flags.

Every wait here is bounded; nothing talks to anything but 127.0.0.1.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


def sluice_bin() -> Path:
    return Path(os.environ.get("SLUICE_BIN", REPO / "target" / "debug" / "sluice"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(addr: str, path: str, timeout: float = 5.0):
    """GET http://addr/path; returns (status, body bytes). Raises OSError if unreachable."""
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


class BrokerStartError(RuntimeError):
    pass


class SluiceBroker:
    """One `sluice serve` process; can be stopped, killed and restarted on the same data dir and ports."""

    def __init__(self, data_dir: Path, extra_args=(), node_id: int = 1):
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args)
        self.node_id = node_id
        self.kafka_port = free_port()
        self.admin_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        self.admin = f"127.0.0.1:{self.admin_port}"
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.proc = None
        self.starts = 0

    # -- lifecycle ---------------------------------------------------------
    def command(self):
        return [
            str(sluice_bin()), "serve",
            "--data-dir", str(self.data_dir),
            "--listen", self.bootstrap,
            "--advertise", self.bootstrap,
            "--admin-listen", self.admin,
            "--node-id", str(self.node_id),
            *self.extra_args,
        ]

    def start(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Starts the process and waits until ready; returns seconds it took."""
        binary = sluice_bin()
        if not binary.is_file():
            raise BrokerStartError(
                f"sluice binary not found at {binary}: run `cargo build -p sluice` "
                "(or set SLUICE_BIN)")
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        log.flush()
        began = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_BACKTRACE": "1", "NO_COLOR": "1"})
        log.close()
        self.wait_ready(timeout)
        return time.monotonic() - began

    def wait_ready(self, timeout: float = READY_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            code = self.proc.poll()
            if code is not None:
                raise BrokerStartError(
                    f"sluice exited with {code} before it was ready\n{self.log_text()}")
            try:
                status, _ = http_get(self.admin, "/readyz", timeout=1.0)
                if status == 200:
                    return
                last = f"/readyz answered {status}"
            except OSError as err:
                last = f"/readyz: {err}"
            if time.monotonic() > deadline:
                raise BrokerStartError(
                    f"sluice not ready within {timeout}s ({last})\n{self.log_text()}")
            time.sleep(0.1)

    def stop(self, timeout: float = STOP_TIMEOUT_S):
        """SIGTERM and wait (bounded); SIGKILL if it does not exit. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)
            raise AssertionError(f"sluice did not exit within {timeout}s of SIGTERM")

    def kill(self):
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def restart(self, timeout: float = READY_TIMEOUT_S) -> float:
        self.stop()
        return self.start(timeout)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            text = "(no log)"
        return f"----- sluice log {self.log_path} -----\n{text}\n----- end of sluice log -----"

    def metrics(self) -> str:
        status, body = http_get(self.admin, "/metrics")
        assert status == 200, f"/metrics answered {status}"
        return body.decode()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _failed(request) -> bool:
    node = request.node
    return any(getattr(node, f"rep_{when}", None) is not None and getattr(node, f"rep_{when}").failed
               for when in ("setup", "call"))


@pytest.fixture
def sluice_factory(request):
    """Call with extra CLI flags to start a broker; all are stopped after the test."""
    root = Path(tempfile.mkdtemp(prefix="sluice-pytest-"))
    brokers = []

    def start(*extra_args) -> SluiceBroker:
        broker = SluiceBroker(root / f"data{len(brokers)}", extra_args)
        brokers.append(broker)
        broker.start()
        return broker

    yield start
    stop_errors = []
    for broker in brokers:
        try:
            was_running = broker.alive()
            code = broker.stop()
            if was_running and code != 0:
                stop_errors.append(f"sluice exited with {code} after SIGTERM")
        except AssertionError as err:
            stop_errors.append(str(err))
        if _failed(request) or stop_errors:
            print(broker.log_text())
    shutil.rmtree(root, ignore_errors=True)
    # A broker that does not shut down cleanly fails the test that ran it.
    assert not stop_errors, stop_errors


@pytest.fixture
def broker(sluice_factory) -> SluiceBroker:
    """A single-node sluice with 3 default partitions and topic auto-creation on."""
    return sluice_factory("--num-partitions", "3", "--auto-create-topics-enable", "true")


# Consumer-group tests (test_groups_*.py) share these: a broker with the initial rebalance
# delay at 0, and the group runs (member processes) a test started, closed afterwards.
@pytest.fixture
def gbroker(sluice_factory):
    from group_broker import start_broker
    return start_broker(sluice_factory)


@pytest.fixture
def runs():
    made = []
    yield made
    for run in made:
        run.close()
