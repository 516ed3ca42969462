#!/usr/bin/env python3
"""imapferry-sync's issue 8 options against the harness's Dovecots: deletion
(--delete2 in a full and an incremental pass, its --maxdelete2 cap and
--forcedelete2, nothing deleted when host1 fails, --delete1, --dry,
--delete2folders, --delete1emptyfolders), message selection and transforms.

Uses user heidi on both sides (other tests use alice, bob, carol, dave, erin, frank). Needs
FERRY_ENV_DIR (the ctest fixture) and FERRY_SYNC (the binary).
"""

import atexit
import email.utils
import glob
import imaplib
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import ferry_harness as fh

USER = "heidi"
ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-issue8-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)


def sync_cmd(*extra):
    return [SYNC,
            "--host1", "127.0.0.1", "--port1", str(ENV.port("src", "imap")),
            "--user1", USER, "--password1", ENV.password(USER),
            "--host2", "127.0.0.1", "--port2", str(ENV.port("dst", "imap")),
            "--user2", USER, "--password2", ENV.password(USER),
            "--sslargs1", "SSL_ca_file=" + ENV.ca_file, "--sslargs2", "SSL_ca_file=" + ENV.ca_file,
            "--nolog", "--nofoldersizes",
            "--pidfile", os.path.join(WORKDIR, "sync.pid"), "--tmpdir", WORKDIR] + list(extra)


def run_sync(*extra):
    p = subprocess.run(sync_cmd(*extra), capture_output=True, text=True, timeout=300,
                       cwd=WORKDIR)
    return p.returncode, p.stdout + p.stderr


def stat(out, label):
    m = re.search(r"^" + re.escape(label) + r"\s*: (\d+)", out, re.M)
    return int(m.group(1)) if m else None


def message(tag, n, body="hello\r\n", extra_headers="", date="Mon, 02 Jan 2023 10:00:00 +0000"):
    return (f"From: a@example.org\r\nTo: {USER}@example.org\r\nSubject: {tag} {n}\r\n"
            f"Date: {date}\r\nMessage-ID: <{tag}-{n}@issue8.example>\r\n{extra_headers}\r\n"
            f"{body}").encode()


def days_ago(days):
    return email.utils.formatdate(time.time() - days * 86400)


def put(side, folder, tag, count, idate=None, **kw):
    """Appends count messages <tag-i@issue8.example> to folder on side
    (INTERNALDATE idate days ago, default now)."""
    imap = ENV.imap(side, USER)
    try:
        name = fh.mailbox_arg(folder)
        if folder.upper() != "INBOX" and folder not in fh.list_folders(imap):
            fh.imap_check(imap.create(name), f"CREATE {folder}")
        when = None if idate is None else imaplib.Time2Internaldate(time.time() - idate * 86400)
        for i in range(count):
            fh.imap_check(imap.append(name, None, when, message(tag, i, **kw)), "APPEND")
    finally:
        imap.logout()


def ids(side, folder):
    """The Message-IDs in folder on side (a sorted list), None if no folder."""
    imap = ENV.imap(side, USER)
    try:
        typ, _ = imap.select(fh.mailbox_arg(folder), readonly=True)
        if typ != "OK":
            return None
        typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        out = []
        for item in data:
            if isinstance(item, tuple):
                m = re.search(rb"<([^>]+)>", item[1])
                out.append(m.group(1).decode() if m else "?")
        return sorted(out)
    finally:
        imap.logout()


def bodies(side, folder):
    imap = ENV.imap(side, USER)
    try:
        imap.select(fh.mailbox_arg(folder), readonly=True)
        typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
        return [item[1] for item in data if isinstance(item, tuple)]
    finally:
        imap.logout()


def expunge(side, folder, which):
    """Deletes the messages whose Message-ID is in which."""
    imap = ENV.imap(side, USER)
    try:
        fh.imap_check(imap.select(fh.mailbox_arg(folder)), "SELECT")
        for mid in which:
            typ, data = imap.uid("SEARCH", "HEADER", "Message-ID", mid)
            for uid in data[0].split():
                imap.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
        imap.expunge()
    finally:
        imap.logout()


def folders(side):
    imap = ENV.imap(side, USER)
    try:
        return set(fh.list_folders(imap))
    finally:
        imap.logout()


def mail_path(side, *parts):
    key = "FERRY_SRC_MAIL_DIR" if side == "src" else "FERRY_DST_MAIL_DIR"
    return os.path.join(ENV.values[key], USER, *parts)


def wipe(side):
    """fh.wipe(), after deleting the nested folders first: a maildir++ parent
    that only exists through its child is gone once the child is."""
    imap = ENV.imap(side, USER)
    try:
        sep = fh.hierarchy_separator(imap)
        for name in sorted(fh.list_folders(imap), key=lambda n: -n.count(sep)):
            if sep in name:
                imap.delete(fh.mailbox_arg(name))  # may be gone already
    finally:
        imap.logout()
    fh.wipe(ENV, side, USER)


class Base(unittest.TestCase):

    def setUp(self):
        wipe("src")
        wipe("dst")
        for f in os.listdir(WORKDIR):  # no state from an earlier test
            p = os.path.join(WORKDIR, f)
            if os.path.isdir(p):
                shutil.rmtree(p)

    def first_sync(self, *extra):
        rc, out = run_sync(*extra)
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(ids("src", "INBOX"), ids("dst", "INBOX"))
        return out


class Deletion(Base):

    def test_delete2_full_pass_deletes_exactly_the_removed(self):
        put("src", "INBOX", "a", 10)
        self.first_sync("--nostate")
        put("dst", "INBOX", "only2", 1)  # on host2 only: goes too
        gone = [f"a-{i}@issue8.example" for i in (2, 5, 7)]
        expunge("src", "INBOX", gone)
        rc, out = run_sync("--nostate", "--delete2")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(ids("src", "INBOX"), ids("dst", "INBOX"))
        self.assertEqual(4, stat(out, "Messages deleted on host2"), out[-3000:])
        self.assertEqual(4, len(re.findall(r"marked \\Deleted on host2", out)))
        self.assertIn("The sync is strict", out)
        rc, out = run_sync("--nostate", "--delete2")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(0, stat(out, "Messages deleted on host2"))

    def test_delete2_incremental_pass_uses_the_map(self):
        put("src", "INBOX", "b", 10)
        self.first_sync()
        gone = [f"b-{i}@issue8.example" for i in (0, 9)]
        expunge("src", "INBOX", gone)
        rc, out = run_sync("--delete2", "--debugimap2")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("incremental pass", out)
        self.assertRegex(out, r"C: \S+ UID EXPUNGE \d+[,:]\d+")
        self.assertEqual(2, stat(out, "Messages deleted on host2"), out[-3000:])
        self.assertEqual(ids("src", "INBOX"), ids("dst", "INBOX"))
        self.assertEqual(8, len(ids("dst", "INBOX")))

    def test_delete2_incremental_mirrors_reported_expunges_without_cap(self):
        # QRESYNC names the expunged UIDs: a user emptying most of a folder
        # is mirrored at once (a live replica must follow), no cap
        put("src", "INBOX", "e", 10)
        self.first_sync()
        expunge("src", "INBOX", [f"e-{i}@issue8.example" for i in range(8)])
        rc, out = run_sync("--delete2")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("incremental pass", out)
        self.assertNotIn("--maxdelete2", out)
        self.assertEqual(8, stat(out, "Messages deleted on host2"), out[-3000:])
        self.assertEqual(ids("src", "INBOX"), ids("dst", "INBOX"))

    def test_delete2_cap_refuses_and_force_overrides(self):
        put("src", "INBOX", "c", 10)
        self.first_sync()
        expunge("src", "INBOX", [f"c-{i}@issue8.example" for i in range(6)])
        # a full pass infers deletions from what host1 lacks: refused (6 of 10
        # > 50%), said, nothing deleted
        rc, out = run_sync("--delete2", "--nostate")
        self.assertNotEqual(0, rc, out[-3000:])
        self.assertNotIn("incremental pass", out)
        self.assertIn("--delete2 would delete 6 of its 10 messages", out)
        self.assertIn("more than --maxdelete2 50%", out)
        self.assertIn("--forcedelete2", out)
        self.assertEqual(0, stat(out, "Messages deleted on host2"))
        self.assertEqual(10, len(ids("dst", "INBOX")))
        # a higher cap, or --forcedelete2, lets it through
        rc, out = run_sync("--delete2", "--maxdelete2", "60", "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(6, stat(out, "Messages deleted on host2"))
        self.assertEqual(ids("src", "INBOX"), ids("dst", "INBOX"))
        expunge("src", "INBOX", [f"c-{i}@issue8.example" for i in range(6, 10)])
        rc, out = run_sync("--delete2", "--force-delete2", "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual([], ids("dst", "INBOX"))

    def test_delete2_deletes_nothing_when_host1_fails(self):
        """host1 dies in the middle of the folder's listing (a message file it
        cannot read: Dovecot answers the first FETCH items, then BYE): the
        partial list must not look like "the rest is gone"."""
        put("src", "INBOX", "d", 4)
        put("src", "Work", "w", 6)
        self.first_sync("--nostate")
        expunge("src", "INBOX", ["d-3@issue8.example"])  # a real removal
        expunge("src", "Work", ["w-0@issue8.example", "w-1@issue8.example"])
        path = mail_path("src", ".Work")
        for cache in glob.glob(os.path.join(path, "dovecot.index.cache")):
            os.unlink(cache)  # headers must come from the files
        victim = sorted(glob.glob(os.path.join(path, "cur", "*")))[1]
        os.chmod(victim, 0)
        try:
            rc, out = run_sync("--nostate", "--delete2", "--forcedelete2")
        finally:
            os.chmod(victim, 0o600)
        self.assertEqual(101, rc, out[-3000:])
        self.assertIn("FETCH failed", out)
        self.assertEqual(1, stat(out, "Messages deleted on host2"), out[-3000:])
        self.assertEqual(3, len(ids("dst", "INBOX")))
        self.assertEqual(6, len(ids("dst", "Work")))  # nothing deleted there

    def test_delete2_with_dry_deletes_nothing(self):
        put("src", "INBOX", "e", 5)
        self.first_sync()
        expunge("src", "INBOX", ["e-1@issue8.example"])
        rc, out = run_sync("--delete2", "--dry")
        self.assertEqual(0, rc, out[-3000:])
        self.assertRegex(out, r"Host2: msg INBOX/\d+ marked \\Deleted on host2 \[.*\]"
                              r"\t\(not really since --dry mode\)")
        self.assertEqual(5, len(ids("dst", "INBOX")))

    def test_delete1_leaves_only_what_failed(self):
        put("src", "INBOX", "f", 5)
        put("src", "Keep", "k", 3)
        put("dst", "INBOX", "f", 2)  # f-0, f-1 already there: deleted without a copy
        put("dst", "Keep", "x", 1)
        os.chmod(mail_path("dst", "Keep"), 0o500)  # host2 refuses APPENDs to Keep
        try:
            rc, out = run_sync("--delete1", "--nostate", "--debugimap1")
        finally:
            os.chmod(mail_path("dst", "Keep"), 0o700)
        self.assertEqual(114, rc, out[-3000:])
        # each copy confirmed by APPENDUID goes at once, by its UID only
        self.assertEqual(3, len(re.findall(r"\[host1\] C: \S+ UID EXPUNGE \d+$", out, re.M)))
        self.assertNotRegex(out, r"\[host1\] C: \S+ EXPUNGE")
        self.assertEqual([], ids("src", "INBOX"))
        self.assertEqual(3, len(ids("src", "Keep")))
        self.assertEqual(5, stat(out, "Messages deleted on host1"))
        self.assertEqual(5, len(ids("dst", "INBOX")))
        # --noexpungeaftereach: one batch at the end of the folder
        put("src", "INBOX", "g", 3)
        rc, out = run_sync("--delete1", "--noexpungeaftereach", "--nostate", "--folder", "INBOX",
                           "--debugimap1")
        self.assertEqual(0, rc, out[-3000:])
        self.assertRegex(out, r"(?m)\[host1\] C: \S+ UID EXPUNGE \d+:\d+$")
        self.assertEqual([], ids("src", "INBOX"))
        self.assertEqual(8, len(ids("dst", "INBOX")))

    def test_delete1_dry_and_emptyfolders(self):
        put("src", "INBOX", "h", 2)
        put("src", "Old", "o", 2)
        rc, out = run_sync("--nostate")
        self.assertEqual(0, rc, out[-3000:])
        rc, out = run_sync("--delete1", "--dry", "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        self.assertRegex(out, r"Host1: msg Old/\d+ marked \\Deleted on host1"
                              r"\t\(not really since --dry mode\)")
        self.assertEqual(2, len(ids("src", "Old")))
        rc, out = run_sync("--delete1", "--delete1emptyfolders", "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("Host1: deleting empty folder [Old]", out)
        self.assertNotIn("Old", folders("src"))
        self.assertIn("INBOX", folders("src"))
        self.assertEqual([], ids("src", "INBOX"))
        self.assertEqual(2, len(ids("dst", "Old")))

    def test_delete2folders(self):
        put("src", "INBOX", "i", 1)
        put("src", "Lists.Dev", "l", 1)
        put("dst", "Extra/Sub", "x", 1)
        put("dst", "Tasks", "t", 1)
        put("dst", "Junk2", "j", 1)
        rc, out = run_sync("--delete2folders", "--dry", "--justfolders")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("Deleting folder [Extra/Sub] in host2 because it is not in host1"
                      "\t(not really since --dry mode)", out)
        self.assertIn("Extra/Sub", folders("dst"))
        rc, out = run_sync("--delete2foldersbutnot", "/^Tasks$/")
        self.assertEqual(0, rc, out[-3000:])
        left = folders("dst")
        self.assertNotIn("Extra/Sub", left)
        self.assertNotIn("Extra", left)
        self.assertNotIn("Junk2", left)
        self.assertIn("Tasks", left)
        self.assertIn("Lists/Dev", left)
        self.assertIn("Lists", left)  # a parent of a synced folder
        self.assertIn("INBOX", left)
        rc, out = run_sync("--delete2foldersonly", "/^tasks$/i")
        self.assertEqual(0, rc, out[-3000:])
        self.assertNotIn("Tasks", folders("dst"))
        self.assertIn("INBOX", folders("dst"))

    def test_bad_usage_exits_64(self):
        rc, out = run_sync("--delete1", "--delete2")
        self.assertEqual(64, rc, out)
        self.assertIn("--delete1 and --delete2 together", out)
        rc, out = run_sync("--delete2foldersonly", "/(/")
        self.assertEqual(64, rc, out)
        self.assertIn("offset", out)
        rc, out = run_sync("--delete2", "--maxdelete2", "150")
        self.assertEqual(64, rc, out)



class Selection(Base):

    def ages(self):
        put("src", "INBOX", "r", 2, date=days_ago(2))      # recent
        put("src", "INBOX", "o", 2, date=days_ago(400))    # old
        # old Date: header, arrived now: only --noabletosearch sees it as new
        put("src", "INBOX", "m", 1, date=days_ago(400))

    def tags(self, side="dst", folder="INBOX"):
        return sorted({i.split("-")[0] for i in ids(side, folder)})

    def test_maxage_and_delete2_stay_in_the_window(self):
        self.ages()
        put("dst", "INBOX", "x", 1, date=days_ago(500))  # host2 only, outside the window
        put("dst", "INBOX", "y", 1, date=days_ago(1))    # host2 only, inside
        rc, out = run_sync("--maxage", "30", "--delete2", "--forcedelete2", "--nostate",
                           "--debugimap1")
        self.assertEqual(0, rc, out[-3000:])
        self.assertRegex(out, r"UID SEARCH SENTSINCE \d\d-[A-Z][a-z]{2}-\d{4}")
        self.assertEqual(["r", "x"], self.tags())
        self.assertEqual(1, stat(out, "Messages deleted on host2"))

    def test_minage_and_the_union_intersection_rule(self):
        self.ages()
        rc, out = run_sync("--minage", "30", "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(["m", "o"], self.tags())
        wipe("dst")
        # minage <= maxage: between 1 and 30 days old
        rc, out = run_sync("--maxage", "30", "--minage", "1", "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(["r"], self.tags())
        wipe("dst")
        # minage > maxage: newer than 1 day or older than 30
        rc, out = run_sync("--maxage", "1", "--minage", "30", "--nostate", "--debugimap1")
        self.assertEqual(0, rc, out[-3000:])
        self.assertRegex(out, r"UID SEARCH OR SENTSINCE \S+ SENTBEFORE \S+")
        self.assertEqual(["m", "o"], self.tags())

    def test_noabletosearch_uses_internaldate(self):
        self.ages()
        rc, out = run_sync("--maxage", "30", "--noabletosearch", "--nostate", "--debugimap1")
        self.assertEqual(0, rc, out[-3000:])
        self.assertNotIn("UID SEARCH", out)
        self.assertEqual(["m", "o", "r"], self.tags())  # all arrived now
        wipe("dst")
        wipe("src")
        put("src", "INBOX", "r", 1, idate=2)
        put("src", "INBOX", "o", 1, idate=400)
        rc, out = run_sync("--maxage", "30", "--noabletosearch1", "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(["r"], self.tags())

    def test_search_masks_maxage_loudly(self):
        self.ages()
        rc, out = run_sync("--search", "SUBJECT o", "--maxage", "30", "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("--maxage/--minage are IGNORED", out)
        self.assertEqual(["o"], self.tags())
        rc, out = run_sync("--search1", "NOT ALL BAD(", "--nostate")
        self.assertNotEqual(0, rc, out[-3000:])
        self.assertIn("UID SEARCH NOT ALL BAD( failed", out)

    def test_sizes_and_appendlimit(self):
        put("src", "INBOX", "s", 2)
        put("src", "INBOX", "b", 1, body=("x" * 70 + "\r\n") * 60)  # about 4.5 KB
        rc, out = run_sync("--maxsize", "3000", "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        self.assertRegex(out, r"msg INBOX/\d+ skipped \(\d+ exceeds maxsize limit 3000 bytes\)")
        self.assertEqual(["s"], self.tags())
        self.assertIn("The sync looks good", out)
        rc, out = run_sync("--appendlimit", "3000", "--nostate")
        self.assertIn("exceeds maxsize limit 3000 bytes", out)
        self.assertEqual(["s"], self.tags())
        rc, out = run_sync("--minsize", "3000", "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(["b", "s"], self.tags())

    def test_skipmess_and_line_lengths(self):
        put("src", "INBOX", "plain", 1)
        put("src", "INBOX", "secret", 1, body="the SECRET plan\r\n")
        put("src", "INBOX", "long", 1, body="y" * 1500 + "\r\n")
        rc, out = run_sync("--skipmess", "m/^the secret/mi", "--maxlinelength", "1000",
                           "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        self.assertRegex(out, r"- msg INBOX/\d+ \{\d+\} skipped by --skipmess")
        self.assertIn("is over --maxlinelength 1000", out)
        self.assertEqual(["plain"], self.tags())
        self.assertEqual(2, stat(out, "Messages skipped"))
        rc, out = run_sync("--minmaxlinelength", "1000", "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(["long", "plain"], self.tags())
        rc, out = run_sync("--skipmess", "m/(/")
        self.assertEqual(64, rc, out)



class Transforms(Base):

    def test_regexmess_then_rerun_finds_the_copy(self):
        put("src", "INBOX", "t", 3)
        rx = r"s/^Subject: (\w+)/X-Migrated: yes\r\nSubject: [moved] $1/mg"
        rc, out = run_sync("--regexmess", rx, "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        got = bodies("dst", "INBOX")
        self.assertEqual(3, len(got))
        for b in got:
            self.assertIn(b"X-Migrated: yes\r\nSubject: [moved] t ", b)
        for opt in ([], ["--regexmess", rx]):  # with or without it: identified
            rc, out = run_sync("--nostate", *opt)
            self.assertEqual(0, rc, out[-3000:])
            self.assertEqual(0, stat(out, "Messages transferred"))
        self.assertEqual(3, len(bodies("dst", "INBOX")))

    def test_pipemess_chain_and_failure(self):
        put("src", "INBOX", "p", 2)
        put("src", "INBOX", "q", 1, body="FAILME\r\n")
        chain = ["--pipemess", "sed 's/hello/HELLO/'",
                 "--pipemess", "awk '/FAILME/{exit 3} {print}'"]
        rc, out = run_sync("--nostate", *chain)
        self.assertEqual(111, rc, out[-3000:])
        self.assertRegex(out, r"Failure: --pipemess command \"awk .*\" ended with exit code 3")
        self.assertEqual(["p-0@issue8.example", "p-1@issue8.example"], ids("dst", "INBOX"))
        for b in bodies("dst", "INBOX"):
            self.assertIn(b"\r\n\r\nHELLO\r\n", b)
        rc, out = run_sync("--nostate", *chain)  # no duplicate, the failure again
        self.assertEqual(0, stat(out, "Messages transferred"))
        self.assertEqual(2, len(ids("dst", "INBOX")))
        rc, out = run_sync("--nostate", "--pipemess", "exit 1")
        self.assertEqual(64, rc, out)
        self.assertIn("one-space message", out)

    def test_truncmess_and_disarmreadreceipts(self):
        put("src", "INBOX", "u", 1, body="z" * 500 + "\r\n",
            extra_headers="Disposition-Notification-To: boss@example.org\r\n")
        rc, out = run_sync("--nostate", "--truncmess", "300", "--disarmreadreceipts")
        self.assertEqual(0, rc, out[-3000:])
        (b,) = bodies("dst", "INBOX")
        self.assertEqual(300, len(b))
        self.assertIn(b"\r\nX-Disposition-Notification-To: boss@example.org\r\n", b)

    def test_bad_regexmess_exits_64(self):
        rc, out = run_sync("--regexmess", "s/(/x/")
        self.assertEqual(64, rc, out)
        self.assertIn("--regexmess", out)
        self.assertIn("offset", out)



class Throttles(Base):

    def test_maxmessagespersecond_sleeps(self):
        put("src", "INBOX", "t", 12)
        t0 = time.monotonic()
        rc, out = run_sync("--nostate", "--maxmessagespersecond", "8")
        took = time.monotonic() - t0
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(12, stat(out, "Messages transferred"))
        self.assertRegex(out, r"(?m)^sleeping \d+\.\d\d s$")
        self.assertGreater(took, 12 / 8 - 0.5)  # paced: 12 messages at 8/s

    def test_maxbytespersecond_after_maxbytesafter_and_maxsleep(self):
        put("src", "INBOX", "b", 6, body="y" * 20000 + "\r\n")
        rc, out = run_sync("--nostate", "--maxbytespersecond", "20000",
                           "--maxbytesafter", "40000", "--maxsleep", "0.3")
        self.assertEqual(0, rc, out[-3000:])
        sleeps = [float(x) for x in re.findall(r"(?m)^sleeping (\d+\.\d+) s$", out)]
        self.assertTrue(sleeps, out[-3000:])
        self.assertLessEqual(max(sleeps), 0.3)

    def test_exitwhenover_118(self):
        put("src", "INBOX", "x", 20, body="w" * 3000 + "\r\n")
        rc, out = run_sync("--nostate", "--exitwhenover", "10000")
        self.assertEqual(118, rc, out[-3000:])
        self.assertRegex(out, r"Maximum bytes transferred reached, \d+ >= 10000, ending sync")
        self.assertLess(stat(out, "Messages transferred"), 20)
        rc, out = run_sync("--nostate")  # the rest, no duplicate
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(ids("src", "INBOX"), ids("dst", "INBOX"))

    def test_abort_stops_the_running_sync(self):
        put("src", "INBOX", "s", 40)
        p = subprocess.Popen(sync_cmd("--nostate", "--maxmessagespersecond", "5"),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             cwd=WORKDIR)
        try:
            deadline = time.monotonic() + 20
            while not os.path.exists(os.path.join(WORKDIR, "sync.pid")):
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.05)
            time.sleep(1.0)  # copying, throttled
            rc, out = run_sync("--abort")
            self.assertEqual(0, rc, out)
            self.assertRegex(out, r"--abort: sending QUIT to PID \d+")
            self.assertRegex(out, r"--abort: PID \d+ ended")
            first = p.communicate(timeout=30)[0]
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(6, p.returncode, first[-3000:])
        self.assertLess(stat(first, "Messages transferred"), 40)
        rc, out = run_sync("--abort")  # nothing running any more
        self.assertIn("no running process", out)


class OtherOptions(Base):
    """Options that were accepted before they were acted on."""

    def test_fetch_hash_set_window(self):
        put("src", "INBOX", "w", 10)
        imap = ENV.imap("src", USER)
        try:
            imap.select("INBOX", readonly=True)
            u = sorted(int(x) for x in imap.uid("SEARCH", "ALL")[1][0].split())
        finally:
            imap.logout()
        window = f"{u[0]}:{u[2]},{u[8]}"
        rc, out = run_sync("--fetch_hash_set", window)
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn(f"--fetch_hash_set {window} reads only those UIDs: no state", out)
        self.assertEqual(4, stat(out, "Messages transferred"), out[-3000:])
        self.assertEqual([f"w-{i}@issue8.example" for i in (0, 1, 2, 8)], ids("dst", "INBOX"))
        # another window: host2 is read whole, so nothing is copied twice
        rc, out = run_sync("--fetch_hash_set", f"{u[0]}:{u[3]}")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(1, stat(out, "Messages transferred"), out[-3000:])
        self.assertEqual(5, len(ids("dst", "INBOX")))
        # host2 copies of host1 UIDs outside the window would look deleted
        rc, out = run_sync("--fetch_hash_set", f"{u[0]}:{u[1]}", "--delete2")
        self.assertEqual(64, rc, out)
        self.assertIn("with --delete2", out)
        self.assertEqual(5, len(ids("dst", "INBOX")))
        rc, out = run_sync("--fetch_hash_set", "1:x")
        self.assertEqual(64, rc, out)
        self.assertIn("--fetch_hash_set 1:x: give an IMAP UID set", out)

    def test_dry1_copies_but_leaves_host1_alone(self):
        put("src", "INBOX", "d", 4)
        rc, out = run_sync("--delete1", "--dry1", "--nostate")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(4, stat(out, "Messages transferred"), out[-3000:])
        self.assertIn("marked \\Deleted on host1\t(not really since --dry1 mode)", out)
        self.assertEqual(4, len(ids("src", "INBOX")))  # nothing deleted on host1
        self.assertEqual(ids("src", "INBOX"), ids("dst", "INBOX"))
        rc, out = run_sync("--delete1", "--nostate")  # for real
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual([], ids("src", "INBOX"))

    def test_inet4_inet6(self):
        # the harness listens on 127.0.0.1 only
        rc, out = run_sync("--justlogin", "--inet4")
        self.assertEqual(0, rc, out)
        rc, out = run_sync("--justlogin", "--inet6")
        self.assertEqual(101, rc, out)
        self.assertIn("cannot resolve host name (Address family for hostname not supported)", out)
        rc, out = run_sync("--justlogin", "--inet4", "--inet6")
        self.assertEqual(64, rc, out)
        self.assertIn("--inet4 and --inet6 together", out)

    def test_justbanner_and_authmd5(self):
        rc, out = run_sync("--justbanner")
        self.assertEqual(0, rc, out)
        self.assertIn("imapsync-compatible", out)
        self.assertNotIn("connecting on host1", out)
        rc, out = run_sync("--justlogin", "--authmd5")
        self.assertEqual(0, rc, out)
        self.assertIn(f"Host1: success login on [127.0.0.1] with user [{USER}] auth [CRAM-MD5]", out)
        self.assertIn(f"Host2: success login on [127.0.0.1] with user [{USER}] auth [CRAM-MD5]", out)
        self.assertIn("Host1: ID of the server: name: Dovecot", out)  # --id, on by default
        rc, out = run_sync("--justlogin", "--noid")
        self.assertEqual(0, rc, out)
        self.assertNotIn("ID of the server", out)
        rc, out = run_sync("--justlogin", "--authmd52")
        self.assertIn("auth [CRAM-MD5]", out)
        self.assertEqual(1, out.count("auth [CRAM-MD5]"), out)

if __name__ == "__main__":
    unittest.main(verbosity=2)
