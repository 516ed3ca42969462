#!/usr/bin/env python3
"""imapferryctl serve: the status page (issue 7), in a real headless Chromium.

A redis-server of this test's own holds hand-written route, poll, queue and
sync-state keys (no IMAP server is involved). imapferryctl serve listens on a
free port; Chromium (Debian's chromium) loads the page and is driven over the
DevTools protocol on a pipe (--remote-debugging-pipe), so one page stays open
while the test changes routes with imapferryctl and watches the rows change.

Covers: the HTTP endpoints (/, /api/status = "status --json", /api/samples,
/healthz, 404, no method but GET/HEAD, the CSP header, no external asset);
the table filled from live data, totals and the throughput chart; a user
name with HTML in it shown as text, never as markup; route changes (freeze,
then dst) visible in the open page; Redis going away shown on the page and
in /healthz.

Needs FERRY_CTL; skipped (with the reason) when chromium is not installed.
"""

import atexit
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from private_redis import PrivateRedis

HOST = "127.0.0.1"
CTL = os.environ["FERRY_CTL"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WORKDIR = tempfile.mkdtemp(prefix="ferry-statuspage-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)
EVIL = "<b>x&y</b>'; rm"   # a user name that must stay text
# direct connections only: an http_proxy in the environment must not see these
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))





def shard(user):
    """rk_shard(): CRC16-XMODEM(user) % 16."""
    crc = 0
    for b in user.encode():
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc % 16


class Chromium:
    """A headless Chromium driven over the DevTools protocol on a pipe
    (fd 3: commands to Chromium, fd 4: its answers; messages end in NUL)."""

    def __init__(self, url):
        to_chr_r, self.to_chr = os.pipe()
        self.from_chr, from_chr_w = os.pipe()

        def child_fds():
            a = fcntl.fcntl(to_chr_r, fcntl.F_DUPFD, 100)
            b = fcntl.fcntl(from_chr_w, fcntl.F_DUPFD, 100)
            os.dup2(a, 3)
            os.dup2(b, 4)
        self.log = open(os.path.join(WORKDIR, "chromium.log"), "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-proxy-server",
             "--no-first-run", "--disable-extensions", "--disable-background-networking",
             f"--user-data-dir={os.path.join(WORKDIR, 'chromium')}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            pass_fds=(3, 4), preexec_fn=child_fds, start_new_session=True)
        os.close(to_chr_r)
        os.close(from_chr_w)
        self.buf = b""
        self.next_id = 0
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"],
                                 flatten=True)["sessionId"]
        self.call("Page.navigate", session=True, url=url)

    def call(self, method, session=False, timeout=30, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self.to_chr, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buf:
                raw, self.buf = self.buf.split(b"\0", 1)
                ans = json.loads(raw)
                if ans.get("id") == self.next_id:
                    if "error" in ans:
                        raise RuntimeError(f"{method}: {ans['error']}")
                    return ans["result"]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{method}: no answer from chromium in {timeout} s")
            chunk = os.read(self.from_chr, 65536)
            if not chunk:
                raise RuntimeError(f"{method}: chromium closed the pipe")
            self.buf += chunk

    def js(self, expr):
        """The value of a JavaScript expression in the page."""
        r = self.call("Runtime.evaluate", session=True, expression=expr, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def stop(self):
        try:
            os.write(self.to_chr, json.dumps({"id": 0, "method": "Browser.close"}).encode()
                     + b"\0")
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.to_chr)
        os.close(self.from_chr)
        self.log.close()


ROWS_JS = """JSON.stringify(Array.from(document.querySelectorAll('#rows tr')).map(function (tr) {
  return {user: tr.querySelector('.user').textContent, route: tr.dataset.route,
          lag: tr.querySelector('.lag').textContent, due: tr.querySelector('.due').textContent,
          inflight: tr.querySelector('.inflight').textContent,
          m1: tr.querySelector('.m1').textContent, m2: tr.querySelector('.m2').textContent,
          cmd: tr.querySelector('.cmd').textContent,
          lastsync: tr.querySelector('.lastsync').textContent,
          lasterror: tr.querySelector('.lasterror').textContent,
          errclass: tr.querySelector('.lasterror').classList.contains('err'),
          html: tr.querySelector('.user').innerHTML}; }))"""


class StatusPage(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.redis = PrivateRedis(WORKDIR)
        r = cls.redis.cli
        now = int(time.time() * 1000)
        # alice: on the source, synced (2 folders), one due item 5 s old, one in flight
        r("HSET", "rep:route:alice", "state", "SRC", "epoch", "1", "changed_ms", str(now))
        s = shard("alice")
        r("ZADD", f"rep:{{{s}}}:poll", str(now + 60000), "alice")
        r("ZADD", f"rep:{{{s}}}:due", str(now - 5000), "alice\tINBOX")
        r("ZADD", f"rep:{{{s}}}:inflight", str(now + 30000), "alice\tSent")
        r("HSET", f"rep:{{{s}}}:st:alice", "INBOX", "F INBOX INBOX 1 11 10 0 7 11 10 0",
          "Sent", "F Sent Sent 1 6 5 0 7 4 3 0")
        # alice's last sync 90 s ago, an older error since cured
        r("HSET", f"rep:{{{s}}}:last:alice", "ok_ms", str(now - 90000), "ok_by", "daemon",
          "err_ms", str(now - 600000), "err_by", "daemon", "err", "old news")
        # bob: in the poll schedule only, and its last sync failed;
        # EVIL: on the destination
        r("ZADD", f"rep:{{{shard('bob')}}}:poll", str(now + 1000), "bob")
        r("HSET", f"rep:{{{shard('bob')}}}:last:bob", "ok_ms", str(now - 7200000), "ok_by",
          "final-delta", "err_ms", str(now - 30000), "err_by", "final-delta",
          "err", "<i>folder counts differ</i>")
        r("HSET", f"rep:route:{EVIL}", "state", "DST", "epoch", "4")
        cls.serve = subprocess.Popen(
            [CTL, "--redis", f"{HOST}:{cls.redis.port}", "serve", "--http", f"{HOST}:0",
             "--sample", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = cls.serve.stdout.readline()
        m = re.search(r"http://[\d.]+:(\d+)/", line)
        if m is None:
            cls.serve.kill()
            raise RuntimeError(f"imapferryctl serve: {line}{cls.serve.stderr.read()}")
        cls.base = f"http://{HOST}:{m.group(1)}/"
        cls.browser = None

    @classmethod
    def tearDownClass(cls):
        if cls.browser is not None:
            cls.browser.stop()
        cls.serve.send_signal(signal.SIGTERM)
        try:
            cls.serve.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cls.serve.kill()
            cls.serve.wait()
        cls.serve.stdout.close()
        cls.serve.stderr.close()
        cls.redis.stop()

    def get(self, path, method="GET"):
        req = urllib.request.Request(self.base + path, method=method)
        try:
            with OPENER.open(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def ctl(self, *args):
        p = subprocess.run([CTL, "--redis", f"{HOST}:{self.redis.port}", *args],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p.stdout

    def page(self):
        if self.browser is None:
            type(self).browser = Chromium(self.base)
        return self.browser

    def wait_rows(self, what, check, timeout=15):
        deadline = time.monotonic() + timeout
        rows = None
        while time.monotonic() < deadline:
            raw = self.page().js(ROWS_JS)
            rows = {r["user"]: r for r in json.loads(raw)} if raw else {}
            if check(rows):
                return rows
            time.sleep(0.2)
        self.fail(f"{what}: not on the page within {timeout} s: {rows}")

    def test_1_http_endpoints(self):
        code, hdr, body = self.get("")
        self.assertEqual(code, 200)
        self.assertTrue(hdr["Content-Type"].startswith("text/html"))
        self.assertIn("default-src 'none'", hdr["Content-Security-Policy"])
        self.assertIn("<script>", body)
        # self-contained: no src=, href=, url(), @import anywhere
        self.assertIsNone(re.search(r"\b(src|href)\s*=|url\(|@import", body))
        code, hdr, body = self.get("api/status")
        self.assertEqual(code, 200)
        doc = json.loads(body)
        cli = json.loads(self.ctl("status", "--json"))
        strip = lambda us: [{k: v for k, v in u.items() if k != "oldest_due_age_ms"}
                            for u in us]
        self.assertEqual(strip(doc["users"]), strip(cli["users"]))
        self.assertEqual(doc["totals"], cli["totals"])
        self.assertEqual([u["user"] for u in doc["users"]], [EVIL, "alice", "bob"])
        by = {u["user"]: u for u in doc["users"]}
        self.assertEqual((by["alice"]["last_sync_by"], by["alice"]["error_current"],
                          by["alice"]["last_error"]), ("daemon", False, "old news"))
        self.assertEqual((by["bob"]["last_error_by"], by["bob"]["error_current"]),
                         ("final-delta", True))
        self.assertEqual((by[EVIL]["last_sync_ms"], by[EVIL]["last_error"]), (-1, ""))
        # and in the table of "status"
        out = self.ctl("status")
        self.assertRegex(out, r"(?m)^bob\s.*\s2\.0h final-delta: <i>folder counts differ</i>$")
        self.assertRegex(out, r"(?m)^alice\s.*\s9\ds -$")
        code, _, body = self.get("api/samples")
        self.assertEqual(code, 200)
        s = json.loads(body)
        self.assertEqual(s["redis"], f"{HOST}:{self.redis.port}")
        self.assertGreaterEqual(len(s["samples"]), 1)
        self.assertEqual(s["samples"][-1][1:], [1, 1, 15, 13])
        code, _, body = self.get("healthz")
        self.assertEqual((code, body), (200, "ok\n"))
        self.assertEqual(self.get("nothing/here")[0], 404)
        self.assertIn(self.get("", method="POST")[0], (405, 501))
        self.assertEqual(self.get("", method="HEAD")[0], 200)

    @unittest.skipIf(CHROMIUM is None, "chromium is not installed (apt-get install chromium)")
    def test_2_page_shows_live_data(self):
        rows = self.wait_rows("three users", lambda rows: len(rows) == 3)
        a = rows["alice"]
        self.assertEqual((a["route"], a["due"], a["inflight"], a["m1"], a["m2"]),
                         ("SRC", "1", "1", "15", "13"))
        self.assertRegex(a["lag"], r"^\d+(\.\d)?s$")
        self.assertEqual(a["cmd"], f"imapferryctl --redis {HOST}:{self.redis.port} cutover "
                                   "alice -- SYNC-OPTIONS")
        self.assertEqual(rows["bob"]["m1"], "-")   # no sync state yet
        # last sync and last error: a cured error is not shown, a current one
        # is, as text
        self.assertRegex(a["lastsync"], r"^9\ds ago$")
        self.assertEqual((a["lasterror"], a["errclass"]), ("-", False))
        b = rows["bob"]
        self.assertEqual(b["lastsync"], "2.0h ago")
        self.assertRegex(b["lasterror"], r"^final-delta: <i>folder counts differ</i> \(3\ds ago\)$")
        self.assertTrue(b["errclass"])
        self.assertEqual(self.page().js("document.querySelectorAll('#rows i').length"), 0)
        self.assertEqual(rows[EVIL]["lastsync"], "-")
        # the name is text: escaped in the cell, no <b> element; shell-quoted
        e = rows[EVIL]
        self.assertEqual(e["route"], "DST")
        self.assertEqual(e["html"], "&lt;b&gt;x&amp;y&lt;/b&gt;'; rm")
        self.assertEqual(self.page().js("document.querySelectorAll('#rows b').length"), 0)
        self.assertTrue(e["cmd"].endswith(" rollback '<b>x&y</b>'\\''; rm' -- SYNC-OPTIONS"),
                        e["cmd"])
        totals = json.loads(self.page().js(
            "JSON.stringify(Array.from(document.querySelectorAll('#totals tr')).map("
            "function (tr) { return [tr.dataset.total, tr.cells[1].textContent]; }))"))
        self.assertEqual(dict(totals)["due"], "1")
        self.assertEqual(dict(totals)["routes"], "2 / 0 / 1")
        self.assertEqual(dict(totals)["m2"], "13")
        # the chart draws once there are two samples (one a second)
        deadline = time.monotonic() + 10
        while not self.page().js("document.querySelectorAll('#chart-queue polyline').length"):
            self.assertLess(time.monotonic(), deadline, "no chart")
            time.sleep(0.2)

    @unittest.skipIf(CHROMIUM is None, "chromium is not installed (apt-get install chromium)")
    def test_3_route_changes_show_as_they_happen(self):
        self.wait_rows("alice on SRC", lambda rows: rows.get("alice", {}).get("route") == "SRC")
        self.ctl("route", "alice", "freeze")
        rows = self.wait_rows("alice frozen",
                              lambda rows: rows["alice"]["route"] == "FREEZE", timeout=6)
        self.assertEqual(rows["alice"]["cmd"], "(cutover running)")
        # the daemon's work goes on meanwhile: the copy progresses
        s = shard("alice")
        self.redis.cli("HSET", f"rep:{{{s}}}:st:alice", "Sent", "F Sent Sent 1 6 5 0 7 6 5 0")
        self.ctl("route", "alice", "dst")
        rows = self.wait_rows("alice on DST", lambda rows: rows["alice"]["route"] == "DST",
                              timeout=6)
        self.assertEqual(rows["alice"]["m2"], "15")
        self.assertIn(" rollback alice", rows["alice"]["cmd"])
        self.assertEqual(self.page().js("document.querySelector('#rows tr.DST') !== null"), True)

    def test_9_redis_gone(self):
        self.redis.stop()
        code, _, body = self.get("healthz")
        self.assertEqual(code, 503)
        code, _, body = self.get("api/status")
        self.assertEqual(code, 503)
        self.assertIn("Redis", json.loads(body)["error"])
        if CHROMIUM is not None:
            deadline = time.monotonic() + 10
            while not self.page().js("document.getElementById('err').textContent"):
                self.assertLess(time.monotonic(), deadline, "no error shown")
                time.sleep(0.2)
            self.assertIn("Not updated", self.page().js(
                "document.getElementById('err').textContent"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
