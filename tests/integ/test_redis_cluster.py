#!/usr/bin/env python3
"""imapferry on a Redis Cluster (issue 6): every key of a user carries the
hash tag of the user's shard, and every client follows the cluster's MOVED
redirections (lib/rnodes.c), so --redis may name any node of a cluster.

Three redis-server cluster nodes of the test's own, the slots laid out so
that user erin's shard keys live on B, user leo's on C, and the daemon and
the one-shot sync are given A (every command for erin or leo is first
redirected):

  1. the daemon's bulk start syncs both users (claims, leases, state and
     maps on the users' own nodes: checked there), and a mark written where
     the proxy writes it (the due set on B) is synced again at once;
  2. a one-shot sync given node C for erin reads the state the daemon left
     on B (no full pass: "nothing to do") and writes it back there;
  3. the proxy given node A: a message APPENDed through it reaches the
     destination through the marks (on erin's node) and the daemon, and its
     route lookup (rep:route:<user>, on yet another node) answers;
  4. the daemon refuses --notifystatus with a cluster (Dovecot's
     notify_status writes to one standalone Redis).

Needs FERRY_ENV_DIR, FERRY_SYNC and FERRY_PROXY.
"""

import atexit
import imaplib
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import ferry_harness as fh
from private_redis import PrivateRedis, free_port

ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
PROXY = os.environ["FERRY_PROXY"]
CTL = os.environ["FERRY_CTL"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-cluster-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
USERS = ("erin", "leo")


def shard_slot(user):
    return fh.key_slot(f"rep:{{{fh.shard(user)}}}:due")


def route_slot(user):
    return fh.key_slot(f"rep:route:{user}")


metrics = fh.metrics


def cluster_node(name):
    # the bus port a free one of its own (by default port + 10000, which
    # can be taken or past 65535)
    bus = free_port()
    node = PrivateRedis(WORKDIR, extra_args=["--cluster-enabled", "yes",
                                             "--cluster-config-file", f"nodes-{name}.conf",
                                             "--cluster-port", str(bus)])
    node.bus = bus
    return node


def message(n):
    return (f"From: a@example.org\r\nTo: erin@example.org\r\nSubject: cluster {n}\r\n"
            f"Message-Id: <cluster-{n}@example.org>\r\n\r\nbody {n}\r\n").encode()


class RedisCluster(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.nodes = []
        cls.daemon = None
        try:
            cls.a, cls.b, cls.c = (cluster_node(n) for n in "abc")
            cls.nodes = [cls.a, cls.b, cls.c]
            erin, leo = shard_slot("erin"), shard_slot("leo")
            route, ack = route_slot("erin"), fh.key_slot("rep:frz:erin")
            route2, ack2 = route_slot("leo"), fh.key_slot("rep:frz:leo")
            on_b, on_c = (erin, ack, route2), (leo, route, ack2)
            assert len(set(on_b + on_c)) == 6
            # B: erin's shard slot, erin's freeze acks, leo's route;
            # C: leo's shard slot, erin's route, leo's freeze acks; A: the rest
            cls.b.cli("CLUSTER", "ADDSLOTS", *map(str, on_b))
            cls.c.cli("CLUSTER", "ADDSLOTS", *map(str, on_c))
            rest = [s for s in range(16384) if s not in on_b + on_c]
            runs, start = [], rest[0]
            for prev, cur in zip(rest, rest[1:] + [None]):
                if cur != prev + 1:
                    runs += [str(start), str(prev)]
                    start = cur
            cls.a.cli("CLUSTER", "ADDSLOTSRANGE", *runs)
            for n in (cls.b, cls.c):
                cls.a.cli("CLUSTER", "MEET", fh.HOST, str(n.port), str(n.bus))
            deadline = time.monotonic() + 30
            while not all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in cls.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the three-node cluster did not form")
                time.sleep(0.1)
            for user in USERS:
                for side in ("src", "dst"):
                    fh.wipe(ENV, side, user)
            fh.populate(ENV, "src", "erin", "small", seed=61)
            fh.populate(ENV, "src", "leo", "small", seed=62)
            cls.users = os.path.join(WORKDIR, "users")
            with open(cls.users, "w") as f:
                f.write("\n".join(USERS) + "\n")
            cls.log_path = os.path.join(WORKDIR, "daemon.log")
            cls.http = free_port()
            with open(cls.log_path, "ab") as log:
                cls.daemon = subprocess.Popen(
                    [SYNC, "--daemon", "--redis", f"{fh.HOST}:{cls.a.port}", "--users",
                     cls.users, "--workers", "2", "--poll", "600", "--pollactive", "3600",
                     "--http", f"{fh.HOST}:{cls.http}", "--tmpdir", WORKDIR,
                     *ENV.master_sync_args()],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.daemon is not None:
            fh.stop_daemon(cls.daemon)
        for n in cls.nodes:
            n.stop()

    @classmethod
    def log(cls):
        with open(cls.log_path, errors="replace") as f:
            return f.read()

    def wait_identical(self, user, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            diffs = fh.compare(ENV, user, "src", user, "dst")
            if not diffs:
                return
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                self.fail(f"{user} differs: {diffs[:5]}\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def test_1_daemon_syncs_users_on_other_nodes(self):
        for user in USERS:
            self.wait_identical(user)
        # the state sits on the user's own node, nothing of it on A
        for user, node in (("erin", self.b), ("leo", self.c)):
            key = f"rep:{{{fh.shard(user)}}}:st:{user}"
            self.assertEqual("1", node.cli("EXISTS", key), user)
            self.assertIn("INBOX", node.cli("HKEYS", key), user)
        self.assertEqual(["rep:daemons"], self.a.cli("KEYS", "*").splitlines())
        # the queue's figures come from every node (one pipeline per node):
        # a due item on C (leo's) is counted
        self.c.cli("ZADD", f"rep:{{{fh.shard('leo')}}}:due", "99999999999999", "leo\tJunk")
        m = metrics(self.http)
        self.assertEqual(1, m["imapferry_sync_redis_up"], m)
        self.assertEqual(1, m["imapferry_sync_queue_due"], m)
        self.c.cli("DEL", f"rep:{{{fh.shard('leo')}}}:due")
        # a change, marked as the proxy marks it: on erin's node
        imap = ENV.imap("src", "erin")
        try:
            fh.imap_check(imap.append("INBOX", None, None, message(1)), "APPEND")
        finally:
            imap.logout()
        self.b.cli("ZADD", f"rep:{{{fh.shard('erin')}}}:due", "0", "erin\tINBOX")
        self.wait_identical("erin", timeout=20)
        self.assertNotIn("MOVED", self.log())

    def test_2_one_shot_sync_follows_the_cluster(self):
        self.wait_identical("erin")
        r = subprocess.run(
            [SYNC, *ENV.master_sync_args(), "--user1", "erin", "--user2", "erin",
             "--redis", f"{fh.HOST}:{self.c.port}", "--nolog", "--pidfile", "",
             "--nofoldersizes"],
            capture_output=True, text=True, timeout=120)
        out = r.stdout + r.stderr
        self.assertEqual(0, r.returncode, out[-3000:])
        self.assertNotIn("State: cannot", out)
        self.assertNotIn("MOVED", out)
        self.assertIn("Messages transferred                    : 0", out)
        self.assertRegex(out, r"State file is redis \S+ key rep:\{%d\}:st:erin" % fh.shard("erin"))

    def test_3_proxy_marks_reach_the_users_node(self):
        self.wait_identical("erin")
        proxy = fh.start_proxy(ENV, PROXY, redis_port=self.a.port, log_dir=WORKDIR,
                               extra_args=["--freeze-hold", "1"])
        try:
            imap = imaplib.IMAP4(fh.HOST, proxy.port)
            imap.starttls(ssl_context=ENV.ssl_context())
            imap.login("erin", ENV.password("erin"))
            try:
                fh.imap_check(imap.append("INBOX", None, None, message(2)), "APPEND")
                imap.select("INBOX")
                fh.imap_check(imap.store("1:3", "+FLAGS", "(\\Flagged)"), "STORE")
                fh.imap_check(imap.copy("1", "INBOX"), "COPY")
            finally:
                imap.logout()
            self.wait_identical("erin", timeout=20)
            m = metrics(proxy.http_port)
            self.assertEqual(0, m["imapferry_proxy_redis_errors_total"], proxy.log_text())
            self.assertEqual(0, m["imapferry_proxy_redis_backlog"], m)
            self.assertEqual(1, m["imapferry_proxy_redis_connected"], m)
            # the hint of the COPY went to erin's node (the daemon may have
            # used it up since: then its list is gone, but never on A)
            self.assertEqual(["rep:daemons"], self.a.cli("KEYS", "*").splitlines())
            log = proxy.log_text()
            self.assertNotIn("route lookup", log)
            self.assertNotIn("MOVED", log)
            # a route stored on C is what the proxy's lookup finds: a
            # frozen user's login is held (1 s here), then refused; with no
            # session of erin left, the proxy acknowledges the freeze on B
            self.c.cli("HSET", "rep:route:erin", "state", "FREEZE", "epoch", "7")
            try:
                imap = imaplib.IMAP4(fh.HOST, proxy.port)
                imap.starttls(ssl_context=ENV.ssl_context())
                with self.assertRaisesRegex(imaplib.IMAP4.error, "UNAVAILABLE"):
                    imap.login("erin", ENV.password("erin"))
                imap.shutdown()
                self.assertIn("held login given up", proxy.log_text())
                deadline = time.monotonic() + 10
                while "7" not in self.b.cli("HVALS", "rep:frz:erin"):
                    self.assertLess(time.monotonic(), deadline, proxy.log_text()[-2000:])
                    time.sleep(0.1)
            finally:
                self.c.cli("DEL", "rep:route:erin")
                self.b.cli("DEL", "rep:frz:erin")
        finally:
            proxy.stop()

    def test_4_notifystatus_refused(self):
        p = subprocess.run(
            [SYNC, "--daemon", "--redis", f"{fh.HOST}:{self.a.port}", "--users", self.users,
             "--notifystatus", "dovecot:", "--tmpdir", WORKDIR, *ENV.master_sync_args()],
            capture_output=True, text=True, timeout=30)
        out = p.stdout + p.stderr
        self.assertEqual(1, p.returncode, out)
        self.assertIn("--notifystatus needs a standalone Redis", out)

    def ctl(self, *args, timeout=120):
        p = subprocess.run([CTL, "--redis", f"{fh.HOST}:{self.a.port}", "--sync", SYNC,
                            *args], capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout + p.stderr

    def test_5_cutover_status_rollback(self):
        """imapferryctl given node A: a cutover of leo (route on B, freeze
        acks and shard keys on C) with a proxy given node B; status over
        every master; a rollback that drops leo's sync state on C."""
        cl = self
        opts = []
        for n, side in (("1", "src"), ("2", "dst")):
            opts += [f"--host{n}", fh.HOST, f"--port{n}", str(ENV.port(side, "imap")),
                     f"--authuser{n}", fh.MASTER_USER, f"--password{n}", fh.MASTER_PASS,
                     f"--sslargs{n}", f"SSL_ca_file={ENV.ca_file}"]
        opts += ["--syncduplicates", "--nolog", "--tmpdir", WORKDIR]
        proxy = fh.start_proxy(ENV, PROXY, redis_port=cl.b.port, log_dir=WORKDIR)
        try:
            # the proxy knows leo: a session through it, then gone
            imap = imaplib.IMAP4(fh.HOST, proxy.port)
            imap.starttls(ssl_context=ENV.ssl_context())
            imap.login("leo", ENV.password("leo"))
            imap.logout()
            rc, out = self.ctl("cutover", "leo", "--", *opts)
            self.assertEqual(0, rc, out + proxy.log_text()[-3000:])
            self.assertIn("cut over to the destination", out)
            self.assertNotIn("MOVED", out)
            self.assertEqual("DST", cl.b.cli("HGET", "rep:route:leo", "state"))
            self.assertEqual([], fh.compare(ENV, "leo", "src", "leo", "dst"))
            rc, out = self.ctl("status")
            self.assertEqual(0, rc, out)
            self.assertRegex(out, r"(?m)^leo\s+DST\s")
            self.assertRegex(out, r"(?m)^erin\s+-\s")  # no route stored: the source
            state = f"rep:{{{fh.shard('leo')}}}:st:leo"
            self.assertEqual("1", cl.c.cli("EXISTS", state))
            rc, out = self.ctl("rollback", "leo", "--force")
            self.assertEqual(0, rc, out)
            self.assertEqual("SRC", cl.b.cli("HGET", "rep:route:leo", "state"))
        finally:
            proxy.stop()


    def migrate_slot(self, slot, src, dst):
        """Moves slot from node src to node dst as redis-cli --cluster
        reshard does: IMPORTING/MIGRATING, MIGRATE every key, SETSLOT NODE
        on every node."""
        src_id, dst_id = src.cli("CLUSTER", "MYID"), dst.cli("CLUSTER", "MYID")
        self.assertEqual("OK", dst.cli("CLUSTER", "SETSLOT", str(slot), "IMPORTING", src_id))
        self.assertEqual("OK", src.cli("CLUSTER", "SETSLOT", str(slot), "MIGRATING", dst_id))
        while True:
            keys = src.cli("CLUSTER", "GETKEYSINSLOT", str(slot), "100").splitlines()
            if not keys:
                break
            self.assertEqual("OK", src.cli("MIGRATE", fh.HOST, str(dst.port), "", "0", "5000",
                                           "KEYS", *keys))
        for n in self.nodes:
            self.assertEqual("OK", n.cli("CLUSTER", "SETSLOT", str(slot), "NODE", dst_id))

    def test_6_resharding_is_followed(self):
        """erin's shard slot moves from B to C while the daemon and a proxy
        run (both have learned B): the next change still reaches the
        destination, and the marks and state are on C afterwards."""
        self.wait_identical("erin")
        proxy = fh.start_proxy(ENV, PROXY, redis_port=self.a.port, log_dir=WORKDIR)
        try:
            imap = imaplib.IMAP4(fh.HOST, proxy.port)
            imap.starttls(ssl_context=ENV.ssl_context())
            imap.login("erin", ENV.password("erin"))
            fh.imap_check(imap.append("INBOX", None, None, message(3)), "APPEND")
            self.wait_identical("erin", timeout=20)
            slot = shard_slot("erin")
            self.migrate_slot(slot, self.b, self.c)
            state = f"rep:{{{fh.shard('erin')}}}:st:erin"
            self.assertEqual("1", self.c.cli("EXISTS", state))
            fh.imap_check(imap.append("INBOX", None, None, message(4)), "APPEND")
            imap.select("INBOX")
            fh.imap_check(imap.store("1", "+FLAGS", "(\\Answered)"), "STORE")
            imap.logout()
            self.wait_identical("erin", timeout=20)
            m = metrics(proxy.http_port)
            self.assertEqual(0, m["imapferry_proxy_redis_errors_total"], proxy.log_text())
            self.assertEqual(0, m["imapferry_proxy_redis_backlog"], m)
            self.assertEqual("0", self.b.cli("CLUSTER", "COUNTKEYSINSLOT", str(slot)))
        finally:
            proxy.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
