#!/usr/bin/env python3
"""imapferry-sync --daemon --notifystatus (issue 6): Dovecot's notify_status
plugin as an extra signal for changes that bypass the proxy.

The harness's source Dovecot writes the status of every mailbox of user
NSTATUS_USER (leo) into the Redis at FERRY_NSTATUS_REDIS_PORT under
FERRY_NSTATUS_PREFIX (ferry_harness.py); this test runs its own redis-server
on that port, so it may stop and restart it. No proxy runs and --poll is 600 s,
so neither a proxy mark nor a poll can be what finds a delivery:

  1. with --notifystatus, an LMTP delivery and an APPEND straight to the
     source reach the destination within DEADLINE seconds;
  2. Redis restarted: the daemon subscribes again, asks for a sweep of every
     user, and a delivery made after that still arrives within DEADLINE;
  3. without --notifystatus the same kind of delivery does NOT arrive within
     DEADLINE (what proves the signal did it).

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
from private_redis import PrivateRedis

ENV = fh.Env.load()
USER = ENV.nstatus_user
PREFIX = ENV.nstatus_prefix
SYNC = os.environ["FERRY_SYNC"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-nstatus-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
DEADLINE = 2.0  # seconds from a delivery to the message on the destination


def message(tag):
    return (f"From: a@example.org\r\nTo: {USER}@example.org\r\nSubject: {tag}\r\n"
            f"Message-Id: <{tag}@example.org>\r\n\r\nbody of {tag}\r\n").encode()


def start_redis():
    """Our redis-server on the port the source Dovecot writes to (reserved by
    the harness); retried briefly in case the port is still being released."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return PrivateRedis(WORKDIR, port=ENV.nstatus_redis_port)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class NotifyStatus(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        fh.wipe(ENV, "src", USER)
        fh.wipe(ENV, "dst", USER)
        cls.redis = start_redis()
        cls.users = os.path.join(WORKDIR, "users")
        with open(cls.users, "w") as f:
            f.write(f"{USER}\n")
        cls.daemon = None
        cls.logpath = os.path.join(WORKDIR, "daemon.log")

    @classmethod
    def tearDownClass(cls):
        cls.stop_daemon()
        cls.redis.stop()

    @classmethod
    def start_daemon(cls, notifystatus):
        cmd = [SYNC, "--daemon", "--redis", f"{fh.HOST}:{cls.redis.port}",
               "--users", cls.users, "--poll", "600", "--poll-active", "600", "--lease", "6",
               "--tmpdir", WORKDIR,
               *ENV.master_sync_args()]
        if notifystatus:
            cmd += ["--notifystatus", PREFIX]
        # a fresh log per daemon: the waits below read only this one's lines
        cls.log_file = open(cls.logpath, "wb")
        cls.daemon = subprocess.Popen(cmd, stdout=cls.log_file, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @classmethod
    def stop_daemon(cls):
        if cls.daemon is None:
            return None
        cls.daemon.send_signal(signal.SIGTERM)
        try:
            rc = cls.daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(cls.daemon.pid, signal.SIGKILL)
            rc = cls.daemon.wait()
        cls.log_file.close()
        cls.daemon = None
        return rc

    def log(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def wait_for(self, what, check, timeout):
        t0 = time.monotonic()
        while not check():
            if time.monotonic() - t0 > timeout:
                self.fail(f"{what}: not within {timeout} s\n" + self.log()[-4000:])
            time.sleep(0.05)
        return time.monotonic() - t0

    def dst_has(self, folder, tag):
        imap = ENV.imap("dst", USER)
        try:
            typ, _ = imap.select(fh.mailbox_arg(folder), readonly=True)
            if typ != "OK":
                return False
            typ, data = imap.search(None, "HEADER", "Message-Id", f"<{tag}@example.org>")
            return typ == "OK" and bool(data[0].split())
        finally:
            imap.logout()

    def wait_started(self):
        """The bulk start of --users has synced the account: from here on
        only a signal can bring a change over (no poll for 600 s)."""
        self.wait_for("the bulk start", lambda: f"user {USER}: in sync" in self.log(), 20)

    def test_1_delivery_and_append_arrive_through_notify_status(self):
        self.start_daemon(notifystatus=True)
        self.wait_started()
        self.assertIn("watching __keyspace@*__:" + PREFIX, self.log())
        self.assertIn("K", self.redis.cli("CONFIG", "GET", "notify-keyspace-events"))
        fh.deliver(ENV, USER, message("ns-lmtp-1"))
        lag = self.wait_for("LMTP delivery via notify_status",
                            lambda: self.dst_has("INBOX", "ns-lmtp-1"), DEADLINE)
        print(f"LMTP delivery on the destination after {lag:.2f} s")
        src = ENV.imap("src", USER)
        try:
            fh.imap_check(src.append("Sent", "(\\Seen)", None, message("ns-append-1")), "APPEND")
        finally:
            src.logout()
        self.wait_for("APPEND to the source via notify_status",
                      lambda: self.dst_has("Sent", "ns-append-1"), DEADLINE)

    def test_2_redis_restart(self):
        checks = self.log().count(f"user {USER}: in sync")
        self.redis.stop()
        type(self).redis = start_redis()  # empty, and notify-keyspace-events unset again
        self.wait_for("subscribed again", lambda: "Redis is back" in self.log(), 10)
        self.assertIn("quick check of every user requested", self.log())
        # the daemon consumed the sweep flag and checked everyone
        self.wait_for("the sweep", lambda: "rep:sweep_all: quick check" in self.log(), 5)
        self.wait_for("the sweep's quick check",
                      lambda: self.log().count(f"user {USER}: in sync") > checks, 10)
        self.assertIn("K", self.redis.cli("CONFIG", "GET", "notify-keyspace-events"))
        fh.deliver(ENV, USER, message("ns-lmtp-2"))
        self.wait_for("LMTP delivery after a Redis restart",
                      lambda: self.dst_has("INBOX", "ns-lmtp-2"), DEADLINE + 1)
        self.assertEqual(0, self.stop_daemon(), self.log())

    def test_3_without_the_signal_nothing_arrives_that_fast(self):
        self.redis.cli("FLUSHALL")  # no mark left over from the tests above
        self.start_daemon(notifystatus=False)
        self.wait_started()
        fh.deliver(ENV, USER, message("ns-lmtp-3"))
        time.sleep(DEADLINE + 0.5)
        self.assertFalse(self.dst_has("INBOX", "ns-lmtp-3"),
                         "arrived without --notifystatus: the test proves nothing\n"
                         + self.log()[-4000:])
        self.assertEqual(0, self.stop_daemon(), self.log())


if __name__ == "__main__":
    unittest.main(verbosity=2)
