#!/usr/bin/env python3
"""imapferry-sync as an imapsync drop-in, against the harness's two Dovecots.

Covers: the first run copies everything (compared byte for byte, with flags,
INTERNALDATE, folders and subscriptions), re-runs copy nothing, a run killed
with SIGKILL mid-transfer and re-run leaves no duplicate and no loss, --dry
changes nothing, in-folder duplicates are skipped as imapsync does, and each
bad input gets its exit code and message (wrong password 161/162, closed port
101/102, untrusted certificate 12, bad option 64, unreadable passfile 66).

Uses user alice on both sides (other tests use bob and carol). Needs
FERRY_ENV_DIR (the ctest fixture) and FERRY_SYNC (the binary).
"""

import atexit
import imaplib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import ferry_harness as fh

USER = "alice"
ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-sync-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)


def base_args(user1=USER, user2=USER, pw1=None, pw2=None, port1=None, port2=None, ca=True):
    args = [SYNC,
            "--host1", "127.0.0.1", "--port1", str(port1 or ENV.port("src", "imap")),
            "--user1", user1, "--password1", pw1 or ENV.password(user1),
            "--host2", "127.0.0.1", "--port2", str(port2 or ENV.port("dst", "imap")),
            "--user2", user2, "--password2", pw2 or ENV.password(user2),
            "--nolog", "--pidfile", os.path.join(WORKDIR, "sync.pid"), "--tmpdir", WORKDIR]
    if ca:
        args += ["--sslargs1", "SSL_ca_file=" + ENV.ca_file,
                 "--sslargs2", "SSL_ca_file=" + ENV.ca_file]
    return args


def run_sync(*extra, args=None, timeout=300):
    cmd = (args or base_args()) + list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=WORKDIR)
    return p.returncode, p.stdout + p.stderr


def run_sync_peak_rss(*extra):
    """run_sync() that also returns the process's peak RSS (MiB)."""
    out_path = os.path.join(WORKDIR, "peak.out")
    with open(out_path, "w") as out_file:
        rc, peak = fh.run_peak_rss(base_args() + list(extra), cwd=WORKDIR, stdout=out_file)
    with open(out_path) as f:
        return rc, f.read(), peak


def stat(out, label):
    m = re.search(r"^" + re.escape(label) + r"\s*: (\d+)", out, re.M)
    return int(m.group(1)) if m else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dst_folders():
    imap = ENV.imap("dst", USER)
    try:
        return fh.list_folders(imap)
    finally:
        imap.logout()


class SyncCli(unittest.TestCase):

    def setUp(self):
        fh.wipe(ENV, "src", USER)
        fh.wipe(ENV, "dst", USER)

    def assert_identical(self):
        diffs = fh.compare(ENV, USER, "src", USER, "dst")
        self.assertEqual([], [str(d) for d in diffs])

    def test_copy_then_idempotent(self):
        fh.populate(ENV, "src", USER, "small", seed=3)
        rc, out = run_sync("--syncduplicates")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("Exiting with return value 0 (EX_OK: successful termination)", out)
        self.assertRegex(out, r"The sync looks good, all \d+ identified messages in host1 are on host2\.")
        self.assertGreater(stat(out, "Messages transferred"), 100)
        self.assertRegex(out, r"Start difference host2 - host1\s*: -\d+ messages")
        self.assertRegex(out, r"Final difference host2 - host1\s*: 0 messages, 0 bytes")
        self.assert_identical()
        for _ in range(2):
            rc, out = run_sync("--syncduplicates")
            self.assertEqual(0, rc, out[-3000:])
            self.assertEqual(0, stat(out, "Messages transferred"), out[-3000:])
            self.assertIn("The sync looks good", out)
            self.assertIn("Detected 0 errors", out)
        self.assert_identical()

    def test_flag_changes_resynced(self):
        fh.populate(ENV, "src", USER, "small", seed=7)
        rc, out = run_sync("--syncduplicates")
        self.assertEqual(0, rc, out[-3000:])
        imap = ENV.imap("src", USER)
        try:
            imap.select("INBOX")
            imap.store("1:3", "+FLAGS", "(\\Flagged $Resynced)")  # sequence numbers
            imap.store("4", "-FLAGS", "(\\Seen)")
        finally:
            imap.logout()
        self.assertTrue(fh.compare(ENV, USER, "src", USER, "dst"))  # now they differ
        rc, out = run_sync("--syncduplicates")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(0, stat(out, "Messages transferred"))
        self.assert_identical()
        # many changes, few distinct flag sets: one UID STORE per set, not per message
        imap = ENV.imap("src", USER)
        try:
            typ, data = imap.select("INBOX")
            count = int(data[0])
            imap.store("1:*", "+FLAGS", "($Bulk)")
        finally:
            imap.logout()
        rc, out = run_sync("--syncduplicates", "--debugimap")
        self.assertEqual(0, rc, out[-3000:])
        stores = len(re.findall(r"C: F\d+ UID STORE ", out))
        self.assertGreater(stores, 0)
        self.assertLess(stores, count / 2, f"{stores} STOREs for {count} changed messages")
        self.assert_identical()

    def test_duplicates_skipped_like_imapsync(self):
        fh.populate(ENV, "src", USER, "small", seed=3)
        rc, out = run_sync()
        self.assertEqual(0, rc, out[-3000:])
        dups = stat(out, "Messages found duplicate on host1")
        self.assertGreater(dups, 0)
        diffs = fh.compare(ENV, USER, "src", USER, "dst")
        # exactly the in-folder duplicates are missing, nothing else differs
        self.assertEqual(dups, len(diffs), "\n".join(map(str, diffs)))
        self.assertTrue(all("only on src" in str(d) for d in diffs))

    def test_dry_changes_nothing(self):
        fh.populate(ENV, "src", USER, "small", seed=4)
        before = dst_folders()
        rc, out = run_sync("--dry")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("(not really since --dry mode)", out)
        self.assertRegex(out, r"Messages transferred\s*: 0 \(could be \d+ without dry mode\)")
        self.assertEqual(before, dst_folders())

    def test_progress_line_on_terminal(self):
        """On a terminal: one live progress line, the per-message lines go
        to the log file only."""
        import pty
        fh.populate(ENV, "src", USER, "small", seed=9)
        master, slave = pty.openpty()
        logdir = os.path.join(WORKDIR, "logs")
        p = subprocess.Popen(base_args() + ["--log", "--logdir", logdir, "--logfile", "tty.txt"],
                             stdout=slave, stderr=slave, cwd=WORKDIR)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        rc = p.wait(timeout=120)
        os.close(master)
        screen = b"".join(chunks).decode("utf-8", "replace")
        self.assertEqual(0, rc, screen[-3000:])
        self.assertNotIn(" copied to ", screen)
        self.assertRegex(screen, r"\r\x1b\[K\S+\s+\d+/\d+ msgs .* msgs/s .* ETA \d+ s")
        with open(os.path.join(logdir, "tty.txt")) as f:
            self.assertIn(" copied to ", f.read())

    def test_recognises_a_copy_by_imapsync_key(self):
        """A host2 message with the same Message-Id and Received lines (the
        key of the behaviour document's test vector) is the same message,
        even if its bytes differ (imapsync rewrites line ends): not copied."""
        hdr = (b"Message-Id: <abc.123@example.com>\r\n"
               b"Received: from mx.example.com (mx.example.com [192.0.2.1])\tby mail.example.org; "
               b"Tue, 1 Jan 2019 10:00:00 +0000\r\n"
               b"Received: from localhost  by mx.example.com; Tue, 1 Jan 2019 09:59:59 +0000 \r\n"
               b"Subject: vector\r\n\r\n")
        for side, body in (("src", b"original body\r\n"), ("dst", b"rewritten by imapsync\r\n")):
            imap = ENV.imap(side, USER)
            try:
                imap.append("INBOX", None, None, hdr + body)
            finally:
                imap.logout()
        rc, out = run_sync()
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(0, stat(out, "Messages transferred"), out[-3000:])
        self.assertIn("The sync looks good, all 1 identified messages in host1 are on host2.", out)

    def test_sigterm_stops_cleanly_then_rerun_finishes(self):
        fh.populate(ENV, "src", USER, "medium", seed=10)
        p = subprocess.Popen(base_args() + ["--syncduplicates"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=WORKDIR)
        lines = []
        for line in p.stdout:
            lines.append(line)
            if len(lines) == 120:
                p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=60)
        p.stdout.close()
        out = "".join(lines)
        self.assertEqual(6, rc, out[-3000:])  # imapsync's EXIT_BY_SIGNAL
        self.assertIn("++++ Statistics", out)
        self.assertIn("Exiting with return value 6", out)
        rc, out = run_sync("--syncduplicates")
        self.assertEqual(0, rc, out[-3000:])
        self.assert_identical()

    def test_idatefromheader(self):
        """--idatefromheader: host2's INTERNALDATE comes from the Date: header
        (zone and obsolete forms included), not from host1's INTERNALDATE."""
        cases = [(b"Date: Tue, 01 Jan 2019 10:00:00 +0200", "01-Jan-2019 08:00:00 +0000"),
                 (b"Date: 5 Feb 99 23:59 EST", "06-Feb-1999 04:59:00 +0000"),
                 (b"Date:\r\n Sun, 31 Dec 2023 23:00:00 -0130 (comment)",
                  "01-Jan-2024 00:30:00 +0000")]
        imap = ENV.imap("src", USER)
        try:
            imap.create("Dated")
            for i, (date, _) in enumerate(cases):
                imap.append("Dated", None, imaplib.Time2Internaldate(1.5e9),
                            date + b"\r\nMessage-Id: <d%d@example.org>\r\n\r\nbody\r\n" % i)
        finally:
            imap.logout()
        rc, out = run_sync("--folder", "Dated", "--idatefromheader")
        self.assertEqual(0, rc, out[-3000:])
        imap = ENV.imap("dst", USER)
        try:
            imap.select("Dated", readonly=True)
            typ, data = imap.fetch("1:*", "(INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        finally:
            imap.logout()
        got = {}
        for item in data:
            if isinstance(item, tuple):
                mid = re.search(rb"<d(\d)@", item[1]).group(1)
                idate = re.search(rb'INTERNALDATE "([^"]+)"', item[0]).group(1).decode()
                got[int(mid)] = fh.parse_internaldate(idate)
        for i, (_, want) in enumerate(cases):
            self.assertEqual(fh.parse_internaldate(want), got[i], cases[i][0])

    def test_state_skips_unchanged_folders(self):
        """After a clean run, a re-run reads no folder (no EXAMINE, SELECT or
        FETCH: one pipelined STATUS per side); a flag change and an LMTP
        delivery are still found; a corrupt state only costs a full pass."""
        fh.populate(ENV, "src", USER, "small", seed=13)
        rc, out = run_sync("--syncduplicates", "--nofoldersizes")
        self.assertEqual(0, rc, out[-3000:])
        nfolders = int(re.search(r"Looping on each one of (\d+) folders", out).group(1))
        rc, out = run_sync("--syncduplicates", "--nofoldersizes", "--debugimap")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(nfolders, out.count("unchanged since the last run, skipped"))
        self.assertIsNone(re.search(r"C: F\d+ (UID FETCH|EXAMINE|SELECT)", out), out[-3000:])
        self.assertIn("The sync looks good", out)

        imap = ENV.imap("src", USER)
        try:
            imap.select("Archive.2019")
            imap.store("1", "+FLAGS", "(\\Answered)")
        finally:
            imap.logout()
        fh.deliver(ENV, USER, b"Subject: via LMTP\r\nMessage-Id: <lmtp-state@example.org>\r\n"
                              b"\r\nbypassed any proxy\r\n")
        rc, out = run_sync("--syncduplicates", "--nofoldersizes")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(1, stat(out, "Messages transferred"), out[-3000:])
        self.assertEqual(nfolders - 2, out.count("unchanged since the last run, skipped"))
        self.assert_identical()

        state_dir = os.path.join(WORKDIR, "imapferry_state")
        for name in os.listdir(state_dir):
            with open(os.path.join(state_dir, name), "w") as f:
                f.write("imapferry-state 1\nF garbage\n")
        rc, out = run_sync("--syncduplicates", "--nofoldersizes")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("is corrupt; ignoring the state", out)
        self.assertEqual(0, stat(out, "Messages transferred"))
        self.assert_identical()
        rc, out = run_sync("--syncduplicates", "--nofoldersizes", "--nostate", "--debugimap")
        self.assertEqual(0, rc, out[-3000:])
        self.assertRegex(out, r"C: F\d+ UID FETCH")

    def test_state_kept_for_folders_outside_a_partial_run(self):
        fh.populate(ENV, "src", USER, "small", seed=14)
        rc, out = run_sync("--syncduplicates", "--nofoldersizes")
        self.assertEqual(0, rc, out[-3000:])
        nfolders = int(re.search(r"Looping on each one of (\d+) folders", out).group(1))
        rc, out = run_sync("--syncduplicates", "--nofoldersizes", "--folder", "INBOX")
        self.assertEqual(0, rc, out[-3000:])
        rc, out = run_sync("--syncduplicates", "--nofoldersizes")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(nfolders, out.count("unchanged since the last run, skipped"))

    def test_usecache_and_useuid(self):
        """--usecache keeps each folder's UID map (runs, keyed by both
        UIDVALIDITYs); --useuid then identifies by it without reading a
        header. With no valid map, --useuid identifies by headers instead of
        re-copying everything as imapsync does."""
        fh.populate(ENV, "src", USER, "small", seed=15)
        rc, out = run_sync("--usecache", "--syncduplicates", "--nofoldersizes")
        self.assertEqual(0, rc, out[-3000:])
        state_dir = os.path.join(WORKDIR, "imapferry_state")
        (name,) = os.listdir(state_dir)
        with open(os.path.join(state_dir, name)) as f:
            self.assertRegex(f.read(), r"(?m)^M INBOX INBOX \d+ \d+ \d+ \d+:\d+:\d+")

        fh.deliver(ENV, USER, b"Subject: one\r\nMessage-Id: <useuid-1@example.org>\r\n\r\nx\r\n")
        rc, out = run_sync("--useuid", "--syncduplicates", "--nofoldersizes", "--debugimap")
        self.assertEqual(0, rc, out[-3000:])
        self.assertNotIn("HEADER.FIELDS", out)
        self.assertEqual(1, stat(out, "Messages transferred"))
        self.assert_identical()

        os.unlink(os.path.join(state_dir, name))
        fh.deliver(ENV, USER, b"Subject: two\r\nMessage-Id: <useuid-2@example.org>\r\n\r\nx\r\n")
        rc, out = run_sync("--useuid", "--syncduplicates", "--nofoldersizes", "--debugimap")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("no UID map for UIDVALIDITY", out)
        self.assertIn("HEADER.FIELDS", out)
        self.assertEqual(1, stat(out, "Messages transferred"))
        self.assert_identical()  # no duplicate

    def test_justfoldersizes_changes_nothing(self):
        fh.populate(ENV, "src", USER, "small", seed=4)
        before = dst_folders()
        rc, out = run_sync("--justfoldersizes")
        self.assertEqual(0, rc, out[-3000:])
        self.assertRegex(out, r"Host1 Nb messages:\s+\d+ messages")
        self.assertRegex(out, r"Host1 folder\s+\d+/\d+ \[INBOX\]\s+Size:\s+\d+ Messages:\s+\d+ "
                              r"Biggest:\s+\d+")
        self.assertIn("does not exist yet", out)
        self.assertNotIn("copied to", out)
        self.assertEqual(before, dst_folders())

    def test_killed_mid_transfer_then_rerun(self):
        fh.populate(ENV, "src", USER, "medium", seed=5)
        p = subprocess.Popen(base_args() + ["--syncduplicates"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=WORKDIR)
        copied = 0
        for line in p.stdout:
            if " copied to " in line:
                copied += 1
                if copied == 150:
                    p.send_signal(signal.SIGKILL)
                    break
        p.wait(timeout=60)
        p.stdout.close()
        self.assertEqual(-signal.SIGKILL, p.returncode, "the run finished before the kill")
        fh.wait_sessions_gone(ENV, "dst", USER)  # the APPENDs in flight at the kill land
        rc, out = run_sync("--syncduplicates")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("The sync looks good", out)
        self.assert_identical()  # no duplicate, no loss

    def test_50mb_message_streamed(self):
        """A 50 MiB message is streamed host1 -> host2, not held: peak RSS
        stays far below its size (not checked under ASan, whose shadow
        memory inflates RSS)."""
        body = b"".join(b"%07d " % i + b"x" * 70 + b"\r\n" for i in range(50 * 2**20 // 80))
        msg = (b"From: big@example.org\r\nTo: alice@example.org\r\nSubject: 50 MiB\r\n"
               b"Message-Id: <fifty@example.org>\r\n\r\n" + body)
        imap = ENV.imap("src", USER)
        try:
            imap.append("INBOX", "(\\Seen)", None, msg)
        finally:
            imap.logout()
        del body, msg
        rc, out, peak_mib = run_sync_peak_rss()
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(1, stat(out, "Messages transferred"), out[-3000:])
        self.assert_identical()
        if "ASAN_OPTIONS" not in os.environ:
            self.assertLess(peak_mib, 32, "peak RSS of a sync run")

    def test_reconnect_after_dropped_connection(self):
        """host2 kicks the session mid-transfer (doveadm kick): the run
        reconnects, redoes the folder, and ends clean with no duplicate."""
        fh.populate(ENV, "src", USER, "medium", seed=8)
        p = subprocess.Popen(base_args() + ["--syncduplicates"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=WORKDIR)
        lines, kicked = [], False
        for line in p.stdout:
            lines.append(line)
            if not kicked and line.count(" copied to ") and len(lines) > 150:
                subprocess.run(["doveadm", "-c", ENV.values["FERRY_DST_DOVECOT_CONF"], "kick",
                                USER], check=True, capture_output=True)
                kicked = True
        rc = p.wait(timeout=120)
        p.stdout.close()
        out = "".join(lines)
        self.assertTrue(kicked)
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("Host2: connection lost", out)
        self.assertRegex(out, r"Reconnections to host2\s*: [1-9]")
        self.assertIn("The sync looks good", out)
        self.assert_identical()

    def test_master_user_login(self):
        fh.populate(ENV, "src", USER, "small", seed=6)
        args = base_args()
        i = args.index("--password1")
        args[i + 1] = ENV.master_pass
        args[i:i] = ["--authuser1", ENV.master_user]
        rc, out = run_sync("--syncduplicates", args=args)
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("auth [PLAIN]", out)
        self.assert_identical()

    def test_other_login_mechanisms(self):
        rc, out = run_sync("--justlogin", "--authmd51", "--authmech2", "AUTH=LOGIN")
        self.assertEqual(0, rc, out)
        self.assertIn("Host1: success login on [127.0.0.1] with user [alice] auth [CRAM-MD5]", out)
        self.assertIn("auth [AUTH=LOGIN]", out)
        # --trylogin (imapsync's default): a refused mechanism falls back to LOGIN
        rc, out = run_sync("--justlogin", "--authmech1", "CRAM-MD5", args=base_args(pw1="wrong"))
        self.assertEqual(161, rc, out)
        self.assertIn("Host1: auth [CRAM-MD5] failed: Authentication failed.; trying the LOGIN "
                      "command", out)
        self.assertIn("auth [LOGIN]: [AUTHENTICATIONFAILED]", out)
        rc, out = run_sync("--justlogin", "--authmech1", "CRAM-MD5", "--notrylogin",
                           args=base_args(pw1="wrong"))
        self.assertEqual(161, rc, out)
        self.assertNotIn("trying the LOGIN command", out)
        # a token the harness's OAuth server never issued: a clear refusal
        # (test_sync_oauth covers accepted ones), and the token never shown
        token = "ya29.secret-token-value"
        rc, out = run_sync("--justlogin", "--notrylogin", "--oauthaccesstoken1", token)
        self.assertEqual(161, rc, out)
        self.assertIn("Host1 failure: Error login on [127.0.0.1] with user [alice] auth [XOAUTH2]",
                      out)
        self.assertNotIn(token, out)
        rc, out = run_sync("--justlogin", "--oauthaccesstoken1=" + token)
        self.assertNotIn(token, out)

    def dst_path(self, *parts):
        return os.path.join(ENV.values["FERRY_DST_MAIL_DIR"], USER, *parts)

    def test_create_refused_exit_116(self):
        """host2 cannot create folders (its mail root is read-only for
        Dovecot's mail user): each CREATE failure is reported, exit 116."""
        fh.populate(ENV, "src", USER, "small", seed=12)
        os.chmod(self.dst_path(), 0o500)
        try:
            rc, out = run_sync("--folder", "Archive.2019", "--folder", "Lists", "--nofoldersizes")
        finally:
            os.chmod(self.dst_path(), 0o700)
        self.assertEqual(116, rc, out[-3000:])
        self.assertIn("Could not create folder [Archive/2019]", out)
        self.assertIn("The most frequent error is ERR_CREATE.", out)
        self.assertIn("EXIT_ERR_CREATE", out)

    def test_append_refused_counted_exit_114(self):
        """Every refused APPEND is counted (imapsync loses them), the run goes
        on with the other messages, and the exit code is 114."""
        fh.populate(ENV, "src", USER, "small", seed=12)
        os.chmod(self.dst_path("Sent"), 0o500)
        try:
            rc, out = run_sync("--folder", "Sent", "--folder", "Trash", "--nofoldersizes")
        finally:
            os.chmod(self.dst_path("Sent"), 0o700)
        self.assertEqual(114, rc, out[-3000:])
        refused = len(re.findall(r"^- msg .* could not append", out, re.M))
        self.assertGreater(refused, 0)
        self.assertRegex(out, rf"Detected {refused} errors")
        self.assertGreater(stat(out, "Messages transferred"), 0)  # Trash still copied
        self.assertIn("The sync is not finished", out)
        self.assertIn("EXIT_ERR_APPEND", out)

    def test_pidfile(self):
        pidfile = os.path.join(WORKDIR, "sync.pid")
        rc, out = run_sync("--justlogin")
        self.assertEqual(0, rc, out)
        self.assertIn(f"Removing pidfile {pidfile}", out)
        self.assertFalse(os.path.exists(pidfile))
        with open(pidfile, "w") as f:  # a live process holds it: this test's
            f.write(f"{os.getpid()}\n")
        try:
            rc, out = run_sync("--justlogin")
            self.assertEqual(0, rc, out)
            self.assertIn("already exists, overwriting it ( use --pidfilelocking to avoid "
                          "concurrent runs )", out)
            with open(pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
            rc, out = run_sync("--justlogin", "--pidfilelocking")
            self.assertEqual(8, rc, out)
            self.assertIn("EXIT_PID_FILE_ERROR", out)
        finally:
            if os.path.exists(pidfile):
                os.unlink(pidfile)

    def test_proxyauth(self):
        """--proxyauth1: LOGIN as the admin, then PROXYAUTH (a Sun/iPlanet
        command): Dovecot does not know it, so a clear refusal, exit 161."""
        args = base_args(pw1=ENV.password("bob"))  # bob plays the admin: LOGIN bob works
        i = args.index("--password1")
        args[i:i] = ["--authuser1", "bob", "--proxyauth1", "--justlogin"]
        rc, out = run_sync(args=args)
        self.assertEqual(161, rc, out)
        self.assertIn("Host1 failure: PROXYAUTH alice as [bob] on [127.0.0.1]:", out)

    def test_justlogin_and_justconnect(self):
        rc, out = run_sync("--justlogin")
        self.assertEqual(0, rc, out)
        self.assertIn("Host2: success login", out)
        rc, out = run_sync("--justconnect")
        self.assertEqual(0, rc, out)
        self.assertNotIn("success login", out)

    def test_wrong_password(self):
        rc, out = run_sync(args=base_args(pw1="wrong"))
        self.assertEqual(161, rc, out)
        self.assertIn("Host1 failure: Error login on [127.0.0.1] with user [alice] auth [LOGIN]: "
                      "[AUTHENTICATIONFAILED] Authentication failed.", out)
        self.assertNotIn("wrong", out.replace("--password1 MASKED", ""))  # never echoed
        rc, out = run_sync(args=base_args(pw2="wrong"))
        self.assertEqual(162, rc, out)
        self.assertIn("EXIT_AUTHENTICATION_FAILURE_USER2", out)

    def test_unreachable(self):
        port = free_port()
        rc, out = run_sync(args=base_args(port1=port))
        self.assertEqual(101, rc, out)
        self.assertIn(f"Host1 failure: can not open imap connection on [127.0.0.1] with user "
                      f"[alice]: connect to 127.0.0.1:{port} failed: Connection refused", out)
        rc, out = run_sync(args=base_args(port2=port))
        self.assertEqual(102, rc, out)

    def run_against_one_shot_server(self, payload, side):
        """run_sync() with host<side> a listener that sends payload to the
        first connection and closes it 2 s later; (rc, out, port)."""
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]

        def serve():
            conn, _ = srv.accept()
            conn.sendall(payload)
            time.sleep(2)
            conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            rc, out = run_sync(args=base_args(**{f"port{side}": port}))
        finally:
            thread.join(5)
            srv.close()
        return rc, out, port

    def test_not_an_imap_server(self):
        """A port that speaks something else (here HTTP) is a clear
        connection failure on that host, not a hang."""
        rc, out, port = self.run_against_one_shot_server(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", 2)
        self.assertEqual(102, rc, out)
        self.assertIn(f"server 127.0.0.1:{port} sent no IMAP greeting", out)
        self.assertIn("HTTP/1.1 400 Bad Request", out)

    def test_passwords_blanked_in_ps(self):
        """--password1/2 are blanked in the process's own arguments once
        parsed: /proc/PID/cmdline (ps) does not show them while it runs
        (here waiting on a server that greets and then says nothing)."""
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        conns = []

        def serve():
            conn, _ = srv.accept()
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] mute\r\n")
            conns.append(conn)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        args = base_args(pw1="Secret-One-77", pw2="Secret-Two-88", port1=port)
        args += ["--timeout1", "20"]
        args[args.index("--password2")] = "--password2=Secret-Two-88"
        del args[args.index("--password2=Secret-Two-88") + 1]
        p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=WORKDIR)
        try:
            deadline = time.monotonic() + 10
            while not conns:
                self.assertLess(time.monotonic(), deadline, "the sync did not connect")
                time.sleep(0.02)
            time.sleep(0.2)
            with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                cmd = f.read()
            self.assertIn(b"--password1", cmd)
            self.assertNotIn(b"Secret-One-77", cmd)
            self.assertNotIn(b"Secret-Two-88", cmd)
        finally:
            p.kill()
            p.communicate()
            thread.join(5)
            for c in conns:
                c.close()
            srv.close()

    def test_server_text_is_sanitised(self):
        """Server text quoted in the report (here a refusing greeting)
        reaches the terminal and the log without its control characters:
        no escape sequence or bell from a hostile server."""
        rc, out, _ = self.run_against_one_shot_server(b"* BYE \x1b[2Jgo\x07 away\r\n", 1)
        self.assertEqual(101, rc, out)
        self.assertIn("refused the connection: ?[2Jgo? away", out)
        self.assertNotIn("\x1b", out)
        self.assertNotIn("\x07", out)

    def test_unknown_host(self):
        args = base_args()
        args[args.index("--host1") + 1] = "nohost.invalid"
        rc, out = run_sync(args=args)
        self.assertEqual(101, rc, out)
        self.assertIn("connect to nohost.invalid:", out)
        self.assertIn("cannot resolve host name", out)

    def test_untrusted_certificate(self):
        args = base_args(port1=ENV.port("src", "imaps"), ca=False) + ["--ssl1"]
        rc, out = run_sync(args=args)
        self.assertEqual(12, rc, out)
        self.assertIn("certificate verify failed", out)
        # imapsync's opt-out spelling
        args += ["--sslargs1", "SSL_verify_mode=0", "--sslargs2", "SSL_verify_mode=0",
                 "--justlogin"]
        rc, out = run_sync(args=args)
        self.assertEqual(0, rc, out)

    def test_bad_usage(self):
        rc, out = run_sync("--nosuchoption")
        self.assertEqual(64, rc, out)
        self.assertIn("Unknown option: nosuchoption", out)
        rc, out = run_sync("--passfile1", "/nonexistent/passfile")
        self.assertEqual(66, rc, out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
