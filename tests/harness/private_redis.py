"""A redis-server of a test's own on a free loopback port (for tests that
must not share the harness Redis, or that stop and restart it).

    r = PrivateRedis(workdir)   # started, answers PING
    r.cli("ZRANGE", "rep:{0}:due", "0", "-1")
    r.stop()                    # SIGKILL and reap
"""

import socket
import subprocess
import time

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class PrivateRedis:
    def __init__(self, workdir, timeout=10, port=None, extra_args=()):
        """port: a given port (e.g. one the harness reserved) instead of a free one;
        extra_args: more redis-server options (e.g. a cluster node's)."""
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
             "--appendonly", "no", "--dir", str(workdir), *extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while self.cli("PING") != "PONG":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def cli(self, *args):
        p = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                           text=True)
        return p.stdout.strip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
