#!/usr/bin/env python3
"""imapferry-sync --daemon under stress (issue 6's reliability cases), against
the harness's two Dovecots, the proxy and a redis-server of the test's own:

  1. two daemons share one Redis while three clients run a randomized mixed
     workload through the proxy (APPEND, STORE, EXPUNGE, COPY, MOVE on three
     folders), one daemon is killed (SIGKILL, with its workers) mid-load and
     started again; afterwards both accounts are identical (bytes, flags,
     INTERNALDATE, no duplicate), and the daemons' log lines prove that no
     two syncs of one folder ever ran at the same time (every sync logs its
     wall-clock window);
  2. Redis killed and started again empty while a client keeps working
     through the proxy: mail never waits, the daemon reconnects, and what
     was lost (due items, state) is rebuilt by a sweep;
  3. Redis restarted with its data (saved, killed, reloaded): the daemon
     reconnects and goes on from the saved queue and state;
  4. the source, then the destination Dovecot restarted in the middle of a
     sync of a few hundred messages: the syncs fail, are retried with a
     backoff, and converge (pooled connections to the old server are dropped).
"""
import atexit
import socket
import imaplib
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import ferry_harness as fh
from private_redis import PrivateRedis, free_port

ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
PROXY = os.environ["FERRY_PROXY"]
USER = "nina"
FOLDERS = ["INBOX", "Work", "Archive"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-reliability-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)

USERS_FILE = os.path.join(WORKDIR, "users")
WINDOW = re.compile(r"sync (\S+) \[(.*)\] (?:done|failed).*window (\d+)-(\d+) ms")


def message(tag, n):
    return (f"From: w@example.org\r\nTo: {USER}@example.org\r\nSubject: {tag} {n}\r\n"
            f"Message-Id: <{tag}-{n}@example.org>\r\n\r\n" + ("x" * (n % 7000)) +
            "\r\n").encode()


def ok_or_gone(result, what):
    """A command on a message another client may just have expunged (three
    clients share the folders): NO [EXPUNGEISSUED] is a fair answer."""
    typ, data = result
    if typ == "NO" and any(b"EXPUNGEISSUED" in d or b"NONEXISTENT" in d
                           for d in data if isinstance(d, bytes)):
        return
    fh.imap_check(result, what)


class Daemons:
    """Daemon processes, each in its own session (killpg reaches its workers)."""

    def __init__(self, redis_port):
        self.redis_port = redis_port
        self.procs = {}
        self.logs = {}

    def start(self, name, poll=600, workers=3, extra=()):
        cmd = [SYNC, "--daemon", "--redis", f"{fh.HOST}:{self.redis_port}",
               *ENV.master_sync_args(),
               "--workers", str(workers), "--poll", str(poll), "--lease", "6",
               "--delete2", "--tmpdir", WORKDIR, "--users", USERS_FILE, *extra]
        path = os.path.join(WORKDIR, f"daemon-{name}.log")
        self.logs[name] = path
        log = open(path, "ab")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        log.close()

    def kill(self, name, sig=signal.SIGKILL):
        p = self.procs.pop(name, None)
        if p is None:
            return None
        if sig == signal.SIGKILL:
            os.killpg(p.pid, signal.SIGKILL)
        else:
            p.send_signal(sig)
        try:
            return p.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            return p.wait()

    def stop_all(self):
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)

    def text(self, name=None):
        out = []
        for n, path in self.logs.items():
            if name is None or n == name:
                with open(path, errors="replace") as f:
                    out.append(f"--- daemon {n}\n" + f.read())
        return "\n".join(out)


def imap_up(port):
    try:
        with socket.create_connection((fh.HOST, port), timeout=1) as s:
            return s.makefile("rb").readline(200).startswith(b"* OK")
    except OSError:
        return False


def restart_dovecot(side, down_s):
    """Stops side's Dovecot (all its processes: sessions are cut), keeps it
    down for down_s, starts it again with the same configuration."""
    conf = getattr(ENV, f"{side}_dovecot_conf")
    port = ENV.port(side, "imap")
    dovecot = shutil.which("dovecot", path=os.environ.get("PATH", "") + ":/usr/sbin")
    subprocess.run([dovecot, "-c", conf, "stop"], check=True, capture_output=True, timeout=30)
    deadline = time.monotonic() + 30
    while imap_up(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"dovecot {side} did not stop")
        time.sleep(0.05)
    time.sleep(down_s)
    deadline = time.monotonic() + 30
    while True:  # its old master may still be exiting: try again until it runs
        errlog = os.path.join(WORKDIR, f"dovecot-{side}.stderr")
        with open(errlog, "wb") as err:  # a file: the forked daemon keeps it open
            r = subprocess.run([dovecot, "-c", conf], cwd=os.path.dirname(conf),
                               stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=30)
        if r.returncode == 0:
            break
        if time.monotonic() > deadline:
            with open(errlog, errors="replace") as f:
                raise RuntimeError(f"dovecot {side} did not start: {f.read()}")
        time.sleep(0.2)
    while not imap_up(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"dovecot {side} does not answer after its restart")
        time.sleep(0.05)


class Reliability(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        for side in ("src", "dst"):
            fh.wipe(ENV, side, USER)
        imap = ENV.imap("src", USER)
        try:
            for f in FOLDERS[1:]:
                fh.imap_check(imap.create(f), "CREATE")
            for n in range(10):
                fh.imap_check(imap.append(FOLDERS[n % 3], "(\\Seen)", None,
                                          message("seed", n)), "APPEND")
        finally:
            imap.logout()
        with open(USERS_FILE, "w") as f:
            f.write(USER + "\n")
        cls.redis = PrivateRedis(WORKDIR)
        cls.proxy = fh.start_proxy(ENV, PROXY, redis_port=cls.redis.port, log_dir=WORKDIR)
        cls.daemons = Daemons(cls.redis.port)

    @classmethod
    def tearDownClass(cls):
        cls.daemons.stop_all()
        cls.proxy.stop()
        cls.redis.stop()

    def proxy_imap(self):
        imap = imaplib.IMAP4(fh.HOST, self.proxy.port)
        imap.starttls(ssl_context=ENV.ssl_context())
        imap.login(USER, ENV.password(USER))
        return imap

    def wait_identical(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            try:
                diffs = fh.compare(ENV, USER, "src", USER, "dst")
            except fh.HarnessError as e:  # a folder changed while it was read
                diffs = [str(e)]
            if not diffs:
                return
            if time.monotonic() > deadline:
                self.fail("not replicated in time: " + "; ".join(map(str, diffs[:5]))
                          + "\n" + self.daemons.text()[-6000:])
            time.sleep(0.3)

    def workload(self, seed, seconds, errors, done):
        """One client's random mix through the proxy; every command checked."""
        rnd = random.Random(seed)
        imap = self.proxy_imap()
        n = 0
        try:
            t_end = time.monotonic() + seconds
            while time.monotonic() < t_end:
                folder = rnd.choice(FOLDERS)
                op = rnd.random()
                n += 1
                if op < 0.4:
                    fh.imap_check(imap.append(folder, rnd.choice(["()", "(\\Seen)"]), None,
                                              message(f"w{seed}", n)), "APPEND")
                    continue
                fh.imap_check(imap.select(folder), "SELECT")
                typ, data = imap.uid("SEARCH", "ALL")
                uids = data[0].split() if typ == "OK" and data[0] else []
                if not uids:
                    continue
                uid = rnd.choice(uids).decode()
                if op < 0.65:
                    flag = rnd.choice(["\\Flagged", "\\Answered", "$Label1"])
                    ok_or_gone(imap.uid("STORE", uid, rnd.choice(["+FLAGS", "-FLAGS"]),
                                        f"({flag})"), "STORE")
                elif op < 0.8:
                    ok_or_gone(imap.uid("STORE", uid, "+FLAGS", "(\\Deleted)"), "STORE")
                    ok_or_gone(imap.uid("EXPUNGE", uid), "UID EXPUNGE")
                elif op < 0.9:
                    ok_or_gone(imap.uid("COPY", uid, rnd.choice(FOLDERS)), "COPY")
                else:
                    other = rnd.choice([f for f in FOLDERS if f != folder])
                    ok_or_gone(imap.uid("MOVE", uid, other), "MOVE")
                imap.close()
        except Exception as e:  # reported by the test, not lost in a thread
            errors.append(f"client {seed}: {e!r}")
        finally:
            try:
                imap.logout()
            except Exception:
                pass
            done.append(n)

    def test_1_two_daemons_random_load_and_a_crash(self):
        self.daemons.start("a")
        self.daemons.start("b")
        self.wait_identical(60)  # the bulk start (--users)
        errors, done = [], []
        threads = [threading.Thread(target=self.workload, args=(s, 8, errors, done))
                   for s in (1, 2, 3)]
        for t in threads:
            t.start()
        time.sleep(3)
        self.daemons.kill("a")  # a crash mid-load: its leases expire, b goes on
        time.sleep(1)
        self.daemons.start("a")
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertGreater(sum(done), 30)
        self.wait_identical(90)

        # the lock: no two syncs of one (user, folder) overlapped in time,
        # across both daemons and all their workers
        spans = {}
        for m in WINDOW.finditer(self.daemons.text()):
            spans.setdefault((m.group(1), m.group(2)), []).append(
                (int(m.group(3)), int(m.group(4))))
        folder_syncs = sum(len(v) for k, v in spans.items() if k[1] != "*")
        self.assertGreater(folder_syncs, 10, self.daemons.text()[-3000:])
        for key, ws in spans.items():
            ws.sort()
            for (s1, e1), (s2, e2) in zip(ws, ws[1:]):
                self.assertGreaterEqual(s2, e1, f"{key}: syncs overlap: {s1}-{e1} and {s2}-{e2}")
        both = {n for n in ("a", "b") if re.search(r"sync \S+ \[[^*\]]+\] done",
                                                   self.daemons.text(n))}
        self.assertEqual(both, {"a", "b"}, "both daemons should have synced folders")

    def test_2_redis_lost_and_restarted_empty(self):
        if not self.daemons.procs:
            self.daemons.start("a")
        port = self.redis.port
        self.redis.stop()
        # mail never waits for Redis: a client keeps working through the proxy
        imap = self.proxy_imap()
        try:
            t0 = time.monotonic()
            fh.imap_check(imap.append("Work", "()", None, message("noredis", 1)), "APPEND")
            self.assertLess(time.monotonic() - t0, 2)
        finally:
            imap.logout()
        # and a delivery that bypasses the proxy: only a sweep can find it
        # (--poll is 600 s)
        fh.deliver(ENV, USER, message("lmtp-noredis", 2))
        time.sleep(1)
        type(self).redis = PrivateRedis(WORKDIR, port=port)  # empty: queue and state gone
        # the proxy flushes the marks it kept; the daemon sees it reconnected
        # and quick-checks every user it knows, which finds the delivery
        self.wait_identical(30)
        self.assertIn("Redis reconnected: quick check of all", self.daemons.text())

    def test_3_redis_restarted_with_its_data(self):
        if not self.daemons.procs:
            self.daemons.start("a")
        port = self.redis.port
        # the sync state (per-user folder states and UID maps) is what must
        # survive; those keys are never deleted while the daemon runs (the
        # due and inflight sets come and go with every sync, so DBSIZE races)
        def state_keys(p):
            out = subprocess.run(["redis-cli", "-p", str(p), "--scan", "--pattern", "rep:*:[sm][ta]*:*"],
                                 capture_output=True, text=True).stdout.split()
            return set(k for k in out if ":st:" in k or ":map:" in k)
        keys_before = state_keys(port)
        self.assertTrue(keys_before, "no sync state in Redis before the restart")
        self.assertEqual(self.redis.cli("SAVE"), "OK")
        saved = os.path.join(WORKDIR, "dump.rdb")
        self.assertTrue(os.path.exists(saved))
        self.redis.stop()
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", fh.HOST,
                                 "--save", "", "--appendonly", "no", "--dir", WORKDIR],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True,
                                 text=True).stdout.strip() != "PONG":
                self.assertLess(time.monotonic(), deadline, "redis did not restart")
                time.sleep(0.05)
            missing = keys_before - state_keys(port)
            self.assertFalse(missing, "sync state lost in the restart")
            imap = self.proxy_imap()
            try:
                fh.imap_check(imap.append("Archive", "(\\Flagged)", None,
                                          message("reloaded", 1)), "APPEND")
            finally:
                imap.logout()
            self.wait_identical(60)
        finally:
            proc.kill()
            proc.wait()
            # the next tests need a Redis on that port, also after a failure
            type(self).redis = PrivateRedis(WORKDIR, port=port)

    def restart_mid_sync(self, side, tag):
        # a throttled daemon (100 messages/s: 3 s for the batch), so that the
        # restart lands in the middle of the sync on any machine
        self.daemons.stop_all()
        self.daemons.start(f"slow-{side}", extra=("--maxmessagespersecond", "100"))
        imap = ENV.imap("src", USER)  # straight into the source: a sweep-sized batch
        try:
            for n in range(300):
                fh.imap_check(imap.append("Archive", "()", None,
                                          message(tag, 20000 + n)), "APPEND")
        finally:
            imap.logout()
        # counted before the mark: the sync it starts may begin at once
        pattern = re.compile(rf"sync {USER} \[Archive\] started")
        seen = len(pattern.findall(self.daemons.text()))
        proxy = self.proxy_imap()  # one mark through the proxy starts the sync
        try:
            fh.imap_check(proxy.append("Archive", "()", None, message(tag, 1)), "APPEND")
        finally:
            proxy.logout()
        deadline = time.monotonic() + 10
        while len(pattern.findall(self.daemons.text())) == seen and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # in the middle of it
        t_restart = time.time() * 1000
        restart_dovecot(side, 1.0)
        self.wait_identical(90)
        text = self.daemons.text(f"slow-{side}")
        self.daemons.stop_all()
        # the restart hit a sync of the batch: one that failed (and was
        # retried), or one whose window spans the restart (its own reconnect
        # redid the folder); either way the accounts are identical above
        spans = [(int(m.group(3)), int(m.group(4))) for m in WINDOW.finditer(text)
                 if m.group(2) == "Archive"]
        hit = [w for w in spans if w[0] < t_restart < w[1]]
        failed = re.search(rf"sync {USER} \[Archive\] failed", text)
        # convergence above is the requirement; whether the restart fell in
        # the middle of a sync depends on the machine's speed: said, not asserted
        print(f"\n{side} restart: {'a sync spanned it' if hit else 'no sync spanned it'}"
              f"{', a sync failed and was retried' if failed else ''}")
        return text

    def test_4_source_restarted_mid_sync(self):
        self.restart_mid_sync("src", "srcrestart")

    def test_5_destination_restarted_mid_sync(self):
        self.restart_mid_sync("dst", "dstrestart")


if __name__ == "__main__":
    unittest.main(verbosity=2)
