#!/usr/bin/env python3
"""Live replication (issue 6): imapferry-proxy in front of the source Dovecot,
imapferry-sync --daemon consuming its marks, both on a Redis of this test's
own (so no other test's marks are consumed).

Covers: the bulk start of a --users list copies the account (master-user
logins, no user password anywhere); a change made through the proxy reaches
the destination within seconds; an LMTP delivery that bypasses the proxy is
found by the poll; a daemon killed (with its children) in the middle of a
burst and started again converges with no duplicate; /metrics answers;
SIGTERM stops it cleanly.

Uses user frank on both sides. Needs FERRY_ENV_DIR, FERRY_SYNC, FERRY_PROXY.
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

USER = "frank"
ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
PROXY = os.environ["FERRY_PROXY"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-daemon-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)





def message(n, tag):
    return (f"From: a@example.org\r\nTo: {USER}@example.org\r\nSubject: {tag} {n}\r\n"
            f"Message-Id: <{tag}-{n}@example.org>\r\n\r\nbody {n}\r\n").encode()


class Daemon(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        fh.wipe(ENV, "src", USER)
        fh.wipe(ENV, "dst", USER)
        fh.populate(ENV, "src", USER, "small", seed=31)
        cls.redis = PrivateRedis(WORKDIR)
        cls.proxy = fh.start_proxy(ENV, PROXY, redis_port=cls.redis.port, log_dir=WORKDIR)
        cls.users = os.path.join(WORKDIR, "users")
        with open(cls.users, "w") as f:
            f.write(f"# users to migrate\n{USER}\n")
        cls.http = free_port()
        cls.daemon = None

    @classmethod
    def tearDownClass(cls):
        cls.stop_daemon()
        cls.proxy.stop()
        cls.redis.stop()

    @classmethod
    def start_daemon(cls):
        # the connection options in a --config file, the rest on the command line
        config = os.path.join(WORKDIR, "daemon.conf")
        with open(config, "w") as f:
            f.write(f"""# imapferry-sync --daemon
[sync]
host1 = {fh.HOST}
port1 = {ENV.port("src", "imap")}
authuser1 = {fh.MASTER_USER}
password1 = {fh.MASTER_PASS}
sslargs1 = SSL_ca_file={ENV.ca_file}
host2 = {fh.HOST}
port2 = {ENV.port("dst", "imap")}
authuser2 = {fh.MASTER_USER}
password2 = {fh.MASTER_PASS}
sslargs2 = SSL_ca_file={ENV.ca_file}
workers = 3
poll = 600
""")
        cmd = [SYNC, "--config", config, "--daemon", "--redis", f"{fh.HOST}:{cls.redis.port}",
               "--users", cls.users, "--poll", "2", "--lease", "6",
               "--http", f"{fh.HOST}:{cls.http}", "--tmpdir", WORKDIR]
        cls.daemon_log = open(os.path.join(WORKDIR, "daemon.log"), "ab")
        cls.daemon = subprocess.Popen(cmd, stdout=cls.daemon_log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    @classmethod
    def stop_daemon(cls, sig=signal.SIGTERM):
        if cls.daemon is None:
            return None
        if sig == signal.SIGKILL:
            os.killpg(cls.daemon.pid, signal.SIGKILL)  # the daemon and its syncs: a crash
        else:
            cls.daemon.send_signal(sig)
        try:
            rc = cls.daemon.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(cls.daemon.pid, signal.SIGKILL)
            rc = cls.daemon.wait()
        cls.daemon_log.close()
        cls.daemon = None
        return rc

    def log(self):
        with open(os.path.join(WORKDIR, "daemon.log"), errors="replace") as f:
            return f.read()[-4000:]

    def wait_identical(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            diffs = fh.compare(ENV, USER, "src", USER, "dst")
            if not diffs:
                return
            if time.monotonic() > deadline:
                self.fail("not replicated in time: " + "; ".join(map(str, diffs[:5]))
                          + "\n" + self.log())
            time.sleep(0.3)

    def wait_for(self, what, check, timeout):
        t0 = time.monotonic()
        while not check():
            if time.monotonic() - t0 > timeout:
                self.fail(f"{what}: not within {timeout} s\n" + self.log())
            time.sleep(0.05)
        return time.monotonic() - t0

    def dst_has(self, folder, msgid):
        imap = ENV.imap("dst", USER)
        try:
            typ, data = imap.select(fh.mailbox_arg(folder), readonly=True)
            typ, data = imap.search(None, "HEADER", "Message-Id", msgid)
            return typ == "OK" and bool(data[0].split())
        finally:
            imap.logout()

    def proxy_imap(self):
        import imaplib
        imap = imaplib.IMAP4(fh.HOST, self.proxy.port)
        imap.starttls(ssl_context=ENV.ssl_context())
        imap.login(USER, ENV.password(USER))
        return imap

    def test_1_bulk_start_copies_the_account(self):
        self.start_daemon()
        self.wait_identical(90)
        with urllib.request.urlopen(f"http://{fh.HOST}:{self.http}/metrics", timeout=5) as r:
            text = r.read().decode()
        self.assertIn("imapferry_sync_jobs_ok_total", text)
        self.assertIn("imapferry_sync_redis_up 1", text)

        def in_sync():
            with urllib.request.urlopen(f"http://{fh.HOST}:{self.http}/metrics",
                                        timeout=5) as r:
                return "imapferry_sync_users_in_sync 1\n" in r.read().decode()
        self.wait_for("the bulk start's progress: user in sync", in_sync, 15)
        self.assertRegex(self.log(), rf"user {USER}: in sync \(\d+ folders\)")
        # what the syncs copied: every source message once, byte for byte
        stats = {}
        self.assertEqual([], fh.compare(ENV, USER, "src", USER, "dst", stats=stats))
        m = self.metrics()
        self.assertEqual(stats["messages1"], m["imapferry_sync_messages_copied_total"], m)
        self.assertEqual(stats["bytes1"], m["imapferry_sync_bytes_copied_total"], m)
        self.assertEqual(0, m['imapferry_sync_errors_total{class="other"}'], m)

    def metrics(self):
        """/metrics as {name or name{labels}: number}."""
        return fh.metrics(self.http)

    def test_2_change_through_the_proxy(self):
        lags = self.metrics()["imapferry_sync_lag_seconds_count"]
        imap = self.proxy_imap()
        try:
            fh.imap_check(imap.append("Sent", "(\\Seen)", None, message(1, "live")), "APPEND")
            appended = time.monotonic()
            imap.select("INBOX")
            imap.store("1:2", "+FLAGS", "(\\Flagged)")
        finally:
            imap.logout()
        lag = self.wait_for("APPEND through the proxy on host2",
                            lambda: self.dst_has("Sent", "<live-1@example.org>"), 10)
        self.assertLess(time.monotonic() - appended, 10)
        self.wait_identical(10)
        print(f"replication lag of an APPEND through the proxy: {lag:.2f} s")
        # the folder syncs it caused are in the lag histogram, within 5 s
        m = self.metrics()
        self.assertGreater(m["imapferry_sync_lag_seconds_count"], lags, m)
        self.assertEqual(m["imapferry_sync_lag_seconds_count"],
                         m['imapferry_sync_lag_seconds_bucket{le="+Inf"}'], m)
        self.assertGreater(m['imapferry_sync_lag_seconds_bucket{le="5"}'], lags, m)

    def guid(self, side, folder, msgid):
        """Dovecot's X-GUID of the message with this Message-Id (maildir: the
        file's base name, which a COPY inside the server keeps and an APPEND
        does not)."""
        imap = ENV.imap(side, USER)
        try:
            imap.select(fh.mailbox_arg(folder), readonly=True)
            typ, data = imap.uid("SEARCH", None, "HEADER", "Message-Id", msgid)
            uids = data[0].split()
            self.assertEqual(1, len(uids), f"{side} {folder} {msgid}: {uids}")
            typ, data = imap.uid("FETCH", uids[0].decode(), "(X-GUID)")
            text = b" ".join(d if isinstance(d, bytes) else d[0] for d in data).decode()
            return text.split("X-GUID ")[1].split(")")[0].split()[0]
        finally:
            imap.logout()

    def done_count(self, folder):
        with open(os.path.join(WORKDIR, "daemon.log"), errors="replace") as f:
            return f.read().count(f"sync {USER} [{folder}] done")

    def append_then(self, command, tag):
        """APPENDs a message to INBOX through the proxy, waits until it is on
        host2 and INBOX's sync has ended (its UID map saved), then runs
        `UID command uid Sent` on it through the proxy and waits for it in
        host2's Sent. Returns (Message-Id, X-GUID of host2's INBOX copy)."""
        msgid = f"<{tag}-1@example.org>"
        before = self.done_count("INBOX")
        imap = self.proxy_imap()
        try:
            fh.imap_check(imap.append("INBOX", None, None, message(1, tag)), "APPEND")
        finally:
            imap.logout()
        self.wait_for("the APPEND on host2", lambda: self.dst_has("INBOX", msgid), 10)
        self.wait_for("the INBOX sync's end", lambda: self.done_count("INBOX") > before, 10)
        guid_inbox = self.guid("dst", "INBOX", msgid)
        imap = self.proxy_imap()
        try:
            imap.select("INBOX")
            typ, data = imap.uid("SEARCH", None, "HEADER", "Message-Id", msgid)
            typ, data = imap.uid(command, data[0].split()[0].decode(), "Sent")
            self.assertEqual("OK", typ, data)
        finally:
            imap.logout()
        self.wait_for(f"the {command} on host2", lambda: self.dst_has("Sent", msgid), 10)
        return msgid, guid_inbox

    def test_2b_move_through_the_proxy(self):
        """UID MOVE through the proxy: the proxy's move hint lets the daemon
        copy the message inside the destination (the copy in Sent has the
        X-GUID of the one in INBOX: a COPY, not a second upload)."""
        msgid, guid_inbox = self.append_then("MOVE", "moved")
        self.assertEqual(guid_inbox, self.guid("dst", "Sent", msgid), self.log())
        # without --delete2 the destination's INBOX keeps its copy (imapsync's
        # way); taken away here so that the accounts compare equal again
        imap = ENV.imap("dst", USER)
        try:
            imap.select("INBOX")
            typ, data = imap.uid("SEARCH", None, "HEADER", "Message-Id", msgid)
            imap.uid("STORE", data[0].split()[0].decode(), "+FLAGS.SILENT", "(\\Deleted)")
            imap.expunge()
        finally:
            imap.logout()
        self.wait_identical(20)

    def test_2c_copy_through_the_proxy(self):
        """UID COPY through the proxy: the copy hint makes the daemon copy the
        message inside the destination too (same X-GUID in both folders)."""
        msgid, guid_inbox = self.append_then("COPY", "copied")
        self.assertEqual(guid_inbox, self.guid("dst", "Sent", msgid), self.log())
        self.wait_identical(20)

    def test_3_delivery_that_bypasses_the_proxy(self):
        fh.deliver(ENV, USER, message(2, "lmtp"))
        self.wait_for("LMTP delivery found by the poll",
                      lambda: self.dst_has("INBOX", "<lmtp-2@example.org>"), 20)
        self.wait_identical(10)

    def dovecot_sessions(self, side):
        return fh.sessions(ENV, side, USER)

    def test_3b_idle_checks_keep_no_session(self):
        # The poll (every 2 s here) quick-checks the user; finding nothing
        # changed, the worker logs out instead of pooling, so the daemon
        # keeps no session (and so no server process) of an idle user.
        # Only the daemon logs in to the destination as USER meanwhile. The
        # other workers' pools still hold the connections of the last folder
        # syncs until they have been idle for 30 s (SY_POOL_IDLE_S); the
        # worker doing the quick checks would keep its own for ever if it
        # pooled them.
        self.wait_for("no daemon session left on the destination",
                      lambda: self.dovecot_sessions("dst") == 0, 45)
        with open(os.path.join(WORKDIR, "daemon.log"), errors="replace") as f:
            checks = f.read().count(f"sync {USER} [*] done")
        # a quick check has its own session while it runs (a fraction of a
        # second); none may outlive it (a pooled one would stay for good)
        t_end = time.monotonic() + 5
        seen_since = None
        while time.monotonic() < t_end:
            now = time.monotonic()
            if self.dovecot_sessions("dst") == 0:
                seen_since = None
            elif seen_since is None:
                seen_since = now
            else:
                self.assertLess(now - seen_since, 1.5,
                                "a session of the user stayed open between quick checks\n"
                                + self.log())
            time.sleep(0.1)
        with open(os.path.join(WORKDIR, "daemon.log"), errors="replace") as f:
            # quick checks did run in those 5 s (two polls)
            self.assertGreater(f.read().count(f"sync {USER} [*] done"), checks, self.log())

    def test_4_killed_mid_burst_then_restarted(self):
        imap = self.proxy_imap()
        try:
            for n in range(150):
                imap.append("INBOX", None, None, message(n, "burst"))
        finally:
            imap.logout()
        time.sleep(0.5)  # syncs are running
        self.stop_daemon(signal.SIGKILL)
        self.start_daemon()
        self.wait_identical(90)  # compare() reports duplicates as extra messages

    def test_5_sigterm(self):
        self.assertEqual(0, self.stop_daemon(signal.SIGTERM), self.log())

    def test_6_users_file_with_passwords(self):
        """imapsync's batch form (user1;password1;user2;password2, here with
        the trailing ';' of imapsync's examples) for servers without an
        admin login: the syncs log in as the user, the file's passwords go
        to them in the environment. A line with an empty field or a fifth
        one is ignored with a warning (never read shifted: a password taken
        for a user name)."""
        with open(self.users, "w") as f:
            pw = ENV.password(USER)
            f.write(f"{USER};{pw};{USER};{pw};\n")
            f.write("ivan;;ivan;ivan-pw;x\n")
            f.write("judy;judy-pw;judy;judy-pw;extra\n")
        os.chmod(self.users, 0o600)
        cmd = [SYNC, "--daemon", "--redis", f"{fh.HOST}:{self.redis.port}",
               "--users", self.users, "--poll", "1", "--lease", "6", "--tmpdir", WORKDIR,
               "--fullcheck", "2",
               "--host1", fh.HOST, "--port1", str(ENV.port("src", "imap")),
               "--sslargs1", "SSL_ca_file=" + str(ENV.ca_file),
               "--host2", fh.HOST, "--port2", str(ENV.port("dst", "imap")),
               "--sslargs2", "SSL_ca_file=" + str(ENV.ca_file)]
        type(self).daemon_log = open(os.path.join(WORKDIR, "daemon.log"), "ab")
        type(self).daemon = subprocess.Popen(cmd, stdout=self.daemon_log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        # the daily full check, here every 2 s: state forgotten, every folder identified
        self.wait_for("a full check", lambda: "(full check) started" in self.log(), 15)
        fh.deliver(ENV, USER, message(3, "batchform"))
        self.wait_for("LMTP delivery synced with the user's own login",
                      lambda: self.dst_has("INBOX", "<batchform-3@example.org>"), 20)
        self.assertEqual(0, self.stop_daemon(signal.SIGTERM), self.log())
        self.assertNotIn(ENV.password(USER), self.log())
        with open(os.path.join(WORKDIR, "daemon.log"), errors="replace") as f:
            whole = f.read()
        for lineno, user in ((2, "ivan"), (3, "judy")):
            self.assertIn(f"{self.users}:{lineno}: want user1;password1;user2;password2, "
                          "line ignored", whole)
            self.assertNotIn(f"sync {user} ", whole)
            self.assertEqual("", self.redis.cli("ZSCORE", f"rep:{{{fh.shard(user)}}}:poll",
                                                user))
        self.wait_identical(5)  # the full check's passes duplicated nothing
        # what imapferryctl status shows: the last sync and the last full check
        last = f"rep:{{{fh.shard(USER)}}}:last:{USER}"
        self.assertEqual(self.redis.cli("HGET", last, "ok_by"), "daemon")
        self.assertRegex(self.redis.cli("HGET", last, "full_ms"), r"^\d{13}$")


if __name__ == "__main__":
    unittest.main(verbosity=2)
