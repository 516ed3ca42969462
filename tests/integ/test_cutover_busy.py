#!/usr/bin/env python3
"""Per-user cutover under load and after it (issue 7), user kate, on a Redis
of this test's own.

- busy user: a client keeps writing through the proxy (APPEND, STORE,
  UID EXPUNGE, in two folders) and logs every change the server
  acknowledged; the user is cut over meanwhile; the client gets the BYE,
  reconnects (its login is held, then goes to the destination) and writes
  on; afterwards every acknowledged change is on the destination: bytes,
  flags, INTERNALDATE, and acknowledged expunges are gone;
- a proxy restart during a freeze: the proxy is killed while a session of
  the user keeps it from confirming the freeze; a new proxy learns of the
  freeze (imapferryctl repeats its kick), confirms it, holds a login, and the
  cutover completes with the held login on the destination;

Needs FERRY_ENV_DIR, FERRY_SYNC, FERRY_PROXY, FERRY_CTL.
"""

import atexit
import hashlib
import imaplib
import json
import os
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import ferry_harness as fh
from private_redis import PrivateRedis

USER = "kate"
ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
PROXY = os.environ["FERRY_PROXY"]
CTL = os.environ["FERRY_CTL"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-cutover-busy-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
FOLDERS = ("INBOX", "Archive")
DATE = '"14-Mar-2021 09:26:53 +0100"'


def sync_options():
    opts = []
    for n, side in (("1", "src"), ("2", "dst")):
        opts += [f"--host{n}", fh.HOST, f"--port{n}", str(ENV.port(side, "imap")),
                 f"--authuser{n}", fh.MASTER_USER, f"--password{n}", fh.MASTER_PASS,
                 f"--sslargs{n}", f"SSL_ca_file={ENV.ca_file}"]
    # --delete2: what the user expunged on the source after the daemon had
    # copied it must go on the destination too (the cutover's verdict is strict)
    return opts + ["--syncduplicates", "--delete2", "--nolog", "--tmpdir", WORKDIR]


def separator(imap):
    typ, data = imap.list('""', '""')
    fh.imap_check((typ, data), "LIST")
    return data[0].decode().split('"')[1]


def message(tag, n, size=600):
    body = "".join(f"line {i} of {tag} {n}\r\n" for i in range(size // 20))
    return (f"From: w@example.org\r\nTo: {USER}@example.org\r\nSubject: {tag} {n}\r\n"
            f"Message-Id: <{tag}-{n}@example.org>\r\n\r\n{body}").encode()


def fill(env):
    """A light account on the source: three folders, a few dozen messages,
    some flagged (the whole corpus is test_cutover's job)."""
    imap = env.imap("src", USER)
    try:
        for folder in ("Archive", "Lists"):
            fh.imap_check(imap.create(folder), f"CREATE {folder}")
            fh.imap_check(imap.subscribe(folder), f"SUBSCRIBE {folder}")
        for n in range(36):
            folder = ("INBOX", "Archive", "Lists")[n % 3]
            flags = ("(\\Seen)", None, "(\\Seen \\Flagged $Label1)")[n % 3]
            fh.imap_check(imap.append(folder, flags, DATE, message("base", n, 300 + 97 * n)),
                          "APPEND")
    finally:
        imap.logout()


class Msg:
    def __init__(self, mid, folder, raw, flags):
        self.mid = mid
        self.folder = folder
        self.digest = hashlib.sha256(raw).hexdigest()
        self.flags = set(flags)
        self.expunged = False
        self.tainted = False  # a change to it was cut off: its outcome is unknown


class Writer(threading.Thread):
    """Keeps changing the user's mailbox through the proxy; every change the
    server acknowledged (tagged OK) is in the model and in self.log."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.rng = random.Random(7)
        self.msgs = {}
        self.log = []
        self.stop = threading.Event()
        self.sessions = []  # (separator, acknowledged changes in that session)
        self.error = None
        self.n = 0

    def connect(self):
        imap = imaplib.IMAP4(fh.HOST, self.port, timeout=30)
        imap.starttls(ssl_context=ENV.ssl_context())
        t0 = time.monotonic()
        imap.login(USER, ENV.password(USER))
        self.sessions.append([separator(imap), 0, time.monotonic() - t0])
        return imap

    def ack(self, what):
        self.log.append(what)
        self.sessions[-1][1] += 1

    def uid_of(self, imap, m):
        fh.imap_check(imap.select(m.folder), f"SELECT {m.folder}")
        typ, data = imap.uid("SEARCH", "HEADER", "Message-ID", f'"<{m.mid}@example.org>"')
        fh.imap_check((typ, data), "UID SEARCH")
        uids = data[0].split()
        if len(uids) != 1:
            raise AssertionError(f"{m.mid}: {len(uids)} copies in {m.folder} "
                                 f"on the {'dst' if self.sessions[-1][0] == '/' else 'src'}")
        return uids[0].decode()

    def step(self, imap):
        i = self.n
        self.n += 1
        folder = FOLDERS[i % 2]
        flags = ["\\Seen"] if i % 3 == 0 else []
        if i % 5 == 0:
            flags.append("$Busy")
        raw = message("busy", i, 400 + 37 * (i % 50))
        m = Msg(f"busy-{i}", folder, raw, flags)
        m.tainted = True
        self.msgs[m.mid] = m
        typ, _ = imap.append(folder, f"({' '.join(flags)})" if flags else None, DATE, raw)
        if typ != "OK":
            raise AssertionError(f"APPEND {m.mid}: {typ}")
        m.tainted = False
        self.ack(f"APPEND {m.mid} {folder} {sorted(flags)}")
        live = [x for x in self.msgs.values() if not x.expunged and not x.tainted]
        m = self.rng.choice(live)
        change = self.rng.choice([("+FLAGS", "\\Flagged"), ("-FLAGS", "\\Seen"),
                                  ("+FLAGS", "$Busy2"), ("+FLAGS", "\\Answered"),
                                  ("-FLAGS", "$Busy")])
        uid = self.uid_of(imap, m)
        m.tainted = True
        fh.imap_check(imap.uid("STORE", uid, change[0], f"({change[1]})"), "UID STORE")
        m.tainted = False
        (m.flags.add if change[0] == "+FLAGS" else m.flags.discard)(change[1])
        self.ack(f"STORE {m.mid} {change[0]} {change[1]}")
        if i % 4 == 3:
            m = self.rng.choice([x for x in live if x is not m])
            uid = self.uid_of(imap, m)
            m.tainted = True
            fh.imap_check(imap.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
            fh.imap_check(imap.uid("EXPUNGE", uid), "UID EXPUNGE")
            m.tainted = False
            m.expunged = True
            self.ack(f"EXPUNGE {m.mid}")

    def run(self):
        imap = None
        try:
            while not self.stop.is_set():
                if imap is None:
                    imap = self.connect()
                try:
                    self.step(imap)
                except (imaplib.IMAP4.abort, OSError) as e:
                    # the BYE (or the connection closing after it): what
                    # was in flight is tainted; reconnect
                    self.log.append(f"-- connection ended: {e!r}")
                    try:
                        imap.shutdown()
                    except OSError:
                        pass
                    imap = None
            imap.logout()
        except Exception as e:
            self.error = repr(e)


class Base(unittest.TestCase):
    proxy_args = ["--freeze-hold", "20", "--freeze-drain", "3"]
    daemon = None

    @classmethod
    def setUpClass(cls):
        fh.wipe(ENV, "src", USER)
        fh.wipe(ENV, "dst", USER)
        fill(ENV)
        cls.redis = PrivateRedis(WORKDIR)
        cls.proxy = cls.start_proxy()

    @classmethod
    def start_daemon(cls):
        """imapferry-sync --daemon for kate, as in production: it syncs what
        the proxy marks while the cutover runs."""
        users = os.path.join(WORKDIR, "users")
        with open(users, "w") as f:
            f.write(f"{USER}\n")
        cmd = [SYNC, "--daemon", "--redis", f"{fh.HOST}:{cls.redis.port}", "--users", users,
               "--poll", "600", "--lease", "10", "--tmpdir", WORKDIR, *sync_options()]
        cls.daemon_log = open(os.path.join(WORKDIR, "daemon.log"), "ab")
        cls.daemon = subprocess.Popen(cmd, stdout=cls.daemon_log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def daemon_log_text(self):
        with open(os.path.join(WORKDIR, "daemon.log"), errors="replace") as f:
            return f.read()

    @classmethod
    def stop_daemon(cls):
        if cls.daemon is None:
            return
        fh.stop_daemon(cls.daemon)
        cls.daemon_log.close()
        cls.daemon = None

    @classmethod
    def start_proxy(cls):
        return fh.start_proxy(
            ENV, PROXY, redis_port=cls.redis.port, log_dir=WORKDIR,
            extra_args=["--upstream-dst", f"{fh.HOST}:{ENV.port('dst', 'imap')}",
                        *cls.proxy_args])

    @classmethod
    def tearDownClass(cls):
        cls.stop_daemon()
        cls.proxy.stop()
        cls.redis.stop()

    def ctl(self, *args, check=None, timeout=120):
        p = subprocess.run([CTL, "--redis", f"{fh.HOST}:{self.redis.port}", "--sync", SYNC,
                            *args], capture_output=True, text=True, timeout=timeout)
        out = p.stdout + p.stderr
        if check is not None and p.returncode != check:
            self.fail(f"imapferryctl {' '.join(args[:3])}: exit {p.returncode}, "
                      f"want {check}\n{out}\n{self.proxy.log_text()[-3000:]}")
        return p.returncode, out

    def ctl_bg(self, *args):
        return subprocess.Popen([CTL, "--redis", f"{fh.HOST}:{self.redis.port}", "--sync",
                                 SYNC, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def route(self):
        return self.redis.cli("HGET", f"rep:route:{USER}", "state")

    def wait_for(self, what, check, timeout):
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                self.fail(f"{what}: not within {timeout} s\n" + self.proxy.log_text()[-3000:])
            time.sleep(0.05)

    def proxy_imap(self, proxy=None):
        imap = imaplib.IMAP4(fh.HOST, (proxy or self.proxy).port, timeout=30)
        imap.starttls(ssl_context=ENV.ssl_context())
        imap.login(USER, ENV.password(USER))
        return imap

    def held_login(self, proxy):
        result = {}

        def run():
            t0 = time.monotonic()
            try:
                imap = self.proxy_imap(proxy)
                result["waited"] = time.monotonic() - t0
                result["sep"] = separator(imap)
                imap.logout()
            except Exception as e:  # reported by the caller
                result["error"] = repr(e)
        t = threading.Thread(target=run)
        t.start()
        return t, result


class AllUsers(Base):

    def test_cutover_all_with_a_limit_and_a_summary(self):
        ghost = "ghost"  # known in Redis, not on the servers: its final sync fails
        self.redis.cli("ZADD", f"rep:{{{fh.shard(ghost)}}}:poll", "1", ghost)
        self.redis.cli("ZADD", f"rep:{{{fh.shard(USER)}}}:poll", "1", USER)
        self.redis.cli("HSET", "rep:route:zed", "state", "DST", "epoch", "3")
        rc, out = self.ctl("cutover", "--all", "--jobs", "2", "--", *sync_options(), check=1)
        self.assertIn("--all: 3 users known in Redis", out)
        self.assertRegex(out, r"cutover: 3 users in [\d.]+ s: 1 done, 1 already on the "
                              r"destination, 1 failed\n")
        self.assertIn("failed: ghost\n", out)
        self.assertIn(f"{USER}: cut over to the destination", out)
        self.assertIn("ghost: rolled back to the source", out)
        self.assertEqual(self.route(), "DST")
        self.assertEqual(self.redis.cli("HGET", "rep:route:ghost", "state"), "SRC")
        # the last sync and the last error, as status (and the page) show them
        doc = json.loads(self.ctl("status", USER, "ghost", "--json", check=0)[1])
        by = {u["user"]: u for u in doc["users"]}
        self.assertEqual(by[USER]["last_sync_by"], "cutover")
        self.assertLess(abs(doc["now_ms"] - by[USER]["last_sync_ms"]), 60000)
        self.assertFalse(by[USER]["error_current"])
        self.assertTrue(by["ghost"]["error_current"])
        self.assertRegex(by["ghost"]["last_error"], r"^imapferry-sync did not exit 0 \(.+\)$")
        # a re-run only retries what is left; final-delta leaves DST users alone
        rc, out = self.ctl("final-delta", USER, "zed", "--", *sync_options(), check=0)
        self.assertIn(f"{USER}: route DST: on the destination already", out)
        self.assertRegex(out, r"final-delta: 2 users in [\d.]+ s: 0 done, 2 already")
        rc, out = self.ctl("cutover", "--all", "--", check=64)


class Busy(Base):

    def test_busy_user_loses_no_acknowledged_change(self):
        self.ctl("final-delta", USER, "--", *sync_options(), check=0)  # a warm user
        self.start_daemon()
        w = Writer(self.proxy.port)
        w.start()
        p = None
        try:
            self.wait_for("writer busy", lambda: len(w.log) >= 30 or w.error, 30)
            t0 = time.monotonic()
            p = self.ctl_bg("cutover", USER, "--", *sync_options())
            out, _ = p.communicate(timeout=120)
            took = time.monotonic() - t0
            self.assertEqual(p.returncode, 0, out + self.proxy.log_text()[-3000:])
            # and it keeps writing on the destination for a while
            self.wait_for("writes on the destination",
                          lambda: (len(w.sessions) > 1 and w.sessions[-1][1] >= 40)
                          or w.error or not w.is_alive(), 30)
            time.sleep(4)  # the proxy's marks of them are due (3 s for flags)
        finally:
            w.stop.set()
            w.join(30)
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        log = "\n".join(w.log[-40:])
        self.assertIsNone(w.error, log)
        self.assertEqual(self.route(), "DST")
        self.assertGreaterEqual(len(w.sessions), 2, log)
        self.assertEqual(w.sessions[0][0], ENV.sep("src"))
        self.assertEqual(w.sessions[-1][0], ENV.sep("dst"), w.sessions)
        self.assertGreater(w.sessions[0][1], 20)
        self.assertGreater(w.sessions[-1][1], 10)
        tainted = [m.mid for m in w.msgs.values() if m.tainted]
        self.assertLessEqual(len(tainted), len(w.sessions) - 1, tainted)
        print(f"\nbusy cutover: {took:.2f} s, {len(w.log)} acknowledged changes in "
              f"{len(w.sessions)} sessions {[s[:2] for s in w.sessions]}, held login waited "
              f"{w.sessions[-1][2]:.2f} s, tainted {tainted}")
        # the daemon keeps its hands off a user on the destination: marks of
        # every folder (as a sweep or a late proxy mark would make) are dropped;
        # a sync source -> destination now would undo the user's new changes
        # there (with --delete2, delete the mail written since the flip)
        before = self.daemon_log_text().count("is on the destination (cut over)")
        shard = fh.shard(USER)
        for f in ["*", *FOLDERS]:
            self.redis.cli("ZADD", f"rep:{{{shard}}}:due", "0", f"{USER}\t{f}")
        self.wait_for("the daemon drops the marks of a cut-over user",
                      lambda: self.daemon_log_text().count("is on the destination (cut over)")
                      >= before + 1 + len(FOLDERS), 20)
        # every acknowledged change is on the destination
        dst = ENV.imap("dst", USER)
        try:
            have = {f: fh.fetch_folder(dst, f) for f in FOLDERS}
        finally:
            dst.logout()
        by_digest = {}
        for f, infos in have.items():
            for info in infos:
                by_digest.setdefault(info.digest, []).append((f, info))
        problems = []
        want_epoch = fh.parse_internaldate(DATE.strip('"'))
        for m in w.msgs.values():
            if m.tainted:
                continue
            found = by_digest.get(m.digest, [])
            if m.expunged:
                if found:
                    problems.append(f"{m.mid}: expunged, but on the destination in "
                                    f"{[f for f, _ in found]}")
                continue
            if len(found) != 1 or found[0][0] != m.folder:
                problems.append(f"{m.mid}: want once in {m.folder}, found "
                                f"{[f for f, _ in found]}")
                continue
            info = found[0][1]
            if set(info.flags) != m.flags:
                problems.append(f"{m.mid}: flags {sorted(info.flags)}, want {sorted(m.flags)}")
            if info.epoch != want_epoch:
                problems.append(f"{m.mid}: INTERNALDATE {info.internaldate}")
        self.assertEqual(problems, [], "\n" + log + "\n" + self.proxy.log_text()[-3000:])
        self.assertRegex(out, rf"{USER}: The sync looks good")


class ProxyRestart(Base):
    # a session stuck in a literal keeps the proxy from confirming the
    # freeze for this long: the proxy dies first
    proxy_args = ["--freeze-hold", "20", "--freeze-drain", "60"]

    def slow_sync(self):
        """imapferry-sync behind a 2 s delay: a login is made during the
        final sync for sure."""
        path = os.path.join(WORKDIR, "slow-sync")
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\nsleep 2\nexec {SYNC} \"$@\"\n")
        os.chmod(path, 0o755)
        return path

    def test_proxy_restart_during_a_freeze(self):
        self.ctl("final-delta", USER, "--", *sync_options(), check=0)
        # a client in the middle of an APPEND literal
        import ssl
        raw = socket.create_connection((fh.HOST, self.proxy.port), timeout=30)
        f = raw.makefile("rb")
        f.readline()
        raw.sendall(b"s1 STARTTLS\r\n")
        f.readline()
        tls = ENV.ssl_context().wrap_socket(raw, server_hostname=fh.HOST)
        f = tls.makefile("rb")
        tls.sendall(f"l1 LOGIN {USER} {ENV.password(USER)}\r\n".encode())
        self.assertTrue(f.readline().startswith(b"l1 OK"))
        tls.sendall(b"a1 APPEND INBOX {1000}\r\n")
        self.assertTrue(f.readline().startswith(b"+"))
        tls.sendall(b"From: x@example.org\r\n")
        p = subprocess.Popen([CTL, "--redis", f"{fh.HOST}:{self.redis.port}", "--sync",
                              self.slow_sync(), "cutover", USER, "--", *sync_options()],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        held = None
        try:
            self.wait_for("route FREEZE", lambda: self.route() == "FREEZE", 10)
            self.wait_for("the drain", lambda: "closing at the next command boundary"
                          in self.proxy.log_text(), 10)
            time.sleep(0.3)
            self.assertFalse(self.redis.cli("HGETALL", f"rep:frz:{USER}"))  # no ack yet
            self.proxy.proc.kill()  # a crash: no goodbye to anyone
            self.proxy.proc.wait()
            tls.close()
            old = self.proxy
            self.__class__.proxy = self.start_proxy()
            # the new proxy hears the repeated kick and confirms the freeze
            self.wait_for("the new proxy's ack", lambda: "acknowledged"
                          in self.proxy.log_text(), 10)
            self.assertEqual(self.route(), "FREEZE")
            held, result = self.held_login(self.proxy)
            self.wait_for("the held login", lambda: "login held" in self.proxy.log_text(), 10)
            out, _ = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            if held is not None:
                held.join(30)
        self.assertEqual(p.returncode, 0, out + old.log_text()[-2000:]
                         + self.proxy.log_text()[-2000:])
        self.assertIn("cut over to the destination", out)
        self.assertEqual(self.route(), "DST")
        self.assertNotIn("error", result)
        self.assertEqual(result.get("sep"), ENV.sep("dst"))
        self.assertRegex(self.proxy.log_text(), r"held login released: route DST")
        imap = self.proxy_imap()
        self.assertEqual(separator(imap), ENV.sep("dst"))
        imap.logout()
        # the cut-off APPEND was never acknowledged and is nowhere
        for side in ("src", "dst"):
            imap = ENV.imap(side, USER)
            try:
                imap.select("INBOX")
                typ, data = imap.search(None, "FROM", "x@example.org")
                self.assertEqual(data[0], b"", side)
            finally:
                imap.logout()


class AfterFlip(Base):
    """Stragglers after the flip, then a rollback after the flip."""

    def find(self, side, mid, folder="INBOX"):
        imap = ENV.imap(side, USER)
        try:
            fh.imap_check(imap.select(folder, readonly=True), "EXAMINE")
            typ, data = imap.uid("SEARCH", "HEADER", "Message-ID", f'"<{mid}@example.org>"')
            return data[0].split()
        finally:
            imap.logout()

    def deliver(self, n):
        fh.deliver(ENV, USER, message("strag", n))

    def test_1_stragglers(self):
        rc, out = self.ctl("cutover", USER, "--stragglers", "60", "--", *sync_options(),
                           check=0)
        self.assertIn(f"{USER}: stragglers: source INBOX mail from UID", out)
        self.assertEqual(self.route(), "DST")
        self.assertTrue(self.redis.cli("ZSCORE", "rep:stragglers", USER))
        self.deliver(1)  # late MX: still delivered to the source
        rc, out = self.ctl("stragglers", "--", *sync_options(), check=0)
        self.assertIn(f"{USER}: 1 straggler copied", out)
        self.assertEqual(len(self.find("dst", "strag-1")), 1)
        rc, out = self.ctl("stragglers", "--", *sync_options(), check=0)
        self.assertIn(f"{USER}: 0 stragglers copied", out)
        self.assertEqual(len(self.find("dst", "strag-1")), 1)  # no duplicate
        # the user deletes it on the destination: it is not copied again
        imap = self.proxy_imap()
        self.assertEqual(separator(imap), ENV.sep("dst"))
        imap.select("INBOX")
        typ, data = imap.uid("SEARCH", "HEADER", "Message-ID", '"<strag-1@example.org>"')
        fh.imap_check(imap.uid("STORE", data[0].decode(), "+FLAGS.SILENT", "(\\Deleted)"),
                      "STORE")
        fh.imap_check(imap.uid("EXPUNGE", data[0].decode()), "UID EXPUNGE")
        imap.logout()
        rc, out = self.ctl("stragglers", "--", *sync_options(), check=0)
        self.assertIn(f"{USER}: 0 stragglers copied", out)
        self.assertEqual(self.find("dst", "strag-1"), [])
        # once the window has ended, the periodic pass leaves the user alone
        self.deliver(2)
        self.redis.cli("ZADD", "rep:stragglers", "1", USER)
        rc, out = self.ctl("stragglers", "--", *sync_options(), check=0)
        self.assertIn("1 window ended", out)
        self.assertIn("no user in a straggler window", out)
        self.assertEqual(self.find("dst", "strag-2"), [])
        # named explicitly, it runs anyway
        rc, out = self.ctl("stragglers", USER, "--", *sync_options(), check=0)
        self.assertIn(f"{USER}: 1 straggler copied", out)
        self.assertEqual(len(self.find("dst", "strag-2")), 1)

    def test_2_rollback_after_the_flip(self):
        self.assertEqual(self.route(), "DST")
        imap = self.proxy_imap()
        self.assertEqual(separator(imap), ENV.sep("dst"))
        fh.imap_check(imap.append("INBOX", "(\\Seen)", DATE, message("after-flip", 1)),
                      "APPEND")
        imap.select("INBOX")
        typ, data = imap.uid("SEARCH", "HEADER", "Message-ID", '"<strag-2@example.org>"')
        fh.imap_check(imap.uid("STORE", data[0].decode(), "+FLAGS", "(\\Flagged)"), "STORE")
        imap.select("Archive")
        typ, data = imap.uid("SEARCH", "ALL")
        victim = data[0].split()[0].decode()
        fh.imap_check(imap.uid("STORE", victim, "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
        fh.imap_check(imap.uid("EXPUNGE", victim), "UID EXPUNGE")
        imap.select("INBOX")  # stays open: the rollback's freeze closes it
        self.deliver(3)  # delivered to the source after the flip, never copied yet
        # without SYNC-OPTIONS: what would be lost, and nothing done
        rc, out = self.ctl("rollback", USER, check=1)
        self.assertIn("would be lost", out)
        self.assertEqual(self.route(), "DST")
        rc, out = self.ctl("rollback", USER, "--", *sync_options(), check=0)
        self.assertIn(f"{USER}: 1 straggler copied first", out)
        self.assertIn(f"{USER}: verified:", out)
        self.assertIn(f"{USER}: rolled back to the source", out)
        with self.assertRaises(imaplib.IMAP4.abort) as cm:
            imap.noop()
            imap.noop()
        self.assertIn("UNAVAILABLE", str(cm.exception))
        imap.shutdown()
        self.assertEqual(self.route(), "SRC")
        self.assertEqual(fh.compare(ENV, USER, "src", USER, "dst"), [])
        self.assertEqual(len(self.find("src", "after-flip-1")), 1)
        self.assertEqual(len(self.find("src", "strag-3")), 1)
        self.assertEqual(self.redis.cli("EXISTS", f"rep:strag:{USER}"), "0")
        self.assertEqual(self.redis.cli("EXISTS", f"rep:{{{fh.shard(USER)}}}:st:{USER}"), "0")
        imap = self.proxy_imap()
        self.assertEqual(separator(imap), ENV.sep("src"))
        imap.logout()


if __name__ == "__main__":
    unittest.main(verbosity=2)
