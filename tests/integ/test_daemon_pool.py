#!/usr/bin/env python3
"""imapferry-sync --daemon --maxconnections and failed syncs in /metrics (issue 6): the most connections
the daemon holds to each server, running syncs and idle pooled ones
together, so that thousands of users do not mean thousands of sessions.

Three users (peggy, quinn, rupert), each with mail in two folders, are
synced by a daemon with one worker. A worker keeps the logged-in connections
of the users it synced last (30 s idle at most), so:

  1. with --maxconnections 3 (one worker: 2 pooled per server, the least
     recently used one logged out), at most 2 of their sessions stay open on
     each server once all three are in sync, and at least 1 (the pool works);
  2. with --maxconnections 64 the same run leaves all 3 open on each
     server: what proves that the limit is what held them to 2;
  3. --maxconnections below --workers is refused at start (usage, exit 64);
  1b. two daemons on one Redis share --maxconnections (heartbeats in
     rep:daemons): with 4, one alone keeps all 3 users' sessions, two keep
     at most 1 each;
  4. (/metrics) a user the source does not know fails in class auth_host1.

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
import urllib.request

import ferry_harness as fh
from private_redis import PrivateRedis, free_port

ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
USERS = ["peggy", "quinn", "rupert"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-pool-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)


def message(user, n):
    return (f"From: a@example.org\r\nTo: {user}@example.org\r\nSubject: pool {n}\r\n"
            f"Message-Id: <pool-{user}-{n}@example.org>\r\n\r\nbody {n}\r\n").encode()


def sessions(side):
    return fh.sessions(ENV, side, USERS)


class Pool(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        for user in USERS:
            fh.wipe(ENV, "src", user)
            imap = ENV.imap("src", user)
            try:
                imap.create("Pool")
                for n in range(3):
                    fh.imap_check(imap.append("INBOX", None, None, message(user, n)), "APPEND")
                    fh.imap_check(imap.append("Pool", None, None, message(user, 10 + n)),
                                  "APPEND")
            finally:
                imap.logout()
        cls.users = os.path.join(WORKDIR, "users")
        with open(cls.users, "w") as f:
            f.write("\n".join(USERS) + "\n")

    def run_daemon(self, maxconns, second=False):
        """Syncs USERS from scratch with one worker; returns the sessions
        left open on (src, dst) once all of them are in sync. second: another
        daemon (one worker, the same --maxconnections, no --users) shares
        the Redis from the start."""
        for user in USERS:
            fh.wipe(ENV, "dst", user)
        redis = PrivateRedis(WORKDIR)
        other = None
        if second:
            other_log = os.path.join(WORKDIR, f"daemon-{maxconns}-other.log")
            with open(other_log, "ab") as log:
                other = subprocess.Popen(
                    [SYNC, "--daemon", "--redis", f"{fh.HOST}:{redis.port}", "--workers", "1",
                     "--maxconnections", str(maxconns), "--poll", "600", "--tmpdir", WORKDIR,
                     *ENV.master_sync_args()],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 20
            while redis.cli("ZCARD", "rep:daemons") != "1":
                self.assertLess(time.monotonic(), deadline, "the second daemon's heartbeat")
                time.sleep(0.05)
        log_path = os.path.join(WORKDIR, f"daemon-{maxconns}.log")
        cmd = [SYNC, "--daemon", "--redis", f"{fh.HOST}:{redis.port}", "--users", self.users,
               "--workers", "1", "--maxconnections", str(maxconns), "--poll", "600",
               "--tmpdir", WORKDIR,
               *ENV.master_sync_args()]
        with open(log_path, "ab") as log:
            daemon = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

        def text():
            with open(log_path, errors="replace") as f:
                return f.read()

        try:
            if second:
                self.assertIn("daemons sharing --maxconnections 4: 2; each worker here keeps "
                              "at most 1 idle connection per server", self.wait_log(text))
            deadline = time.monotonic() + 60
            # with two daemons, each reports only what it saw: wait for the
            # accounts themselves, then for the queue to be empty
            while not (all(f"user {u}: in sync" in text() for u in USERS) or
                       (second and all(not fh.compare(ENV, u, "src", u, "dst") for u in USERS)
                        and "0" == redis.cli("EVAL", "local n = 0 for s = 0, 15 do n = n + "
                                             "redis.call('ZCARD', 'rep:{' .. s .. '}:inflight')"
                                             " + redis.call('ZCARD', 'rep:{' .. s .. '}:due') "
                                             "end return n", "0"))):
                self.assertIsNone(daemon.poll(), text()[-3000:])
                self.assertLess(time.monotonic(), deadline, text()[-3000:])
                time.sleep(0.1)
            time.sleep(0.5)  # the last job's connections go back to its pool
            for user in USERS:
                self.assertEqual([], fh.compare(ENV, user, "src", user, "dst"), user)
            self.assertIn(f"at most {maxconns} connections per server", text())
            return sessions("src"), sessions("dst")
        finally:
            for p in (daemon, other):
                if p is None:
                    continue
                p.send_signal(signal.SIGTERM)
                try:
                    self.assertEqual(0, p.wait(30), text()[-3000:])
                finally:
                    if p.poll() is None:
                        os.killpg(p.pid, signal.SIGKILL)
                        p.wait()
            redis.stop()
            # a stopped daemon logs its pooled connections out
            deadline = time.monotonic() + 10
            while sessions("src") + sessions("dst") > 0:
                self.assertLess(time.monotonic(), deadline, "sessions left after SIGTERM")
                time.sleep(0.1)

    def test_1_limit_holds(self):
        src, dst = self.run_daemon(3)
        self.assertLessEqual(src, 2, "sessions on the source")
        self.assertLessEqual(dst, 2, "sessions on the destination")
        self.assertGreaterEqual(src, 1, "nothing pooled at all")
        self.assertGreaterEqual(dst, 1, "nothing pooled at all")

    def wait_log(self, text):
        deadline = time.monotonic() + 20
        while "daemons sharing --maxconnections" not in text():
            self.assertLess(time.monotonic(), deadline, text()[-3000:])
            time.sleep(0.05)
        return text()

    def test_1b_shared_by_two_daemons(self):
        """--maxconnections is shared by every daemon of the Redis (their
        heartbeats in rep:daemons): 4 alone would keep all 3 users' sessions
        open (3 pooled), two daemons keep at most 1 each."""
        src, dst = self.run_daemon(4, second=True)
        self.assertLessEqual(src, 2, "sessions on the source")
        self.assertLessEqual(dst, 2, "sessions on the destination")
        src, dst = self.run_daemon(4)
        self.assertEqual(3, src, "one daemon alone: all pooled")
        self.assertEqual(3, dst, "one daemon alone: all pooled")

    def test_2_without_the_limit_all_stay(self):
        src, dst = self.run_daemon(64)
        self.assertEqual(3, src, "sessions on the source")
        self.assertEqual(3, dst, "sessions on the destination")

    def test_4_errors_by_class(self):
        """A user the source does not know: its check fails with imapsync's
        host1 authentication exit code (161), counted in /metrics under
        class auth_host1 (and retried with a backoff)."""
        users = os.path.join(WORKDIR, "users-unknown")
        with open(users, "w") as f:
            f.write("nosuchuser\n")
        redis = PrivateRedis(WORKDIR)
        http = free_port()
        cmd = [SYNC, "--daemon", "--redis", f"{fh.HOST}:{redis.port}", "--users", users,
               "--workers", "1", "--poll", "600", "--tmpdir", WORKDIR,
               "--http", f"{fh.HOST}:{http}",
               *ENV.master_sync_args()]
        daemon = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    with urllib.request.urlopen(f"http://{fh.HOST}:{http}/metrics",
                                                timeout=5) as r:
                        text = r.read().decode()
                except OSError:
                    text = ""
                if 'imapferry_sync_errors_total{class="auth_host1"} 1' in text:
                    break
                self.assertLess(time.monotonic(), deadline, text)
                time.sleep(0.1)
            self.assertIn('imapferry_sync_errors_total{class="other"} 0', text)
            self.assertIn("imapferry_sync_messages_copied_total 0", text)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
            redis.stop()

    def test_3_below_workers_refused(self):
        p = subprocess.run([SYNC, "--daemon", "--redis", f"{fh.HOST}:1", "--workers", "4",
                            "--maxconnections", "3", "--host1", fh.HOST, "--host2", fh.HOST],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(64, p.returncode, p.stderr)
        self.assertIn("--maxconnections 3 is below --workers 4", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
