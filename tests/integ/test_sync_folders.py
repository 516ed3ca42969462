#!/usr/bin/env python3
"""imapferry-sync's folder plan against the harness's two Dovecots
(docs/imapsync-behaviour.md section 4): --folder with --folderrec,
--include/--exclude, --regextrans2 renaming (and a re-run that copies 0),
--subscribed, --skipemptyfolders, --justfolders, --automap onto host2's
\\Sent folder, and a bad --regextrans2 refused with exit 64 before any
connection.

src uses the separator ".", dst "/". Uses user carol only, wiped on both
sides before each test (other tests use alice and bob). Needs
FERRY_ENV_DIR (the ctest fixture) and FERRY_SYNC (the binary).
"""

import atexit
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import ferry_harness as fh

USER = "carol"
ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-sync-folders-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)


def run_sync(*extra, timeout=300):
    cmd = [SYNC,
           "--host1", "127.0.0.1", "--port1", str(ENV.port("src", "imap")),
           "--user1", USER, "--password1", ENV.password(USER),
           "--host2", "127.0.0.1", "--port2", str(ENV.port("dst", "imap")),
           "--user2", USER, "--password2", ENV.password(USER),
           "--nolog", "--pidfile", os.path.join(WORKDIR, "sync.pid"), "--tmpdir", WORKDIR,
           "--sslargs1", "SSL_ca_file=" + ENV.ca_file,
           "--sslargs2", "SSL_ca_file=" + ENV.ca_file] + list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=WORKDIR)
    return p.returncode, p.stdout + p.stderr


def stat(out, label):
    m = re.search(r"^" + re.escape(label) + r"\s*: (\d+)", out, re.M)
    return int(m.group(1)) if m else None


def message(folder, i):
    return (f"From: sender@example.net\r\nTo: {USER}@example.org\r\n"
            f"Subject: {folder} message {i}\r\n"
            f"Message-Id: <folders-{folder.replace(' ', '_')}-{i}@example.net>\r\n"
            f"Date: Mon, 6 Jan 2025 10:{i:02d}:00 +0000\r\n\r\n"
            f"Body {i} of {folder}.\r\n").encode()


def make(side, folders, subscribe=()):
    """Create folders {name: number of messages} on side (names use the
    side's separator), each with its own messages; subscribe some."""
    imap = ENV.imap(side, USER)
    try:
        existing = fh.list_folders(imap)
        for name, n in folders.items():
            if name not in existing:
                fh.imap_check(imap.create(fh.mailbox_arg(name)), f"CREATE {name}")
            for i in range(n):
                fh.imap_check(imap.append(fh.mailbox_arg(name), None, None,
                                          message(name, i)), f"APPEND {name}")
        for name in subscribe:
            fh.imap_check(imap.subscribe(fh.mailbox_arg(name)), f"SUBSCRIBE {name}")
    finally:
        imap.logout()


def folders(side):
    imap = ENV.imap(side, USER)
    try:
        return fh.list_folders(imap)
    finally:
        imap.logout()


def subscribed(side):
    imap = ENV.imap(side, USER)
    try:
        return fh.list_subscribed(imap)
    finally:
        imap.logout()


def count(side, name):
    """Messages in a folder (STATUS), None when it does not exist."""
    imap = ENV.imap(side, USER)
    try:
        typ, data = imap.status(fh.mailbox_arg(name), "(MESSAGES)")
        if typ != "OK":
            return None
        return int(re.search(rb"MESSAGES (\d+)", data[0]).group(1))
    finally:
        imap.logout()


# dst holds these after a wipe (INBOX and Dovecot's special-use folders)
DST_BASE = {"INBOX", "Drafts", "Junk", "Sent", "Trash"}


class SyncFolders(unittest.TestCase):

    def setUp(self):
        fh.wipe(ENV, "src", USER)
        fh.wipe(ENV, "dst", USER)

    def assert_ok(self, rc, out):
        self.assertEqual(0, rc, out[-4000:])
        self.assertIn("Detected 0 errors", out)

    def test_folder_and_folderrec(self):
        make("src", {"A": 1, "A.x": 2, "A.x.y": 1, "AB": 1, "B": 3, "B.z": 1})
        rc, out = run_sync("--folder", "B", "--folderrec", "A")
        self.assert_ok(rc, out)
        self.assertEqual(DST_BASE | {"A", "A/x", "A/x/y", "B"}, set(folders("dst")))
        self.assertEqual(2, count("dst", "A/x"))
        self.assertEqual(3, count("dst", "B"))
        self.assertEqual(7, stat(out, "Messages transferred"))
        self.assertIn("++++ Looping on each one of 4 folders to sync", out)
        # a missing --folder is dropped (checkfoldersexist)
        rc, out = run_sync("--folder", "Nope", "--folder", "B")
        self.assert_ok(rc, out)
        self.assertIn("Host1: warning! ignoring folder Nope because it is not in host1 "
                      "whole folders list.", out)

    def test_include_exclude(self):
        make("src", {"Projects": 1, "Projects.2024": 1, "Projects.2025": 1, "Private": 1,
                     "Other": 1, "INBOX": 1})
        rc, out = run_sync("--include", "^Pr", "--include", "^Other$",
                           "--exclude", "2024", "--exclude", "^Oth")
        self.assert_ok(rc, out)
        self.assertEqual(DST_BASE | {"Projects", "Projects/2025", "Private"},
                         set(folders("dst")))
        self.assertEqual(0, count("dst", "INBOX"))  # --include alone: only the matches
        self.assertIn("Including folders matching pattern ^Pr", out)
        self.assertIn("Excluding folders matching pattern 2024\n[Projects.2024]\n", out)
        self.assertEqual(3, stat(out, "Messages transferred"))

    def test_regextrans2_rename_and_rerun(self):
        make("src", {"Old": 1, "Old.Stuff": 3, "Keep": 2})
        # applied in order on the host2 name (separator "/" already)
        rename = ["--regextrans2", "s,^Old(/|$),New$1,", "--regextrans2", "s{^New}{Newer}"]
        rc, out = run_sync("--folderrec", "Old", "--folder", "Keep", *rename)
        self.assert_ok(rc, out)
        self.assertEqual(DST_BASE | {"Newer", "Newer/Stuff", "Keep"}, set(folders("dst")))
        self.assertEqual(3, count("dst", "Newer/Stuff"))
        self.assertEqual(6, stat(out, "Messages transferred"))
        self.assertRegex(out, r"Folder +\d+/3 \[Old\.Stuff\] +-> \[Newer/Stuff\]")
        rc, out = run_sync("--folderrec", "Old", "--folder", "Keep", *rename)
        self.assert_ok(rc, out)
        self.assertEqual(0, stat(out, "Messages transferred"))
        self.assertEqual(3, count("dst", "Newer/Stuff"))  # no duplicates
        self.assertNotIn("Creating folder", out)

    def test_subscribed(self):
        make("src", {"S1": 1, "S1.child": 1, "S2": 1}, subscribe=["S1"])
        rc, out = run_sync("--subscribed")
        self.assert_ok(rc, out)
        dst = set(folders("dst"))
        self.assertIn("S1", dst)
        self.assertNotIn("S2", dst)
        self.assertNotIn("S1/child", dst)
        self.assertIn("S1", subscribed("dst"))  # --subscribe is on by default
        self.assertIn("Host2: Subscribing to folder S1", out)

    def test_skipemptyfolders(self):
        make("src", {"Full": 2, "Empty": 0})
        rc, out = run_sync("--folder", "Full", "--folder", "Empty", "--skipemptyfolders")
        self.assert_ok(rc, out)
        self.assertIn("Host1: skipping empty host1 folder [Empty]", out)
        dst = set(folders("dst"))
        self.assertIn("Full", dst)
        self.assertNotIn("Empty", dst)
        self.assertEqual(2, count("dst", "Full"))
        # without the option the empty folder is created
        rc, out = run_sync("--folder", "Empty")
        self.assert_ok(rc, out)
        self.assertIn("Empty", set(folders("dst")))

    def test_justfolders(self):
        make("src", {"J1": 2, "J1.J2": 1, "J3": 1})
        rc, out = run_sync("--justfolders", "--folderrec", "J1")
        self.assert_ok(rc, out)
        self.assertEqual(DST_BASE | {"J1", "J1/J2"}, set(folders("dst")))
        self.assertEqual(0, count("dst", "J1"))
        self.assertEqual(0, count("dst", "J1/J2"))
        self.assertEqual(0, stat(out, "Messages transferred"))

    def test_automap_sent_items(self):
        make("src", {"Sent Items": 2, "Sent Items.2019": 1})
        self.assertNotIn("\\Sent", folders("src")["Sent Items"][1])
        rc, out = run_sync("--automap", "--folderrec", "Sent Items")
        self.assert_ok(rc, out)
        self.assertIn("Turned on automapping folders", out)
        self.assertRegex(out, r"\[Sent Items\] +-> \[Sent\]")
        self.assertIn("\\Sent", folders("dst")["Sent"][1])  # host2's special-use folder
        self.assertEqual(2, count("dst", "Sent"))
        # only the special folder is mapped, not its subfolders (#73); as
        # imapsync does, the subfolder's parent is created, and stays empty
        self.assertEqual(1, count("dst", "Sent Items/2019"))
        self.assertEqual(0, count("dst", "Sent Items"))

    def test_bad_regextrans2(self):
        rc, out = run_sync("--regextrans2", "s/(/x/")
        self.assertEqual(64, rc, out[-4000:])
        self.assertIn('--regextrans2 "s/(/x/": missing closing parenthesis at offset 1 of '
                      'pattern "("', out)
        self.assertNotIn("Host1: connecting", out)  # checked before any connection
        rc, out = run_sync("--include", "a(")
        self.assertEqual(64, rc, out[-4000:])
        self.assertIn('--include "a(": missing closing parenthesis at offset 2', out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
