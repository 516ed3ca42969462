#!/usr/bin/env python3
"""imapferry-sync's provider presets, --skipcrossduplicates, signals, ACLs and
labels (the rest of issue 8) against real Dovecots.

Gmail, Office 365 and Exchange cannot be reached from here, so the presets
run with --host1/--host2 (and the port) overridden: for Gmail the test starts
its own "Gmail-like" Dovecot (a copy of the harness's dst configuration whose
special-use folders are Gmail's: [Gmail]/All Mail, [Gmail]/Sent Mail, ...), so
that --automap, the folder rules and --skipcrossduplicates meet Gmail's
layout; the other presets run against the harness's dst.

Uses user judy (other tests use alice ... kate). Needs FERRY_ENV_DIR (the ctest
fixture) and FERRY_SYNC (the binary).
"""

import atexit
import imaplib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import unittest

import ferry_harness as fh

USER = "judy"
ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-presets-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)

GMAIL_FOLDERS = {"[Gmail]/All Mail": "\\All", "[Gmail]/Sent Mail": "\\Sent",
                 "[Gmail]/Drafts": "\\Drafts", "[Gmail]/Trash": "\\Trash",
                 "[Gmail]/Spam": "\\Junk", "[Gmail]/Starred": "\\Flagged"}


# --- a Gmail-like Dovecot -------------------------------------------------

class PrivateDovecot:
    """A Dovecot with the harness's settings for side ("src": Maildir++ with
    ".", "dst": LAYOUT=fs with "/"; users, TLS), on its own ports, mail and
    run directories under /tmp. gmail: Gmail's special-use folders instead
    of Sent/Trash/...; acl: the acl and imap_acl plugins (RFC 4314), which
    the shared harness does not load. stop() ends it."""

    def __init__(self, side="dst", gmail=False, acl=False):
        with open(ENV.values[f"FERRY_{side.upper()}_DOVECOT_CONF"]) as fp:
            conf = fp.read()
        # reachable by Dovecot's unprivileged users when run as root
        self.dir = tempfile.mkdtemp(prefix="ferry-gm-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        for sub in ("run", "state", "mail"):
            os.mkdir(os.path.join(self.dir, sub), 0o755)
        uid = int(ENV.values["FERRY_MAIL_UID"])
        st = os.stat(ENV.values[f"FERRY_{side.upper()}_MAIL_DIR"])
        os.chown(os.path.join(self.dir, "mail"), uid, st.st_gid)
        os.chmod(os.path.join(self.dir, "mail"), 0o700)
        self.ports = self._free_ports(3)
        d = self.dir
        conf = re.sub(r"(?m)^instance_name = .*$",
                      f"instance_name = ferry-private-{os.getpid()}-{os.path.basename(d)}", conf)
        conf = re.sub(r"(?m)^base_dir = .*$", f"base_dir = {d}/run", conf)
        conf = re.sub(r"(?m)^state_dir = .*$", f"state_dir = {d}/state", conf)
        conf = re.sub(r"(?m)^log_path = .*$", f"log_path = {d}/dovecot.log", conf)
        conf = re.sub(r"(?m)^mail_location = maildir:\S+/%u",
                      f"mail_location = maildir:{d}/mail/%u", conf)
        if gmail:
            conf = conf.replace(f"login_greeting = Dovecot imapferry-{side} ready.",
                                "login_greeting = Gimap ready (imapferry test).")
        it = iter(self.ports)
        conf = re.sub(r"(?m)^(\s*port = )\d+$", lambda m: m.group(1) + str(next(it)), conf)
        boxes = "".join(f'  mailbox "{name}" {{\n    special_use = {use}\n'
                        f'    auto = subscribe\n  }}\n'
                        for name, use in GMAIL_FOLDERS.items())
        if gmail:
            conf = re.sub(r"(?s)(namespace inbox \{\n  inbox = yes\n  prefix =\n  separator = /\n)"
                          r".*?\n\}\n", lambda m: m.group(1) + boxes + "}\n", conf, count=1)
            assert "[Gmail]/All Mail" in conf
        if acl:
            conf += ("\nmail_plugins = $mail_plugins acl\n"
                     "protocol imap {\n  mail_plugins = $mail_plugins acl imap_acl\n}\n"
                     "plugin {\n  acl = vfile\n}\n")
        self.conf = os.path.join(d, "dovecot.conf")
        with open(self.conf, "w") as fp:
            fp.write(conf)
        subprocess.run(["dovecot", "-c", self.conf], check=True, timeout=30,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.pid = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with open(os.path.join(d, "run", "master.pid")) as fp:
                    self.pid = int(fp.read())
                with socket.create_connection(("127.0.0.1", self.imaps_port), 2):
                    break
            except (OSError, ValueError):
                time.sleep(0.05)
        else:
            try:
                with open(os.path.join(d, "dovecot.log")) as fp:
                    log = fp.read()[-2000:]
            except OSError:
                log = ""
            self.stop()
            raise RuntimeError(f"private dovecot ({side}) did not start:\n{log}")

    @staticmethod
    def _free_ports(n):
        socks = [socket.socket() for _ in range(n)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            return [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()

    @property
    def imap_port(self):
        return self.ports[0]

    @property
    def imaps_port(self):
        return self.ports[1]

    def imap(self, user=USER):
        ctx = ssl.create_default_context(cafile=ENV.ca_file)
        imap = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=ctx)
        imap.login(user, ENV.password(user))
        return imap

    def stop(self):
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)


GMAIL = None


def setUpModule():
    global GMAIL
    GMAIL = PrivateDovecot("dst", gmail=True)


def tearDownModule():
    if GMAIL is not None:
        GMAIL.stop()


# --- helpers ----------------------------------------------------------------

def base_cmd(*extra):
    return [SYNC, "--user1", USER, "--password1", ENV.password(USER),
            "--user2", USER, "--password2", ENV.password(USER),
            "--sslargs1", "SSL_ca_file=" + ENV.ca_file, "--sslargs2", "SSL_ca_file=" + ENV.ca_file,
            "--nolog", "--nofoldersizes",
            "--pidfile", os.path.join(WORKDIR, "sync.pid"), "--tmpdir", WORKDIR] + list(extra)


def side_args(n, where):
    """--hostN/--portN of "src", "dst" or "gmail" (the imaps port for Gmail,
    whose preset turns SSL on)."""
    if where == "gmail":
        return [f"--host{n}", "127.0.0.1", f"--port{n}", str(GMAIL.imaps_port)]
    if where in ("srcs", "dsts"):  # the imaps port, for a preset that turns SSL on
        return [f"--host{n}", "127.0.0.1", f"--port{n}", str(ENV.port(where[:3], "imaps"))]
    return [f"--host{n}", "127.0.0.1", f"--port{n}", str(ENV.port(where, "imap"))]


def run_sync(src, dst, *extra, timeout=300):
    p = subprocess.run(base_cmd(*side_args(1, src), *side_args(2, dst), *extra),
                       capture_output=True, text=True, timeout=timeout, cwd=WORKDIR)
    return p.returncode, p.stdout + p.stderr


def stat(out, label):
    m = re.search(r"^" + re.escape(label) + r"\s*: (\d+)", out, re.M)
    return int(m.group(1)) if m else None


def message(tag, n, body="hello\r\n", extra_headers="", msgid=True):
    mid = f"Message-ID: <{tag}-{n}@presets.example>\r\n" if msgid else ""
    return (f"From: a@example.org\r\nTo: {USER}@example.org\r\nSubject: {tag} {n}\r\n"
            f"Date: Mon, 02 Jan 2023 10:00:00 +0000\r\n{mid}{extra_headers}\r\n{body}").encode()


def connect(side):
    return GMAIL.imap() if side == "gmail" else ENV.imap(side, USER)


def put(side, folder, msgs, flags=None):
    """Appends the messages (bytes) to folder, creating it if needed."""
    imap = connect(side)
    try:
        name = fh.mailbox_arg(folder)
        if folder.upper() != "INBOX" and folder not in fh.list_folders(imap):
            fh.imap_check(imap.create(name), f"CREATE {folder}")
        for m in msgs:
            fh.imap_check(imap.append(name, flags, None, m), "APPEND")
    finally:
        imap.logout()


def fetch(side, folder, what="BODY.PEEK[]"):
    """[(flags, bytes)] of folder in UID order, None when it does not exist."""
    imap = connect(side)
    try:
        typ, _ = imap.select(fh.mailbox_arg(folder), readonly=True)
        if typ != "OK":
            return None
        typ, data = imap.uid("FETCH", "1:*", f"(FLAGS {what})")
        out = []
        for item in data:
            if isinstance(item, tuple):
                m = re.search(rb"FLAGS \(([^)]*)\)", item[0])
                out.append((m.group(1).decode() if m else "", item[1]))
        return out
    finally:
        imap.logout()


def ids(side, folder):
    got = fetch(side, folder, "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]")
    if got is None:
        return None
    return sorted(m.group(1).decode() for _, h in got
                  for m in [re.search(rb"<([^>]+)>", h)] if m)


def folders(side):
    imap = connect(side)
    try:
        return fh.list_folders(imap)
    finally:
        imap.logout()


def wipe(side):
    """Every folder but INBOX (and, on the Gmail-like server, its fixed ones)
    deleted, deepest first; every remaining folder emptied."""
    imap = connect(side)
    try:
        sep = fh.hierarchy_separator(imap)
        for name in sorted(fh.list_folders(imap), key=lambda n: -n.count(sep)):
            if name.upper() != "INBOX" and name not in GMAIL_FOLDERS and name != "[Gmail]":
                imap.delete(fh.mailbox_arg(name))
        for name in fh.list_folders(imap):
            typ, data = imap.select(fh.mailbox_arg(name))
            if typ == "OK" and int(data[0]) > 0:
                imap.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
                imap.expunge()
    finally:
        imap.logout()


class Base(unittest.TestCase):

    def setUp(self):
        for side in ("src", "dst", "gmail"):
            wipe(side)
        for f in os.listdir(WORKDIR):
            p = os.path.join(WORKDIR, f)
            if os.path.isdir(p):
                shutil.rmtree(p)

    def assert_ok(self, rc, out):
        self.assertEqual(0, rc, out[-4000:])


class Gmail(Base):

    def test_gmail2_folder_rules_automap_addheader_expunge1(self):
        put("src", "INBOX", [message("in", i) for i in range(2)])
        put("src", "INBOX", [message("gone", 0)], flags="(\\Deleted)")
        put("src", "Sent", [message("sent", i) for i in range(2)])
        put("src", "Trash", [message("trash", 0)])
        put("src", "Quote's", [message("q", 0)])
        put("src", "Drafts", [message("draft", 0, msgid=False)])
        rc, out = run_sync("src", "gmail", "--gmail2")
        self.assert_ok(rc, out)
        self.assertIn("Preset --gmail2: host2 imap.gmail.com with SSL", out)
        self.assertIn("Turned on automapping folders", out)
        # special-use folders go to Gmail's, by role
        self.assertRegex(out, r"\[Sent\] +-> \[\[Gmail\]/Sent Mail\]")
        self.assertEqual(["sent-0@presets.example", "sent-1@presets.example"],
                         ids("gmail", "[Gmail]/Sent Mail"))
        self.assertEqual(["trash-0@presets.example"], ids("gmail", "[Gmail]/Trash"))
        self.assertNotIn("Sent", folders("gmail"))
        self.assertNotIn("Trash", folders("gmail"))
        # Gmail's name rule: ' becomes _
        self.assertEqual(["q-0@presets.example"], ids("gmail", "Quote_s"))
        # --expunge1: host1's \Deleted message is expunged first, not copied
        self.assertEqual(["in-0@presets.example", "in-1@presets.example"], ids("gmail", "INBOX"))
        self.assertEqual(["in-0@presets.example", "in-1@presets.example"], ids("src", "INBOX"))
        # --addheader: the draft without Message-Id gets one
        drafts = fetch("gmail", "[Gmail]/Drafts")
        self.assertEqual(1, len(drafts))
        self.assertRegex(drafts[0][1].decode(), r"^Message-Id: <\d+@imapsync>\r\n")
        # a re-run finds everything (the added Message-Id is the key)
        rc, out = run_sync("src", "gmail", "--gmail2")
        self.assert_ok(rc, out)
        self.assertEqual(0, stat(out, "Messages transferred"), out)

    def test_gmail2_user_values_win(self):
        put("src", "Quote's", [message("q", 0)])
        rc, out = run_sync("src", "gmail", "--gmail2", "--noautomap", "--noaddheader",
                           "--regextrans2", "s/'/-/g")
        self.assert_ok(rc, out)
        self.assertIn("Turned off automapping folders", out)
        # the user's regextrans2 runs first, then the preset's
        self.assertEqual(["q-0@presets.example"], ids("gmail", "Quote-s"))

    def test_gmail1_crossduplicates_follow_folder_order(self):
        msgs = {i: message("g", i) for i in range(5)}
        put("gmail", "INBOX", [msgs[0], msgs[1], msgs[2]])
        put("gmail", "Work", [msgs[1]])
        put("gmail", "[Gmail]/Sent Mail", [msgs[4]])
        put("gmail", "[Gmail]/All Mail", [msgs[0], msgs[1], msgs[2], msgs[3], msgs[4]])
        rc, out = run_sync("gmail", "dst", "--gmail1", "--debugcrossduplicates")
        self.assert_ok(rc, out)
        self.assertIn("Preset --gmail1: host1 imap.gmail.com with SSL", out)
        # folders in order: INBOX, Work, [Gmail]/..., All Mail last
        order = re.findall(r"^Folder +\d+/\d+ \[(.*?)\]\s+->", out, re.M)
        self.assertEqual("[Gmail]/All Mail", order[-1], order)
        self.assertEqual(["g-0@presets.example", "g-1@presets.example", "g-2@presets.example"],
                         ids("dst", "INBOX"))
        # the label Work's copy of g-1 is already in INBOX: not copied again
        self.assertEqual([], ids("dst", "Work"))
        # Sent Mail -> host2's \Sent by automap
        self.assertEqual(["g-4@presets.example"], ids("dst", "Sent"))
        # All Mail: only what no other folder had; "[Gmail]/" cut by regextrans2
        self.assertEqual(["g-3@presets.example"], ids("dst", "All Mail"))
        self.assertEqual(5, stat(out, "Messages found crossduplicate on host2"), out[-3000:])
        self.assertEqual(5, stat(out, "Messages transferred"))
        self.assertEqual(5, len(re.findall(r"is a crossduplicate: key \S+ already in host2 "
                                           r"folder", out)))
        self.assertIn("The sync looks good", out)
        # a re-run copies nothing and finds the same cross duplicates
        rc, out = run_sync("gmail", "dst", "--gmail1")
        self.assert_ok(rc, out)
        self.assertEqual(0, stat(out, "Messages transferred"), out[-3000:])
        self.assertEqual(5, stat(out, "Messages found crossduplicate on host2"))
        self.assertNotIn("is a crossduplicate", out)  # only with --debugcrossduplicates


class CrossDuplicates(Base):

    def test_same_message_in_two_folders(self):
        m = {i: message("x", i) for i in range(4)}
        put("src", "INBOX", [m[0], m[1]])
        put("src", "Folder2", [m[0], m[2]])
        put("src", "Folder3", [m[2], m[3], m[0]])
        rc, out = run_sync("src", "dst", "--skipcrossduplicates")
        self.assert_ok(rc, out)
        self.assertIn("--skipcrossduplicates reads every folder in order", out)
        # bytewise order: Folder2, Folder3, INBOX
        self.assertEqual(["x-0@presets.example", "x-2@presets.example"], ids("dst", "Folder2"))
        self.assertEqual(["x-3@presets.example"], ids("dst", "Folder3"))
        self.assertEqual(["x-1@presets.example"], ids("dst", "INBOX"))
        self.assertEqual(3, stat(out, "Messages found crossduplicate on host2"), out[-3000:])
        self.assertEqual(4, stat(out, "Messages transferred"))
        self.assertEqual(0, stat(out, "Messages found in host1 not in host2"))
        rc, out = run_sync("src", "dst", "--skipcrossduplicates")
        self.assert_ok(rc, out)
        self.assertEqual(0, stat(out, "Messages transferred"))
        self.assertEqual(3, stat(out, "Messages found crossduplicate on host2"))
        # without the option the copies are made
        rc, out = run_sync("src", "dst", "--nostate")
        self.assert_ok(rc, out)
        self.assertEqual(3, stat(out, "Messages transferred"), out[-3000:])
        self.assertEqual(0, stat(out, "Messages found crossduplicate on host2"))
        self.assertEqual(["x-0@presets.example", "x-1@presets.example"], ids("dst", "INBOX"))

    def test_found_on_host2_only(self):
        # the key is already in another host2 folder, found there this run
        put("dst", "Archive", [message("y", 0)])
        put("src", "Archive", [message("y", 5)])
        put("src", "INBOX", [message("y", 0)])
        rc, out = run_sync("src", "dst", "--skipcrossduplicates", "--dry")
        self.assert_ok(rc, out)
        self.assertEqual(1, stat(out, "Messages found crossduplicate on host2"), out[-3000:])
        self.assertEqual([], ids("dst", "INBOX"))

    def test_usecache_refused(self):
        rc, out = run_sync("src", "dst", "--skipcrossduplicates", "--usecache")
        self.assertEqual(64, rc, out[-3000:])
        self.assertIn("Error: can not have both --usecache and --skipcrossduplicates", out)


class OfficeExchange(Base):

    def test_office2_wrap_disarm_files(self):
        long_line = "x" * 25000
        dnt = "Disposition-Notification-To: a@example.org\r\n"
        put("src", "INBOX", [message("o", 0, body=long_line + "\r\n", extra_headers=dnt)])
        put("src", "Files", [message("f", 0)])
        rc, out = run_sync("src", "dsts", "--office2")
        self.assert_ok(rc, out)
        self.assertIn("Preset --office2: host2 outlook.office365.com with SSL, --maxsize 45000000",
                      out)
        got = fetch("dst", "INBOX")
        self.assertEqual(1, len(got))
        body = got[0][1]
        self.assertIn(b"\r\nX-Disposition-Notification-To: a@example.org\r\n", body)
        self.assertNotIn(b"\r\nDisposition-Notification-To:", body)
        lines = body.split(b"\r\n")
        self.assertEqual(10239, max(len(line) for line in lines))
        self.assertEqual(25000, sum(len(line) for line in lines if line.startswith(b"xxx")))
        self.assertEqual(["f-0@presets.example"], ids("dst", "Files_renamed_by_imapsync"))
        self.assertNotIn("Files", folders("dst"))
        rc, out = run_sync("src", "dsts", "--office2")
        self.assert_ok(rc, out)
        self.assertEqual(0, stat(out, "Messages transferred"), out[-3000:])

    def test_office1_excludes_files(self):
        put("src", "Files", [message("f", 0)])
        put("src", "Other", [message("o", 0)])
        rc, out = run_sync("srcs", "dst", "--office1")
        self.assert_ok(rc, out)
        self.assertNotIn("Files", folders("dst"))
        self.assertEqual(["o-0@presets.example"], ids("dst", "Other"))

    def test_exchange2_drops_flagged(self):
        put("src", "INBOX", [message("e", 0)], flags="(\\Flagged \\Seen)")
        rc, out = run_sync("src", "dst", "--exchange2")
        self.assert_ok(rc, out)
        self.assertIn("Preset --exchange2", out)
        got = fetch("dst", "INBOX")
        self.assertEqual(1, len(got))
        self.assertIn("\\Seen", got[0][0])
        self.assertNotIn("\\Flagged", got[0][0])


class Signals(Base):
    """Signals sent to a real run, mid-transfer (a throttled folder)."""

    N = 60

    def start(self, *extra):
        put("src", "INBOX", [message("s", i, body=("line %d\r\n" % i) * 300)
                             for i in range(self.N)])
        cmd = base_cmd(*side_args(1, "src"), *side_args(2, "dst"), "--nostate",
                       "--maxmessagespersecond", "10", *extra)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             cwd=WORKDIR)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        self.addCleanup(p.stdout.close)
        lines = []
        for line in p.stdout:  # until a few messages are copied
            lines.append(line)
            if len(re.findall(r" copied to INBOX/", "".join(lines))) >= 5:
                break
        return p, lines

    def finish(self, p, lines):
        out = "".join(lines) + p.stdout.read()
        return p.wait(timeout=60), out

    def assert_whole_copies(self):
        """Every host2 message is byte-identical to a host1 message (no partial
        APPEND committed), and there is no duplicate."""
        src = {m for _, m in fetch("src", "INBOX")}
        dst = [m for _, m in fetch("dst", "INBOX")]
        self.assertEqual(len(dst), len(set(dst)))
        for m in dst:
            self.assertIn(m, src)
        return len(dst)

    def test_sigint_once_reconnects_and_goes_on(self):
        p, lines = self.start()
        p.send_signal(signal.SIGINT)
        rc, out = self.finish(p, lines)
        self.assert_ok(rc, out)
        self.assertIn("Got a signal INT (2): reconnecting to host1 and host2", out)
        self.assertEqual(1, stat(out, "Reconnections to host1"), out[-3000:])
        self.assertEqual(1, stat(out, "Reconnections to host2"))
        self.assertIn("The sync looks good", out)
        # the redone folder's earlier copies are neither skipped nor counted twice
        self.assertEqual(self.N, stat(out, "Messages transferred"))
        self.assertEqual(0, stat(out, "Messages skipped"))
        self.assertEqual(0, stat(out, "Total bytes skipped"))
        self.assertIn(f"all {self.N} identified messages in host2 are on host1", out)
        self.assertEqual(self.N, self.assert_whole_copies())
        self.assertEqual(ids("src", "INBOX"), ids("dst", "INBOX"))

    def test_sigint_twice_aborts_with_stats(self):
        p, lines = self.start()
        p.send_signal(signal.SIGINT)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        rc, out = self.finish(p, lines)
        self.assertEqual(6, rc, out[-3000:])
        self.assertIn("++++ Statistics", out)
        self.assertIn("Got signal INT (2), exiting", out)
        self.assertIn("Exiting with return value 6", out)
        copied = self.assert_whole_copies()
        self.assertLess(copied, self.N)
        # a re-run copies the rest, once
        rc, out = run_sync("src", "dst", "--nostate")
        self.assert_ok(rc, out)
        self.assertEqual(self.N - copied, stat(out, "Messages transferred"), out[-3000:])
        self.assertEqual(self.N, self.assert_whole_copies())

    def test_sigterm_and_sigquit_exit_with_stats(self):
        for sig, name in ((signal.SIGTERM, "TERM"), (signal.SIGQUIT, "QUIT")):
            with self.subTest(signal=name):
                wipe("src")
                wipe("dst")
                p, lines = self.start()
                p.send_signal(sig)
                rc, out = self.finish(p, lines)
                self.assertEqual(6, rc, out[-3000:])
                self.assertIn(f"Got signal {name} ({int(sig)}), exiting", out)
                self.assertIn("++++ Statistics", out)
                self.assertLess(self.assert_whole_copies(), self.N)
        rc, out = run_sync("src", "dst", "--nostate")
        self.assert_ok(rc, out)
        self.assertEqual(ids("src", "INBOX"), ids("dst", "INBOX"))

    def test_signal_options(self):
        # --sigignore INT: Ctrl-C does nothing; --sigexit USR1 ends the run
        p, lines = self.start("--sigignore", "INT", "--sigexit", "USR1")
        p.send_signal(signal.SIGINT)
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        time.sleep(0.3)
        self.assertIsNone(p.poll())
        p.send_signal(signal.SIGUSR1)
        rc, out = self.finish(p, lines)
        self.assertEqual(6, rc, out[-3000:])
        self.assertIn("Got signal USR1 (10), exiting", out)
        self.assertNotIn("Got a signal INT", out)
        # --sigexit replaces the default list: TERM then kills (no handler)
        wipe("src")
        p, lines = self.start("--sigexit", "USR1", "--sigreconnect", "HUP")
        p.send_signal(signal.SIGHUP)
        p.send_signal(signal.SIGTERM)
        rc, out = self.finish(p, lines)
        self.assertEqual(-signal.SIGTERM, rc, out[-3000:])

    def test_bad_signal_name(self):
        rc, out = run_sync("src", "dst", "--sigexit", "NOPE")
        self.assertEqual(64, rc, out[-3000:])
        self.assertIn("--sigexit NOPE: unknown signal", out)
        rc, out = run_sync("src", "dst", "--sigignore", "KILL")
        self.assertEqual(64, rc, out[-3000:])
        self.assertIn("this signal cannot be caught", out)


def getacl(server, folder):
    imap = server.imap()
    try:
        typ, data = imap.getacl(fh.mailbox_arg(folder))
        fh.imap_check((typ, data), "GETACL")
        words = data[0].decode().split()[1:]
        return dict(zip(words[0::2], words[1::2]))
    finally:
        imap.logout()


class Acls(unittest.TestCase):
    """--syncacls between two private Dovecots with the ACL plugins."""

    @classmethod
    def setUpClass(cls):
        cls.h1 = PrivateDovecot("src", acl=True)
        cls.h2 = PrivateDovecot("dst", acl=True)

    @classmethod
    def tearDownClass(cls):
        cls.h1.stop()
        cls.h2.stop()

    def run_acl(self, *extra):
        cmd = base_cmd("--host1", "127.0.0.1", "--port1", str(self.h1.imaps_port), "--ssl1",
                       "--host2", "127.0.0.1", "--port2", str(self.h2.imaps_port), "--ssl2",
                       "--nostate", *extra)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=WORKDIR)
        return p.returncode, p.stdout + p.stderr

    def test_syncacls(self):
        imap = self.h1.imap()
        try:
            imap.create("Shared")
            fh.imap_check(imap.setacl("Shared", "kate", "lrswi"), "SETACL")
            fh.imap_check(imap.setacl("Shared", "frank", "lr"), "SETACL")
            fh.imap_check(imap.append("Shared", None, None, message("acl", 0)), "APPEND")
            typ, caps = imap.capability()
        finally:
            imap.logout()
        self.assertIn(b" ACL ", caps[0] + b" ")
        before = getacl(self.h2, "INBOX")
        # --dry says what it would set, sets nothing
        rc, out = self.run_acl("--syncacls", "--dry")
        self.assertEqual(0, rc, out[-3000:])
        self.assertRegex(out,
                         r"Host2: SETACL Shared kate [lrswi]{5} \(not really since --dry mode\)")
        # without --syncacls nothing is set
        rc, out = self.run_acl()
        self.assertEqual(0, rc, out[-3000:])
        self.assertNotIn("kate", getacl(self.h2, "Shared"))
        rc, out = self.run_acl("--syncacls")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn('--syncacls: host2 knows the rights "lrswipcdatexk"', out)
        acl2 = getacl(self.h2, "Shared")
        self.assertEqual(set("lrswi"), set(acl2.get("kate", "")), acl2)
        self.assertEqual(set("lr"), set(acl2.get("frank", "")), acl2)
        self.assertEqual(before, getacl(self.h2, "INBOX"))  # the owner's rights unchanged
        self.assertIn("--syncacls: 2 ACL entries set on host2", out)
        # a re-run finds them equal
        rc, out = self.run_acl("--syncacls")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("--syncacls: 0 ACL entries set on host2", out)
        # a change on host1 follows; host2's own entries stay
        imap = self.h2.imap()
        try:
            fh.imap_check(imap.setacl("Shared", "erin", "l"), "SETACL")
        finally:
            imap.logout()
        imap = self.h1.imap()
        try:
            fh.imap_check(imap.setacl("Shared", "kate", "lr"), "SETACL")
        finally:
            imap.logout()
        rc, out = self.run_acl("--syncacls")
        self.assertEqual(0, rc, out[-3000:])
        acl2 = getacl(self.h2, "Shared")
        self.assertEqual(set("lr"), set(acl2.get("kate", "")), acl2)
        self.assertEqual("l", acl2.get("erin"), acl2)

    def test_no_acl_capability(self):
        rc, out = run_sync("src", "dst", "--syncacls", "--nostate", "--folder", "INBOX",
                           "--debugimap2")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("--syncacls: host1 has no ACL capability (RFC 4314): ACLs not synced", out)
        self.assertNotRegex(out, r"C: \S+ (GET|SET)ACL")


class Labels(Base):
    """Dovecot has no X-GM-EXT-1: labels are turned off, nothing is asked."""

    def test_synclabels_off_without_gmail(self):
        put("src", "INBOX", [message("l", 0)])
        rc, out = run_sync("src", "dst", "--synclabels", "--resynclabels", "--debugimap")
        self.assert_ok(rc, out)
        self.assertIn("Info: --synclabels/--resynclabels turned off: host1 and host2 do not "
                      "announce X-GM-EXT-1", out)
        self.assertNotIn("X-GM-LABELS", out.replace("X-GM-LABELS would fail", ""))
        self.assertEqual(["l-0@presets.example"], ids("dst", "INBOX"))

    def test_gmail1_gmail2_preset_turns_labels_on_but_not_here(self):
        put("gmail", "INBOX", [message("l", 1)], flags="(\\Flagged)")
        cmd = [SYNC, "--gmail1", "--gmail2",
               "--host1", "127.0.0.1", "--port1", str(GMAIL.imaps_port),
               "--host2", "127.0.0.1", "--port2", str(GMAIL.imaps_port),
               "--user1", USER, "--password1", ENV.password(USER),
               "--user2", "kate", "--password2", ENV.password("kate"),
               "--sslargs1", "SSL_ca_file=" + ENV.ca_file,
               "--sslargs2", "SSL_ca_file=" + ENV.ca_file,
               "--nolog", "--nofoldersizes", "--nostate",
               "--pidfile", os.path.join(WORKDIR, "sync.pid"), "--tmpdir", WORKDIR]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=WORKDIR)
        out = p.stdout + p.stderr
        self.assert_ok(p.returncode, out)
        self.assertIn("Preset --gmail1 --gmail2: host1 and host2 imap.gmail.com with SSL", out)
        self.assertIn("--synclabels 1 --resynclabels 1", out)
        self.assertIn("--synclabels/--resynclabels turned off: host1 and host2 do not announce "
                      "X-GM-EXT-1", out)
        imap = GMAIL.imap("kate")
        try:
            imap.select("INBOX", readonly=True)
            typ, data = imap.search(None, "ALL")
            self.assertEqual(1, len(data[0].split()))
            imap.close()
            # tidy kate's mailbox on the private server
            imap.select("INBOX")
            imap.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
            imap.expunge()
        finally:
            imap.logout()


class LineLengthAndSearch(Base):

    def test_maxlinelengthcmd(self):
        put("src", "INBOX", [message("ll", 0, extra_headers="X-Long: " + "y" * 3000 + "\r\n"),
                             message("ll", 1)])
        cmd = "sed -e 's/^X-Long: .*/X-Long: cut\\r/'"
        rc, out = run_sync("src", "dst", "--maxlinelength", "1000", "--maxlinelengthcmd", cmd)
        self.assert_ok(rc, out)
        self.assertIn("a line of 3008 bytes is over --maxlinelength 1000: rewritten by "
                      "--maxlinelengthcmd", out)
        self.assertEqual(2, stat(out, "Messages transferred"), out[-3000:])
        got = sorted(m for _, m in fetch("dst", "INBOX"))
        self.assertIn(b"\r\nX-Long: cut\r\n", got[0])
        self.assertNotIn(b"yyyy", got[0] + got[1])
        # the rewritten copy keeps its Message-ID: a re-run copies nothing
        rc, out = run_sync("src", "dst", "--maxlinelength", "1000", "--maxlinelengthcmd", cmd,
                           "--nostate")
        self.assert_ok(rc, out)
        self.assertEqual(0, stat(out, "Messages transferred"), out[-3000:])
        # a command that fails on the start-up check: exit 64 before connecting
        rc, out = run_sync("src", "dst", "--maxlinelength", "1000", "--maxlinelengthcmd", "false")
        self.assertEqual(64, rc, out[-3000:])
        self.assertIn('--maxlinelengthcmd "false" ended with exit code 1 when given a one-space '
                      'message', out)

    def test_checknoabletosearch(self):
        put("src", "INBOX", [message("cs", 0)])
        rc, out = run_sync("src", "dst", "--maxage", "36500", "--debugimap", "--nostate")
        self.assert_ok(rc, out)
        self.assertRegex(out, r"\[host1\] C: \S+ UID SEARCH ALL")
        self.assertRegex(out, r"\[host2\] C: \S+ UID SEARCH ALL")
        self.assertNotIn("can not SEARCH ALL", out)  # Dovecot searches fine
        self.assertEqual(1, stat(out, "Messages transferred"))
        rc, out = run_sync("src", "dst", "--maxage", "36500", "--debugimap", "--nostate",
                           "--nochecknoabletosearch")
        self.assert_ok(rc, out)
        self.assertNotRegex(out, r"C: \S+ UID SEARCH ALL")
        rc, out = run_sync("src", "dst", "--debugimap", "--nostate")  # no age: no check
        self.assert_ok(rc, out)
        self.assertNotRegex(out, r"C: \S+ UID SEARCH ALL")


if __name__ == "__main__":
    unittest.main(verbosity=2)
