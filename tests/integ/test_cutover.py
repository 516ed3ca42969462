#!/usr/bin/env python3
"""Per-user cutover (issue 7): imapferryctl + imapferry-proxy on a Redis of
this test's own.

Covers: final-delta copies and verifies an account (no proxy involved);
status shows the user (table and JSON); a route change reaches a running
proxy through rep:ctl (a live source session gets "* BYE [UNAVAILABLE]",
the next login goes to the destination); a cutover with a live session and
a login made during the freeze: the session gets the BYE, the held login
proceeds to the destination after the flip, dst equals src byte for byte;
a cutover whose final sync fails (a destination folder made read-only, so
APPEND fails) rolls back to SRC with a non-zero exit and the held login
goes to the source.

Uses user grace. Needs FERRY_ENV_DIR, FERRY_SYNC, FERRY_PROXY, FERRY_CTL.
"""

import atexit
import imaplib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import ferry_harness as fh
from private_redis import PrivateRedis

USER = "grace"
ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
PROXY = os.environ["FERRY_PROXY"]
CTL = os.environ["FERRY_CTL"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-cutover-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)





def message(n, tag):
    return (f"From: a@example.org\r\nTo: {USER}@example.org\r\nSubject: {tag} {n}\r\n"
            f"Message-Id: <{tag}-{n}@example.org>\r\n\r\nbody {n}\r\n").encode()


def sync_options():
    opts = []
    for n, side in (("1", "src"), ("2", "dst")):
        opts += [f"--host{n}", fh.HOST, f"--port{n}", str(ENV.port(side, "imap")),
                 f"--authuser{n}", fh.MASTER_USER, f"--password{n}", fh.MASTER_PASS,
                 f"--sslargs{n}", f"SSL_ca_file={ENV.ca_file}"]
    # --syncduplicates: the corpus has exact duplicates, and the counts must match
    return opts + ["--syncduplicates", "--nolog", "--tmpdir", WORKDIR]


def separator(imap):
    typ, data = imap.list('""', '""')
    fh.imap_check((typ, data), "LIST")
    return data[0].decode().split('"')[1]


def account_size(side):
    """(messages, bytes) of USER's account on side, counted by the test itself."""
    imap = ENV.imap(side, USER)
    try:
        msgs = size = 0
        for name, (_, flags) in fh.list_folders(imap).items():
            if any(f.lower() == "\\noselect" for f in flags):
                continue
            for m in fh.fetch_folder(imap, name):
                msgs += 1
                size += m.size
        return msgs, size
    finally:
        imap.logout()


class Cutover(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        fh.wipe(ENV, "src", USER)
        fh.wipe(ENV, "dst", USER)
        fh.populate(ENV, "src", USER, "small", seed=47)
        cls.redis = PrivateRedis(WORKDIR)
        cls.proxy = fh.start_proxy(
            ENV, PROXY, redis_port=cls.redis.port, log_dir=WORKDIR,
            extra_args=["--upstream-dst", f"{fh.HOST}:{ENV.port('dst', 'imap')}",
                        "--freeze-hold", "20", "--freeze-drain", "3"])

    @classmethod
    def tearDownClass(cls):
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

    def route(self):
        return self.redis.cli("HGET", f"rep:route:{USER}", "state")

    def proxy_imap(self):
        imap = imaplib.IMAP4(fh.HOST, self.proxy.port, timeout=30)
        imap.starttls(ssl_context=ENV.ssl_context())
        imap.login(USER, ENV.password(USER))
        return imap

    def wait_for(self, what, check, timeout):
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                self.fail(f"{what}: not within {timeout} s\n" + self.proxy.log_text()[-3000:])
            time.sleep(0.05)

    def assert_bye(self, imap):
        with self.assertRaises(imaplib.IMAP4.abort) as cm:
            imap.noop()
            imap.noop()
        self.assertIn("UNAVAILABLE", str(cm.exception))
        imap.shutdown()

    def held_login(self):
        """Logs in through the proxy in a thread; returns (thread, result)."""
        result = {}

        def run():
            t0 = time.monotonic()
            try:
                imap = self.proxy_imap()
                result["waited"] = time.monotonic() - t0
                result["sep"] = separator(imap)
                imap.logout()
            except Exception as e:  # reported by the caller
                result["error"] = repr(e)
        t = threading.Thread(target=run)
        t.start()
        return t, result

    def idle_session(self):
        """A raw client in IDLE through the proxy (imaplib has no IDLE)."""
        import ssl
        sock = socket.create_connection((fh.HOST, self.proxy.port), timeout=30)
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"s1 STARTTLS\r\n")
        f.readline()
        tls = ENV.ssl_context().wrap_socket(sock, server_hostname=fh.HOST)
        f = tls.makefile("rb")
        tls.sendall(f"l1 LOGIN {USER} {ENV.password(USER)}\r\ns2 SELECT INBOX\r\n"
                    "i1 IDLE\r\n".encode())
        while not f.readline().startswith(b"+"):
            pass
        return tls, f

    def test_1_final_delta_copies_and_verifies(self):
        rc, out = self.ctl("final-delta", USER, "--", *sync_options(), check=0)
        self.assertRegex(out, rf"{USER}: The sync looks good, all \d+ identified messages")
        self.assertIn(f"{USER}: verified:", out)
        self.assertEqual(fh.compare(ENV, USER, "src", USER, "dst"), [])
        self.assertEqual(self.route(), "")  # no route change

    def test_1b_passwords_not_on_command_lines(self):
        """--password1/2 given to imapferryctl reach the syncs in
        IMAPSYNC_PASSWORD1/2: no process shows them in its command line
        (ps), neither a sync's nor imapferryctl's own once it runs the sync
        (it blanks them at start: before that instant they are there)."""
        p = subprocess.Popen([CTL, "--redis", f"{fh.HOST}:{self.redis.port}", "--sync", SYNC,
                              "final-delta", USER, "--", *sync_options()],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen, syncs, ctl_later = [], set(), []
        secret = fh.MASTER_PASS.encode()

        def parent(pid):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[1]
            except (OSError, IndexError):
                return None

        def cmdline(pid):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    return f.read()
            except OSError:
                return None

        while p.poll() is None:
            children = [d for d in os.listdir("/proc")
                        if d.isdigit() and parent(d) == str(p.pid)]
            for d in children:
                cmd = cmdline(d)
                if cmd is None:
                    continue
                if secret in cmd:
                    seen.append(cmd.replace(b"\0", b" ").decode(errors="replace"))
                if SYNC.encode() in cmd and b"--user1" in cmd:
                    syncs.add(d)
            if syncs:  # imapferryctl is past its start: its own line now
                cmd = cmdline(str(p.pid))
                if cmd is not None and p.poll() is None:
                    ctl_later.append(cmd)
            time.sleep(0.01)
        out = p.stdout.read()
        p.stdout.close()
        self.assertEqual(0, p.returncode, out)
        self.assertRegex(out, rf"{USER}: The sync looks good")
        self.assertTrue(syncs, "no sync process was seen running")
        self.assertEqual([], seen)
        self.assertTrue(ctl_later, "imapferryctl's command line was not read")
        self.assertEqual([], [c for c in ctl_later if secret in c])
        self.assertIn(b"--password1", ctl_later[0])

    def test_2_status_shows_the_user(self):
        rc, out = self.ctl("status", check=0)
        self.assertRegex(out, rf"(?m)^{USER}\s+-\s+0\s")
        self.assertIn("TOTAL", out)
        rc, out = self.ctl("status", USER, "--json", check=0)
        doc = json.loads(out)
        (u,) = doc["users"]
        self.assertEqual(u["user"], USER)
        self.assertEqual(u["route"], "SRC")
        self.assertTrue(u["state"])
        self.assertGreater(u["folders"], 3)
        self.assertEqual(u["messages1"], u["messages2"])
        self.assertGreater(u["messages1"], 0)
        # messages and bytes per side, as the final delta's sizes at end counted them
        self.assertEqual(u["size_by"], "final-delta")
        self.assertGreater(u["size_ms"], doc["now_ms"] - 120000)
        want = account_size("src")
        self.assertEqual((u["size_messages1"], u["bytes1"]), want)
        self.assertEqual((u["size_messages2"], u["bytes2"]), account_size("dst"))
        self.assertEqual((doc["totals"]["bytes1"], doc["totals"]["bytes2"]), (want[1], want[1]))
        rc, out = self.ctl("status", USER, check=0)
        self.assertRegex(out, r"SIZE-SRC +SIZE-DST")
        n, unit = float(want[1]), -1
        while n >= 1024 and unit < 4:
            n, unit = n / 1024, unit + 1
        human = f"{n:.1f}{'KMGTP'[unit]}"
        self.assertRegex(out, rf"(?m)^{USER}\s.* {human} +{human} ")

    def test_3_route_change_reaches_a_running_proxy(self):
        imap = self.proxy_imap()
        self.assertEqual(separator(imap), ENV.sep("src"))
        imap.select("INBOX")
        self.ctl("route", USER, "dst", check=0)
        self.assert_bye(imap)   # a source session of a DST user is closed
        imap = self.proxy_imap()
        self.assertEqual(separator(imap), ENV.sep("dst"))
        self.ctl("rollback", USER, "--force", check=0)
        self.assert_bye(imap)
        imap = self.proxy_imap()
        self.assertEqual(separator(imap), ENV.sep("src"))
        imap.logout()

    def test_4_cutover_with_live_and_held_sessions(self):
        live = self.proxy_imap()
        fh.imap_check(live.append("INBOX", "(\\Seen)", None, message(1, "before-cutover")),
                      "APPEND")
        live.select("INBOX")
        live.store("1", "+FLAGS", "(\\Flagged)")
        idle_sock, idle_f = self.idle_session()
        p = subprocess.Popen([CTL, "--redis", f"{fh.HOST}:{self.redis.port}", "--sync", SYNC,
                              "cutover", USER, "--", *sync_options()],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            self.wait_for("route FREEZE", lambda: self.route() == "FREEZE", 10)
            held, result = self.held_login()
            self.assert_bye(live)
            # the IDLE is ended upstream (its tagged OK), then the BYE
            rest = idle_f.read()
            self.assertRegex(rest, rb"i1 OK[^\r]*\r\n\* BYE \[UNAVAILABLE\]")
            out, _ = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        held.join(30)
        idle_sock.close()
        self.assertEqual(p.returncode, 0, out + self.proxy.log_text()[-3000:])
        self.assertRegex(self.proxy.log_text(), r"login held: route FREEZE")
        self.assertRegex(self.proxy.log_text(), r"held login released: route DST")
        self.assertRegex(out, rf"{USER}: The sync looks good, all \d+ identified messages")
        self.assertIn("cut over to the destination", out)
        self.assertEqual(self.route(), "DST")
        self.assertNotIn("error", result)
        self.assertEqual(result.get("sep"), ENV.sep("dst"))  # it went to the destination
        self.assertEqual(fh.compare(ENV, USER, "src", USER, "dst"), [])
        rc, out = self.ctl("status", USER, check=0)
        self.assertRegex(out, rf"(?m)^{USER}\s+DST\s")
        self.ctl("rollback", USER, "--force", check=0)

    def test_5_failed_final_sync_rolls_back(self):
        src = ENV.imap("src", USER)
        try:
            fh.imap_check(src.append("Sent", None, None, message(2, "unappendable")), "APPEND")
        finally:
            src.logout()
        # The destination's Sent refuses writes (mail processes run as an
        # unprivileged user): the final sync's APPEND fails.
        home = ENV.dir / "dst"
        dirs = [d for d in home.rglob("Sent") if d.is_dir() and USER in str(d)]
        self.assertTrue(dirs, "destination Sent folder not found")
        changed = []
        for d in dirs:
            for sub in [d, *[d / x for x in ("cur", "new", "tmp")]]:
                if sub.is_dir():
                    changed.append((sub, sub.stat().st_mode))
                    sub.chmod(0o555)
        try:
            p = subprocess.Popen([CTL, "--redis", f"{fh.HOST}:{self.redis.port}", "--sync",
                                  SYNC, "cutover", USER, "--", *sync_options()],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                self.wait_for("route FREEZE", lambda: self.route() == "FREEZE", 10)
                held, result = self.held_login()
                out, _ = p.communicate(timeout=120)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        finally:
            for sub, mode in changed:
                sub.chmod(mode)
        held.join(30)
        self.assertEqual(p.returncode, 1, out)
        self.assertIn("FAILED", out)
        self.assertIn("rolled back to the source", out)
        self.assertEqual(self.route(), "SRC")
        self.assertNotIn("error", result)
        self.assertEqual(result.get("sep"), ENV.sep("src"))  # the held login stayed on the source

    # ---- the freeze lease: an imapferryctl that is gone does not strand a user ----

    def start_ctl(self, *args, pause_ms=0):
        """A background imapferryctl whose output lines are collected."""
        env = dict(os.environ)
        if pause_ms:
            env["IMAPFERRYCTL_TEST_PAUSE_FROZEN_MS"] = str(pause_ms)
        p = subprocess.Popen([CTL, "--redis", f"{fh.HOST}:{self.redis.port}", "--sync", SYNC,
                              *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env)
        lines = []
        t = threading.Thread(target=lambda: lines.extend(iter(p.stdout.readline, "")))
        t.start()
        def cleanup():
            if p.poll() is None:
                p.kill()
                p.wait()
            t.join(10)
            p.stdout.close()
        self.addCleanup(cleanup)
        return p, lines, t

    def lease_fields(self):
        return self.redis.cli("HMGET", f"rep:route:{USER}", "lease_ms", "lease_to").split("\n")

    def status_json(self):
        (u,) = json.loads(self.ctl("status", USER, "--json", check=0)[1])["users"]
        return u

    def test_6_lease_lost_by_a_stopped_ctl_is_not_flipped(self):
        """A stopped (not killed) imapferryctl outlives its lease: proxies let
        logins go to the source meanwhile, so it must not flip when it wakes."""
        self.assertIn(self.route(), ("", "SRC"))
        p, lines, t = self.start_ctl("cutover", USER, "--lease", "2", "--", *sync_options(),
                                     pause_ms=4000)
        self.wait_for("the test pause", lambda: any("pausing" in x for x in lines), 20)
        self.assertEqual(self.route(), "FREEZE")
        self.assertEqual(self.lease_fields()[1], "SRC")
        held, result = self.held_login()
        time.sleep(2.5)  # longer than the lease: renewed, so the login is still held
        self.assertEqual(result, {}, "a login went on while the lease was renewed")
        u = self.status_json()
        self.assertFalse(u["lease_expired"])
        self.assertGreater(u["lease_left_ms"], 0)
        # a second cutover and a rollback do not take over a running freeze
        rc, out = self.ctl("cutover", USER, "--", *sync_options(), check=1)
        self.assertIn("holds the user frozen", out)
        rc, out = self.ctl("rollback", USER, check=1)
        self.assertIn("Nothing done", out)
        self.assertEqual(self.route(), "FREEZE")
        os.kill(p.pid, signal.SIGSTOP)
        try:
            held.join(10)  # the lease ends within 2 s: the held login goes to the source
            self.assertNotIn("error", result)
            self.assertEqual(result.get("sep"), ENV.sep("src"))
        finally:
            os.kill(p.pid, signal.SIGCONT)
        p.wait(60)
        t.join(10)
        out = "".join(lines)
        if os.environ.get("CUT7_DEBUG"):
            print(out, self.proxy.log_text()[-2500:])
        self.assertEqual(p.returncode, 1, out)
        self.assertIn("the freeze lease (epoch", out)
        self.assertIn("is lost", out)
        self.assertNotIn("final sync", out)  # checked before the sync starts
        self.assertNotIn("cut over to the destination", out)
        self.assertIn("rolled back to the source", out)
        self.assertEqual(self.route(), "SRC")
        self.assertEqual(self.redis.cli("HEXISTS", f"rep:route:{USER}", "lease_ms"), "0")
        self.assertRegex(self.proxy.log_text(), r"has no imapferryctl any more")

    def test_7_killed_ctl_then_rollback_and_cutover_take_over(self):
        self.assertIn(self.route(), ("", "SRC"))
        for attempt, takeover in enumerate(("rollback", "cutover")):
            p, lines, t = self.start_ctl("cutover", USER, "--lease", "2", "--",
                                         *sync_options(), pause_ms=60000)
            self.wait_for("the test pause", lambda: any("pausing" in x for x in lines), 20)
            held, result = self.held_login()
            time.sleep(0.3)
            p.kill()  # SIGKILL while frozen: nobody renews the lease or rolls back
            p.wait()
            t0 = time.monotonic()
            held.join(10)
            self.assertNotIn("error", result)
            self.assertEqual(result.get("sep"), ENV.sep("src"), "the held login")
            self.assertLess(time.monotonic() - t0, 4)
            self.assertEqual(self.route(), "FREEZE")  # the route itself is left as it was
            u = self.status_json()
            self.assertTrue(u["lease_expired"])
            self.assertLessEqual(u["lease_left_ms"], 0)
            rc, out = self.ctl("status", check=0)
            self.assertRegex(out, rf"(?m)^{USER}\s+FREEZE \(lease expired\)\s")
            # a new login goes straight to the source and works there
            imap = self.proxy_imap()
            self.assertEqual(separator(imap), ENV.sep("src"))
            fh.imap_check(imap.append("INBOX", None, None, message(attempt, "after-lease")),
                          "APPEND")
            imap.logout()
            if takeover == "rollback":
                rc, out = self.ctl("rollback", USER, check=0)
                self.assertIn("taking over a freeze whose lease ended", out)
                self.assertEqual(self.route(), "SRC")
                self.assertEqual(self.redis.cli("HEXISTS", f"rep:route:{USER}", "lease_ms"), "0")
            else:
                rc, out = self.ctl("cutover", USER, "--", *sync_options(), check=0)
                self.assertIn("taking over a freeze whose lease ended", out)
                self.assertIn("cut over to the destination", out)
                self.assertEqual(self.route(), "DST")
                self.assertEqual(self.redis.cli("HEXISTS", f"rep:route:{USER}", "lease_ms"), "0")
                # what was written on the source after the lease is on the destination
                self.assertEqual(fh.compare(ENV, USER, "src", USER, "dst"), [])
                imap = self.proxy_imap()
                self.assertEqual(separator(imap), ENV.sep("dst"))
                imap.logout()

    # ---- a rollback after the flip and the folders changed on the destination ----

    def src_folders(self):
        imap = ENV.imap("src", USER)
        try:
            return {name: len(fh.fetch_folder(imap, name)) for name in fh.list_folders(imap)}
        finally:
            imap.logout()

    def test_8_rollback_after_the_flip_keeps_or_deletes_folders(self):
        if self.route() != "DST":
            self.ctl("cutover", USER, "--", *sync_options(), check=0)
        before = self.src_folders()
        dsep, ssep = ENV.sep("dst"), ENV.sep("src")
        victim = f"Archive{dsep}2019"  # a child folder with mail
        self.assertGreater(before[f"Archive{ssep}2019"], 0)
        imap = self.proxy_imap()
        self.assertEqual(separator(imap), dsep)
        fh.imap_check(imap.create("MadeAfterFlip"), "CREATE")
        fh.imap_check(imap.append("MadeAfterFlip", None, None, message(1, "new-folder")),
                      "APPEND")
        fh.imap_check(imap.delete(victim), "DELETE")
        imap.logout()
        # by default: the new folder appears on the source, the deleted one stays there
        rc, out = self.ctl("rollback", USER, "--", *sync_options(), check=0)
        self.assertIn(f"{USER}: 1 folder made on the destination since the cutover created on "
                      f"the source: [MadeAfterFlip]", out)
        self.assertIn(f"{USER}: 1 folder on the source that the destination does not have "
                      f"(deleted there since the cutover?) kept on the source, with their "
                      f"mail: [Archive{ssep}2019]; rollback --delete-folders deletes them", out)
        self.assertEqual(self.route(), "SRC")
        after = self.src_folders()
        self.assertEqual(after.get("MadeAfterFlip"), 1)
        self.assertEqual(after[f"Archive{ssep}2019"], before[f"Archive{ssep}2019"])
        # asked for: the folder deleted on the destination goes on the source too
        self.ctl("cutover", USER, "--", *sync_options(), check=0)  # brings it back on dst
        imap = self.proxy_imap()
        fh.imap_check(imap.delete(victim), "DELETE")
        imap.logout()
        rc, out = self.ctl("rollback", USER, "--delete-folders", "--", *sync_options(),
                           check=0)
        self.assertIn(f"{USER}: 1 folder that the destination does not have deleted on the "
                      f"source (--delete-folders): [Archive{ssep}2019]", out)
        self.assertNotIn("kept on the source", out)
        after = self.src_folders()
        self.assertNotIn(f"Archive{ssep}2019", after)
        self.assertEqual(after.get("MadeAfterFlip"), 1)
        self.assertEqual(fh.compare(ENV, USER, "src", USER, "dst"), [])

    def test_9_redis_away_keeps_a_cut_over_user_on_the_destination(self):
        """With Redis away, the proxy answers a route lookup with the last
        route Redis gave for that user: a user cut over stays on the
        destination; a user it never looked up goes to the source, as
        before; once Redis is back, its answers count again."""
        self.ctl("route", USER, "dst", check=0)
        imap = self.proxy_imap()
        self.assertEqual(separator(imap), ENV.sep("dst"))
        imap.logout()
        port = self.redis.port
        self.redis.stop()
        try:
            imap = self.proxy_imap()
            self.assertEqual(separator(imap), ENV.sep("dst"))
            imap.logout()
            other = imaplib.IMAP4(fh.HOST, self.proxy.port, timeout=30)
            other.starttls(ssl_context=ENV.ssl_context())
            other.login("heidi", ENV.password("heidi"))
            self.assertEqual(separator(other), ENV.sep("src"))
            other.logout()
            log = self.proxy.log_text()
            self.assertIn(f"route of user {USER} unavailable: using the last one read (DST", log)
            self.assertIn("route lookup failed (Redis unavailable): using the source", log)
        finally:
            type(self).redis = PrivateRedis(WORKDIR, port=port)
        # Redis back, empty: no route stored is an answer (the source)
        self.wait_for("the proxy's Redis connection", lambda: self.route_to_src(), 15)

    def route_to_src(self):
        """Whether a new login through the proxy lands on the source. A
        login made while the proxy reconnects to Redis may still be routed
        by the last route (the destination), and that session is closed
        with BYE [UNAVAILABLE] once Redis answers otherwise: not yet."""
        imap = self.proxy_imap()
        try:
            return separator(imap) == ENV.sep("src")
        except imaplib.IMAP4.abort:
            return False
        finally:
            try:
                imap.logout()
            except (imaplib.IMAP4.abort, OSError):
                try:
                    imap.shutdown()
                except OSError:
                    pass


if __name__ == "__main__":
    unittest.main(verbosity=2)
