#!/usr/bin/env python3
"""imapferry-proxy in front of the harness's source Dovecot (issue 5).

Real clients (Python's imaplib, raw sockets, mbsync) talk to the source
through the proxy; each case checks the Redis marks the proxy wrote and
that what the client got equals a direct connection. Also the protocol
edges: a refused synchronising literal, a message body with IMAP-looking
lines, STARTTLS injection, an oversized line, a client gone mid-literal,
COMPRESS, pre-login ID, half-close, a wrong password, plaintext login
refused, /metrics and /healthz, and Redis stopped and restarted
mid-session (on a private redis-server).

Uses user erin only (wiped before each test). Needs FERRY_ENV_DIR (the
ctest fixture) and FERRY_PROXY (the binary).
"""

import atexit
import base64
import hashlib
import imaplib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

import ferry_harness as fh

USER = "erin"
ENV = fh.Env.load()
PROXY = os.environ["FERRY_PROXY"]
PASS = ENV.password(USER)
WORKDIR = tempfile.mkdtemp(prefix="ferry-proxy-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
MARK_WAIT = 3.0  # seconds for a mark to reach Redis (normally milliseconds)
imaplib.Commands.setdefault("MOVE", ("SELECTED",))  # RFC 6851; imaplib lacks it


# --- a tiny RESP client -------------------------------------------------------


class Redis:
    def __init__(self, port):
        self.sock = socket.create_connection((fh.HOST, port), timeout=5)
        self.rf = self.sock.makefile("rb")

    def close(self):
        self.rf.close()
        self.sock.close()

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self):
        line = self.rf.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rf.read(n + 2)[:-2]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError(f"bad RESP line {line!r}")


def due_keys(r):
    return [k for k in r.cmd("KEYS", "rep:*:due")]


def marks(r, user=USER):
    """{folder: due score} of user's marks in every shard's due set."""
    out = {}
    for key in due_keys(r):
        items = r.cmd("ZRANGE", key, 0, -1, "WITHSCORES")
        for member, score in zip(items[::2], items[1::2]):
            u, _, folder = member.decode().partition("\t")
            if u == user:
                out[folder] = int(float(score))
    return out


def hints(r, user=USER):
    out = []
    for key in r.cmd("KEYS", f"rep:*:hint:{user}"):
        out += [h.decode() for h in r.cmd("LRANGE", key, 0, -1)]
    return out


def clear_marks(r, user=USER):
    for key in due_keys(r):
        items = r.cmd("ZRANGE", key, 0, -1)
        mine = [m for m in items if m.decode().startswith(user + "\t")]
        if mine:
            r.cmd("ZREM", key, *mine)
    for key in r.cmd("KEYS", f"rep:*:hint:{user}"):
        r.cmd("DEL", key)


def wait_marks(r, want, timeout=MARK_WAIT):
    """Waits until every folder in want is marked; returns the marks."""
    deadline = time.monotonic() + timeout
    while True:
        got = marks(r)
        if set(want) <= set(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


# --- raw IMAP over a socket --------------------------------------------------


class Raw:
    """A line-oriented IMAP connection for the cases imaplib cannot do."""

    def __init__(self, port, tls=False, timeout=10):
        self.sock = socket.create_connection((fh.HOST, port), timeout=timeout)
        if tls:
            self.sock = ENV.ssl_context().wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""
        self.greeting = self.line()

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; buffered {self.buf[:200]!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def read_exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def until_tagged(self, tag):
        """Every byte up to and including the tagged line of tag (literals
        included); returns (all bytes, tagged line)."""
        out = b""
        while True:
            line = self.line()
            out += line
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if m:
                out += self.read_exact(int(m.group(1)))
                continue
            if line.startswith(tag.encode() + b" "):
                return out, line

    def cmd(self, tag, text):
        self.send(f"{tag} {text}\r\n")
        return self.until_tagged(tag)

    def login(self):
        _, line = self.cmd("L", f"LOGIN {USER} {PASS}")
        assert line.startswith(b"L OK"), line
        return line

    def read_all(self):
        out = self.buf
        self.buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            out += chunk
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def fetch_all(imap, folder):
    """[(uid, flags, sha256 of BODY[])] of a folder, read-only."""
    fh.imap_check(imap.select(fh.mailbox_arg(folder), readonly=True), f"EXAMINE {folder}")
    typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
    out = []
    for m in fh.parse_fetch_response(data if typ == "OK" else []):
        if m["body"] is not None:
            out.append((m["uid"], tuple(sorted(m["flags"] or ())),
                        hashlib.sha256(m["body"]).hexdigest()))
    imap.unselect()
    return sorted(out)


def fetch_bodies(imap, folder):
    """The BODY[] of every message of a folder, read-only."""
    fh.imap_check(imap.select(fh.mailbox_arg(folder), readonly=True), f"EXAMINE {folder}")
    typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
    bodies = [m["body"] for m in fh.parse_fetch_response(data if typ == "OK" else [])
              if m["body"] is not None]
    imap.unselect()
    return bodies


def message(i, extra=""):
    return (f"From: sender@example.net\r\nTo: {USER}@example.org\r\n"
            f"Subject: proxy test {i}\r\nMessage-Id: <proxy-{i}-{time.time_ns()}@example.net>\r\n"
            f"Date: Mon, 6 Jan 2025 10:00:00 +0000\r\n\r\nBody {i}.\r\n{extra}").encode()


class ProxyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.px = fh.start_proxy(ENV, PROXY, ["--allow-plaintext-login"], log_dir=WORKDIR)
        cls.redis = Redis(ENV.redis_port)

    @classmethod
    def tearDownClass(cls):
        cls.redis.close()
        rc = cls.px.stop()
        if rc != 0:
            print(cls.px.log_text()[-3000:])
        assert rc == 0, f"proxy exit status {rc} after SIGTERM"

    def setUp(self):
        fh.wipe(ENV, "src", USER)
        clear_marks(self.redis)

    def proxied(self):
        imap = imaplib.IMAP4(fh.HOST, self.px.port, timeout=30)
        imap.login(USER, PASS)
        return imap

    def direct(self):
        return ENV.imap("src", USER)

    def assert_same_as_direct(self, folders):
        p, d = self.proxied(), self.direct()
        try:
            for f in folders:
                self.assertEqual(fetch_all(p, f), fetch_all(d, f), f)
        finally:
            p.logout()
            d.logout()

    def assert_marked(self, folders):
        got = wait_marks(self.redis, folders)
        for f in folders:
            self.assertIn(f, got, f"no mark for {f}; marks {got}; log:\n"
                          + self.px.log_text()[-2000:])
        return got

    # --- relay and marks ---

    def test_append_sync_literal(self):
        imap = self.proxied()
        try:
            # imaplib sends APPEND's message as a synchronising literal.
            fh.imap_check(imap.append("INBOX", "(\\Flagged)", None, message(1)), "APPEND")
        finally:
            imap.logout()
        got = self.assert_marked(["INBOX"])
        self.assertEqual(set(got), {"INBOX"})
        self.assert_same_as_direct(["INBOX"])

    def test_big_literal_both_ways(self):
        # 5 MiB through the proxy in both directions, streamed (backpressure).
        line = b"".join(b"%07d " % i + b"x" * 70 + b"\r\n" for i in range(5 * 1024 * 1024 // 80))
        body = message(5, line.decode())
        imap = self.proxied()
        try:
            fh.imap_check(imap.append("INBOX", None, None, body), "APPEND 5 MiB")
            imap.select("INBOX", readonly=True)
            typ, data = imap.fetch("1", "(BODY.PEEK[])")
            self.assertEqual(typ, "OK")
            self.assertTrue(data[0][1] == body, "the 5 MiB body came back different")
        finally:
            imap.logout()
        self.assert_marked(["INBOX"])
        self.assert_same_as_direct(["INBOX"])

    def test_append_literal_plus(self):
        raw = Raw(self.px.port)
        try:
            raw.login()
            body = message(2)
            raw.send(b"A APPEND INBOX {%d+}\r\n%s\r\n" % (len(body), body))
            _, line = raw.until_tagged("A")
            self.assertTrue(line.startswith(b"A OK"), line)
            raw.cmd("Z", "LOGOUT")
        finally:
            raw.close()
        self.assert_marked(["INBOX"])
        d = self.direct()
        try:
            d.select("INBOX")
            typ, data = d.fetch("1", "(BODY.PEEK[])")
            self.assertEqual(data[0][1], body)
        finally:
            d.logout()

    def test_copy_move_store_expunge(self):
        d = self.direct()
        d.create("Work")
        for i in range(3):
            d.append("INBOX", None, None, message(i))
        d.logout()
        clear_marks(self.redis)
        imap = self.proxied()
        try:
            imap.select("INBOX")
            fh.imap_check(imap.copy("1", "Work"), "COPY")
            self.assert_marked(["Work"])
            clear_marks(self.redis)
            fh.imap_check(imap._simple_command("MOVE", "2", "Work"), "MOVE")
            self.assert_marked(["INBOX", "Work"])
            deadline = time.monotonic() + MARK_WAIT
            while not any(h.startswith("move\t") for h in hints(self.redis)):
                self.assertLess(time.monotonic(), deadline, f"no move hint: {hints(self.redis)}")
                time.sleep(0.02)
            clear_marks(self.redis)
            fh.imap_check(imap.store("1", "+FLAGS", "(\\Deleted)"), "STORE")
            self.assert_marked(["INBOX"])
            clear_marks(self.redis)
            fh.imap_check(imap.expunge(), "EXPUNGE")
            self.assert_marked(["INBOX"])
        finally:
            imap.logout()
        self.assert_same_as_direct(["INBOX", "Work"])

    def test_create_rename(self):
        imap = self.proxied()
        try:
            fh.imap_check(imap.create("Projects"), "CREATE")
            self.assert_marked(["*"])
            clear_marks(self.redis)
            fh.imap_check(imap.rename("Projects", "Archive2"), "RENAME")
            self.assert_marked(["*"])
            deadline = time.monotonic() + MARK_WAIT
            while "rename\tProjects\tArchive2" not in hints(self.redis):
                self.assertLess(time.monotonic(), deadline, f"hints {hints(self.redis)}")
                time.sleep(0.02)
        finally:
            imap.logout()
        d = self.direct()
        try:
            self.assertIn("Archive2", fh.list_folders(d))
            self.assertNotIn("Projects", fh.list_folders(d))
        finally:
            d.logout()

    def test_idle_sees_delivery(self):
        raw = Raw(self.px.port)
        try:
            raw.login()
            raw.cmd("S", "SELECT INBOX")
            clear_marks(self.redis)
            raw.send("I IDLE\r\n")
            self.assertTrue(raw.line().startswith(b"+"))
            fh.deliver(ENV, USER, message(7))
            t0 = time.monotonic()
            while True:
                line = raw.line()
                if re.match(rb"\* 1 EXISTS", line):
                    break
            self.assertLess(time.monotonic() - t0, 5)
            self.assert_marked(["INBOX"])
            raw.send("DONE\r\n")
            _, line = raw.until_tagged("I")
            self.assertTrue(line.startswith(b"I OK"), line)
            _, line = raw.cmd("N", "NOOP")  # commands work again after DONE
            self.assertTrue(line.startswith(b"N OK"), line)
        finally:
            raw.close()

    def test_mbsync_whole_account(self):
        fh.populate(ENV, "src", USER, "small", seed=5)
        clear_marks(self.redis)
        home = Path(WORKDIR) / "mbsync"
        shutil.rmtree(home, ignore_errors=True)
        (home / "mail").mkdir(parents=True)
        rc = home / "mbsyncrc"
        rc.write_text(
            f"IMAPAccount proxy\nHost localhost\nPort {self.px.port}\nUser {USER}\n"
            f"Pass {PASS}\nSSLType STARTTLS\nCertificateFile {ENV.ca_file}\n\n"
            f"IMAPStore remote\nAccount proxy\n\n"
            f"MaildirStore local\nPath {home}/mail/\nInbox {home}/mail/INBOX\nSubFolders Verbatim\n\n"
            f"Channel all\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\nSync All\n"
            f"SyncState *\n")
        p = subprocess.run(["mbsync", "-c", str(rc), "-a", "--pull"], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # Byte-identical: every message body in the Maildir equals the source's.
        d = self.direct()
        try:
            sep = fh.hierarchy_separator(d)
            for name in fh.list_folders(d):
                # mbsync stores Maildir files with LF line ends.
                want = sorted(hashlib.sha256(b.replace(b"\r\n", b"\n")).hexdigest()
                              for b in fetch_bodies(d, name))
                local = home / "mail" / ("INBOX" if name == "INBOX"
                                         else fh.mutf7_encode(name).replace(sep, "/"))
                files = [f for sub in ("cur", "new") for f in (local / sub).glob("*")] \
                    if local.exists() else []
                # ... and adds an X-TUID header of its own.
                got = sorted(hashlib.sha256(re.sub(rb"(?m)^X-TUID: .*\n", b"", f.read_bytes(),
                                                   count=1)).hexdigest() for f in files)
                self.assertEqual(got, want, name)
        finally:
            d.logout()
        # A pull reads with BODY.PEEK: nothing may be marked dirty.
        time.sleep(0.2)
        self.assertEqual(marks(self.redis), {})
        # Push a flag change in INBOX and a new message in Sent: both marked,
        # and the source then equals a direct view of the same account.
        cur = [f for f in sorted((home / "mail" / "INBOX" / "cur").glob("*:2,*"))
               if "F" not in f.name.rsplit(":2,", 1)[1]][0]
        msgid = re.search(rb"(?mi)^Message-ID: *(<[^>]+>)", cur.read_bytes()).group(1)
        base, flags = str(cur).rsplit(":2,", 1)
        cur.rename(base + ":2," + "".join(sorted(set(flags + "F"))))
        new = home / "mail" / "Sent" / "new" / f"{int(time.time())}.proxytest.localhost"
        new.write_bytes(message(20).replace(b"\r\n", b"\n"))
        p = subprocess.run(["mbsync", "-c", str(rc), "-a", "--push"], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assert_marked(["INBOX", "Sent"])
        d = self.direct()
        try:
            d.select("INBOX", readonly=True)
            self.assertTrue(d.search(None, "FLAGGED", "HEADER", "Message-ID",
                                     '"%s"' % msgid.decode())[1][0])
            d.select("Sent", readonly=True)
            self.assertTrue(d.search(None, "SUBJECT", '"proxy test 20"')[1][0])
        finally:
            d.logout()

    # --- protocol edges ---

    def test_rejected_sync_literal(self):
        raw = Raw(self.px.port)
        try:
            raw.login()
            body = b"c CREATE Evil\r\n"
            raw.send(b"a APPEND NoSuchFolder {%d}\r\n" % len(body))
            _, line = raw.until_tagged("a")
            self.assertIn(b"[TRYCREATE]", line)
            clear_marks(self.redis)
            # The client does not send the literal: what follows is a
            # command, and the proxy must see it as one (tree mark).
            raw.send(body)
            _, line = raw.until_tagged("c")
            self.assertTrue(line.startswith(b"c OK"), line)
            self.assert_marked(["*"])
        finally:
            raw.close()

    def test_body_with_imap_lines(self):
        evil = "* 3 EXPUNGE\r\na1 OK FETCH completed.\r\n* 9 EXISTS\r\n* BYE fake\r\n"
        body = message(3, evil)
        d = self.direct()
        d.append("INBOX", None, None, body)
        d.logout()
        clear_marks(self.redis)
        raw = Raw(self.px.port)
        try:
            raw.login()
            raw.cmd("s", "EXAMINE INBOX")
            data, line = raw.cmd("a1", "FETCH 1 (BODY.PEEK[])")
            self.assertTrue(line.startswith(b"a1 OK"), line)
            self.assertIn(b"{%d}\r\n%s)" % (len(body), body), data)
            _, line = raw.cmd("a2", "NOOP")
            self.assertTrue(line.startswith(b"a2 OK"), line)
        finally:
            raw.close()
        time.sleep(0.2)
        self.assertEqual(marks(self.redis), {})

    def test_starttls_injection(self):
        raw = Raw(self.px.port)
        try:
            raw.send("a STARTTLS\r\nb CAPABILITY\r\n")
            self.assertTrue(raw.line().startswith(b"a OK"))
            self.assertEqual(raw.buf, b"")
            raw.sock = ENV.ssl_context().wrap_socket(raw.sock, server_hostname="localhost")
            raw.send("c CAPABILITY\r\n")
            data, line = raw.until_tagged("c")
            self.assertNotIn(b"\r\nb ", b"\r\n" + data)
            self.assertNotIn(b"STARTTLS", data)
            self.assertIn(b"AUTH=PLAIN", data)
        finally:
            raw.close()

    def test_oversized_line(self):
        other = self.proxied()
        raw = Raw(self.px.port)
        try:
            raw.login()
            raw.send(b"x NOOP " + b"a" * (100 << 10) + b"\r\n")
            rest = raw.read_all()
            self.assertIn(b"* BYE", rest)
            self.assertIn(b"too long", rest.lower())
        finally:
            raw.close()
        try:
            self.assertEqual(other.noop()[0], "OK")
        finally:
            other.logout()

    def test_disconnect_mid_literal(self):
        raw = Raw(self.px.port)
        try:
            raw.login()
            raw.send("a APPEND INBOX {1000}\r\n")
            self.assertTrue(raw.line().startswith(b"+"))
            raw.send(b"x" * 500)
        finally:
            raw.close()
        time.sleep(0.2)
        d = self.direct()
        try:
            self.assertEqual(d.select("INBOX")[1][0], b"0")
        finally:
            d.logout()
        imap = self.proxied()  # the proxy still serves
        imap.logout()

    def test_compress_refused(self):
        raw = Raw(self.px.port)
        try:
            line = raw.login()
            self.assertNotIn(b"COMPRESS", line)
            self.assertNotIn(b"AUTH=", line)
            _, line = raw.cmd("c", "COMPRESS DEFLATE")
            self.assertTrue(line.startswith(b"c NO [CANNOT]"), line)
            _, line = raw.cmd("d", "NOOP")  # still plain text
            self.assertTrue(line.startswith(b"d OK"), line)
            _, line = raw.cmd("e", "STARTTLS")
            self.assertTrue(line.startswith(b"e BAD"), line)
        finally:
            raw.close()

    def test_preauth_id_capability_noop(self):
        raw = Raw(self.px.port)
        try:
            self.assertIn(b"STARTTLS", raw.greeting)
            data, line = raw.cmd("a", 'ID ("name" "test")')
            self.assertTrue(line.startswith(b"a OK"), line)
            self.assertIn(b"* ID (", data)
            _, line = raw.cmd("b", "NOOP")
            self.assertTrue(line.startswith(b"b OK"))
            data, line = raw.cmd("c", "LOGOUT")
            self.assertIn(b"* BYE", data)
        finally:
            raw.close()

    def test_half_close_pipelined(self):
        d = self.direct()
        d.append("INBOX", None, None, message(4))
        d.logout()
        raw = Raw(self.px.port)
        try:
            raw.login()
            raw.send("a SELECT INBOX\r\nb NOOP\r\nc FETCH 1:* (FLAGS)\r\nd STATUS INBOX (MESSAGES)\r\n")
            raw.sock.shutdown(socket.SHUT_WR)
            out = raw.read_all()
        finally:
            raw.close()
        for tag in b"abcd":
            self.assertRegex(out, rb"(?m)^%c OK" % tag)

    def test_wrong_password(self):
        raw = Raw(self.px.port)
        try:
            _, line = raw.cmd("a", f"LOGIN {USER} wrong-password")
            self.assertTrue(line.startswith(b"a NO [AUTHENTICATIONFAILED]"), line)
            raw.login()  # and the session can try again
        finally:
            raw.close()
        self.assertNotIn("wrong-password", self.px.log_text())
        self.assertNotIn(PASS, self.px.log_text())

    def test_authenticate_plain_and_login(self):
        imap = imaplib.IMAP4(fh.HOST, self.px.port, timeout=30)
        imap.authenticate("PLAIN", lambda _c: f"\0{USER}\0{PASS}".encode())
        self.assertEqual(imap.noop()[0], "OK")
        imap.logout()
        raw = Raw(self.px.port)
        try:
            raw.send("a AUTHENTICATE LOGIN\r\n")
            self.assertTrue(raw.line().startswith(b"+ "))
            raw.send(base64.b64encode(USER.encode()) + b"\r\n")
            self.assertTrue(raw.line().startswith(b"+ "))
            raw.send(base64.b64encode(PASS.encode()) + b"\r\n")
            _, line = raw.until_tagged("a")
            self.assertTrue(line.startswith(b"a OK [CAPABILITY"), line)
        finally:
            raw.close()

    def test_metrics_and_healthz(self):
        base = f"http://{fh.HOST}:{self.px.http_port}"
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            self.assertEqual(r.status, 200)
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            text = r.read().decode()
        for name in ("imapferry_proxy_connections_total", "imapferry_proxy_bytes_total",
                     "imapferry_proxy_commands_total", "imapferry_proxy_marks_total",
                     "imapferry_proxy_redis_errors_total", "imapferry_proxy_redis_backlog",
                     "imapferry_proxy_redis_connected"):
            self.assertRegex(text, rf"(?m)^{name}(\{{[^}}]*\}})? \d+$")
        self.assertRegex(text, r"(?m)^imapferry_proxy_redis_connected 1$")


class PlaintextRefusedTest(unittest.TestCase):
    def test_login_needs_tls(self):
        px = fh.start_proxy(ENV, PROXY, log_dir=WORKDIR)
        try:
            raw = Raw(px.port)
            try:
                self.assertIn(b"LOGINDISABLED", raw.greeting)
                self.assertNotIn(b"AUTH=", raw.greeting)
                _, line = raw.cmd("a", f"LOGIN {USER} {PASS}")
                self.assertTrue(line.startswith(b"a NO [PRIVACYREQUIRED]"), line)
                _, line = raw.cmd("b", "STARTTLS")
                self.assertTrue(line.startswith(b"b OK"), line)
                raw.sock = ENV.ssl_context().wrap_socket(raw.sock, server_hostname="localhost")
                raw.login()
            finally:
                raw.close()
            imap = imaplib.IMAP4_SSL(fh.HOST, px.tls_port, ssl_context=ENV.ssl_context())
            imap.login(USER, PASS)
            imap.logout()
        finally:
            self.assertEqual(px.stop(), 0)


class PlainUpstreamWarningTest(unittest.TestCase):
    """The default upstream is plain TCP: a warning at start for an upstream
    that is not on this host (the clients' passwords would cross the link
    in clear), none for a loopback one or with TLS."""

    def start_log(self, dst, security):
        """The log of a proxy started with --upstream-dst dst, then stopped."""
        px = fh.start_proxy(ENV, PROXY, ["--upstream-dst", dst], upstream_security=security,
                            log_dir=WORKDIR)
        try:
            return px.log_text()
        finally:
            self.assertEqual(px.stop(), 0)

    def test_warning(self):
        log = self.start_log("192.0.2.1:143", "plain")
        self.assertIn("--upstream-dst 192.0.2.1 is plain TCP: the clients' passwords cross "
                      "that link in clear", log)
        self.assertNotIn("--upstream 127.0.0.1 is plain TCP", log)
        log = self.start_log("192.0.2.1:993", "ssl")
        self.assertNotIn("is plain TCP", log)


class ConfigFileTest(unittest.TestCase):
    """Settings from --config, a flag overriding one, implicit TLS to the
    upstream, the idle timeout, SIGHUP (certificate reload) and a bad key."""

    def test_config_file(self):
        conf = Path(WORKDIR) / "proxy.conf"
        conf.write_text("# test\n[proxy]\nallow-plaintext-login = yes\nidle-timeout = 30\n"
                        "max-literal = 1k\n")
        px = fh.start_proxy(ENV, PROXY, ["--config", str(conf), "--idle-timeout", "1"],
                            upstream_security="ssl", log_dir=WORKDIR)
        try:
            raw = Raw(px.port)
            try:
                raw.login()  # plaintext allowed by the file
                raw.cmd("s", "SELECT INBOX")
                raw.send("a APPEND INBOX {2000}\r\n")  # over the file's 1k limit
                rest = raw.read_all()
                self.assertIn(b"* BYE [TOOBIG]", rest)
            finally:
                raw.close()
            raw = Raw(px.port)
            try:
                raw.login()
                t0 = time.monotonic()
                rest = raw.read_all()  # the flag's 1 s, not the file's 30 s
                self.assertIn(b"* BYE Disconnected for inactivity", rest)
                self.assertLess(time.monotonic() - t0, 5)
            finally:
                raw.close()
            px.proc.send_signal(fh.signal.SIGHUP)
            deadline = time.monotonic() + 5
            while "certificate reloaded" not in px.log_text():
                self.assertLess(time.monotonic(), deadline, px.log_text())
                time.sleep(0.02)
            imap = imaplib.IMAP4_SSL(fh.HOST, px.tls_port, ssl_context=ENV.ssl_context())
            imap.login(USER, PASS)
            imap.logout()
        finally:
            self.assertEqual(px.stop(), 0)
        conf.write_text("[proxy]\nno-such-key = 1\n")
        p = subprocess.run([PROXY, "--config", str(conf), "--upstream", "127.0.0.1:1",
                            "--listen", "127.0.0.1:1"], capture_output=True, text=True,
                           timeout=10)
        self.assertEqual(p.returncode, 64)
        self.assertIn(f"{conf}:2: unknown setting \"no-such-key\"", p.stderr)


class RedisRestartTest(unittest.TestCase):
    """Marks made while Redis is down reach it once it is back."""

    def start_redis(self, port):
        d = Path(WORKDIR) / "redis"
        d.mkdir(exist_ok=True)
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", fh.HOST,
                                 "--save", "", "--appendonly", "no", "--dir", str(d)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                r = Redis(port)
                r.cmd("PING")
                return proc, r
            except OSError:
                self.assertLess(time.monotonic(), deadline, "redis-server did not start")
                time.sleep(0.05)

    def test_redis_down_and_back(self):
        fh.wipe(ENV, "src", USER)
        port = fh._free_ports(1)[0]
        rproc, r = self.start_redis(port)
        px = None
        try:
            px = fh.start_proxy(ENV, PROXY, ["--allow-plaintext-login"], redis_port=port,
                                log_dir=WORKDIR)
            imap = imaplib.IMAP4(fh.HOST, px.port, timeout=30)
            imap.login(USER, PASS)
            imap.select("INBOX")
            imap.append("INBOX", None, None, message(10))
            self.assertIn("INBOX", wait_marks(r, ["INBOX"]))
            r.close()
            rproc.terminate()
            rproc.wait(10)
            # Redis is gone: mail goes on.
            fh.imap_check(imap.create("WhileDown"), "CREATE")
            fh.imap_check(imap.append("WhileDown", None, None, message(11)), "APPEND")
            self.assertEqual(imap.noop()[0], "OK")
            rproc, r = self.start_redis(port)
            got = wait_marks(r, ["WhileDown", "*"], timeout=10)
            self.assertIn("WhileDown", got, px.log_text()[-2000:])
            self.assertIn("*", got)
            imap.logout()
        finally:
            if px is not None:
                self.assertEqual(px.stop(), 0)
            r.close()
            rproc.terminate()
            rproc.wait(10)


if __name__ == "__main__":
    unittest.main(verbosity=2)
