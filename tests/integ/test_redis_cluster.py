#!/usr/bin/env python3
"""A Redis Cluster node given as --redis (issue 6): imapferry's keys carry
hash tags, but its clients do not follow a cluster's MOVED or ASK
redirections, so it says so instead of failing key by key in silence.

Two redis-server cluster nodes of the test's own (slots 0-8191 on A,
8192-16383 on B, met), user erin (the harness's):

  1. the daemon pointed at A refuses to start: exit 1 and a message that
     names the Redis Cluster and what to use instead (a standalone Redis);
  2. a one-shot sync with --redis A for a user whose keys live on B still
     syncs (a full pass, as without state) and prints Redis's own MOVED
     reply with the same advice, both for the state's read and its write;
  3. the daemon pointed at a standalone Redis starts (the check does not
     refuse everything).

Needs FERRY_ENV_DIR and FERRY_SYNC.
"""

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import ferry_harness as fh
from private_redis import PrivateRedis, free_port

ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-cluster-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
ADVICE = "imapferry needs a standalone Redis"


def cluster_node(port_hint):
    conf = f"nodes-{port_hint}.conf"
    # the bus port a free one of its own (by default port + 10000, which
    # can be taken or past 65535)
    bus = free_port()
    node = PrivateRedis(WORKDIR, extra_args=["--cluster-enabled", "yes",
                                             "--cluster-config-file", conf,
                                             "--cluster-port", str(bus)])
    node.bus = bus
    return node


class RedisCluster(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.a = cls.b = None
        try:
            cls.a = cluster_node("a")
            cls.b = cluster_node("b")
            cls.a.cli("CLUSTER", "ADDSLOTSRANGE", "0", "8191")
            cls.b.cli("CLUSTER", "ADDSLOTSRANGE", "8192", "16383")
            cls.a.cli("CLUSTER", "MEET", fh.HOST, str(cls.b.port), str(cls.b.bus))
            deadline = time.monotonic() + 30
            while not all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in (cls.a, cls.b)):
                if time.monotonic() > deadline:
                    raise RuntimeError("the two-node cluster did not form")
                time.sleep(0.1)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for n in (cls.a, cls.b):
            if n is not None:
                n.stop()

    def daemon(self, redis_port, users_file):
        return subprocess.Popen(
            [SYNC, "--daemon", "--redis", f"{fh.HOST}:{redis_port}", "--users", users_file,
             "--workers", "1", "--poll", "600", "--tmpdir", WORKDIR, *ENV.master_sync_args()],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)

    def users_file(self):
        path = os.path.join(WORKDIR, "users")
        with open(path, "w") as f:
            f.write("erin\n")
        return path

    def test_1_daemon_refuses_a_cluster_node(self):
        p = self.daemon(self.a.port, self.users_file())
        try:
            out, _ = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            self.fail("the daemon started on a Redis Cluster node")
        self.assertEqual(1, p.returncode, out)
        self.assertIn("is a Redis Cluster node", out)
        self.assertIn(ADVICE, out)

    def test_2_sync_names_the_redirection(self):
        key = f"rep:{{{fh.shard('erin')}}}:st:erin"
        slot = int(self.a.cli("CLUSTER", "KEYSLOT", key))
        # the key on the node not given (the user's shard decides)
        wrong = self.a if slot >= 8192 else self.b
        r = subprocess.run(
            [SYNC, *ENV.master_sync_args(), "--user1", "erin", "--user2", "erin",
             "--redis", f"{fh.HOST}:{wrong.port}", "--nolog", "--pidfile", "",
             "--nofoldersizes"],
            capture_output=True, text=True, timeout=120)
        out = r.stdout + r.stderr
        self.assertEqual(0, r.returncode, out[-3000:])
        self.assertRegex(out, r"State: cannot read redis \S+ key " + key.replace("{", r"\{")
                         .replace("}", r"\}") + r" \(MOVED \d+ ")
        self.assertRegex(out, r"State: cannot write redis \S+ key \S+: MOVED \d+ ")
        self.assertEqual(2, out.count(ADVICE), out[-3000:])

    def test_3_daemon_starts_on_a_standalone_redis(self):
        solo = PrivateRedis(WORKDIR)
        p = self.daemon(solo.port, self.users_file())
        try:
            time.sleep(2)
            self.assertIsNone(p.poll(), p.communicate()[0] if p.poll() is not None else "")
        finally:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.communicate()
            solo.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
