#!/usr/bin/env python3
"""Self-test of the integration harness (tests/harness/ferry_harness.py).

Proves that the servers started by the ferry_servers fixture behave as the
later tests assume (capabilities, TLS verified against the harness CA, master
user logins, LMTP delivery, wrong passwords refused) and that `compare` both
passes identical accounts and catches differences.

Runs against $FERRY_ENV_DIR, as user bob only, so that other tests can use the
other users in the same fixture. Starts by wiping bob on both sides, so it can
be run again against the same servers:

    FERRY_ENV_DIR=build/integ-env PYTHONPATH=tests/harness tests/integ/test_harness_selftest.py
"""

import collections
import imaplib
import ssl
import subprocess
import sys
import time
import unittest
import uuid

import ferry_harness as fh

USER = "bob"
COMPARE_ARGS = ("--user1", USER, "--side1", "src", "--user2", USER, "--side2", "dst")
# What imapferry relies on after login (Dovecot 2.3 defaults, checked here).
REQUIRED_CAPS = {"IMAP4REV1", "CONDSTORE", "QRESYNC", "UIDPLUS", "MOVE", "SPECIAL-USE", "LITERAL+",
                 "ID", "NAMESPACE", "ENABLE", "LIST-STATUS", "IDLE", "UNSELECT", "ESEARCH"}


def run_harness(*args):
    """Run the harness CLI against the fixture; returns CompletedProcess."""
    return subprocess.run([sys.executable, fh.__file__, args[0], str(ENV.dir), *args[1:]],
                          capture_output=True, text=True, timeout=120)


def capabilities(imap):
    typ, data = imap.capability()
    return set(data[0].decode().upper().split())


def naive_copy(env, user, from_side, to_side):
    """Copy every folder, message (flags without \\Recent, INTERNALDATE) and
    subscription of user from one side to the other, the simplest way: LIST,
    CREATE with the separator translated, FETCH a folder, APPEND each
    message, SUBSCRIBE. Returns the number of messages copied. (Naive: it
    has no state, no resume, and imaplib.append would turn bare LFs into
    CRLF; the corpus has none.)"""
    src, dst = env.imap(from_side, user), env.imap(to_side, user)
    try:
        sep_s, sep_d = fh.hierarchy_separator(src), fh.hierarchy_separator(dst)
        existing = set(fh.list_folders(dst))
        copied = 0
        for name, (_delim, flags) in sorted(fh.list_folders(src).items()):
            target = sep_d.join(name.split(sep_s))
            if target not in existing:
                fh.imap_check(dst.create(fh.mailbox_arg(target)), f"CREATE {target}")
            if "\\noselect" in (f.lower() for f in flags):
                continue
            exists = int(fh.imap_check(src.select(fh.mailbox_arg(name), readonly=True), name)[0])
            if exists == 0:
                continue
            data = fh.imap_check(src.fetch(f"1:{exists}", "(FLAGS INTERNALDATE BODY.PEEK[])"), name)
            for m in fh.parse_fetch_response(data):
                if m["body"] is None:
                    continue
                keep = [f for f in m["flags"] if f.lower() != "\\recent"]
                flags = "(" + " ".join(keep) + ")" if keep else None
                date = f'"{m["internaldate"]}"'
                fh.imap_check(dst.append(fh.mailbox_arg(target), flags, date, m["body"]), target)
                copied += 1
        for name in fh.list_subscribed(src):
            target = sep_d.join(name.split(sep_s))
            fh.imap_check(dst.subscribe(fh.mailbox_arg(target)), f"SUBSCRIBE {target}")
        return copied
    finally:
        src.logout()
        dst.logout()


def pick_unique(imap, folder):
    """The fh.MessageInfo of the first message of a folder whose bytes occur
    once in it, so that a change to it shows up unambiguously."""
    msgs = fh.fetch_folder(imap, folder)
    counts = collections.Counter(m.digest for m in msgs)
    return next(m for m in msgs if counts[m.digest] == 1)


class HarnessSelfTest(unittest.TestCase):
    """Ordered by name: 1 (no server) ... 6 (copy and compare)."""

    def test_1_mutf7(self):
        cases = [("INBOX", "INBOX"), ("Bücher", "B&APw-cher"), ("日本語", "&ZeVnLIqe-"),
                 ("R&D", "R&-D"),
                 ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501
                 ('My "quoted" folder', 'My "quoted" folder'), ("😀 x", "&2D3eAA- x")]
        for text, wire in cases:
            with self.subTest(text=text):
                self.assertEqual(fh.mutf7_encode(text), wire)
                self.assertEqual(fh.mutf7_decode(wire), text)
        for bad in ("&", "&Jjo", "&AGE-", "caf\u00e9", "&U,BTFw-&ZeVnLIqe-"):
            with self.subTest(bad=bad), self.assertRaises(ValueError):
                fh.mutf7_decode(bad)

    def test_2_capabilities(self):
        for side in fh.SIDES:
            with self.subTest(side=side):
                imap = ENV.connect(side)
                self.assertIn("STARTTLS", imap.capabilities)  # offered before login
                self.assertNotIn("LOGINDISABLED", imap.capabilities)  # plaintext allowed
                imap.login(USER, ENV.password(USER))
                caps = capabilities(imap)
                print(f"{side} CAPABILITY: {' '.join(sorted(caps))}")
                self.assertLessEqual(REQUIRED_CAPS, caps, f"missing: {REQUIRED_CAPS - caps}")
                self.assertEqual(fh.hierarchy_separator(imap), ENV.sep(side))
                imap.logout()
        self.assertEqual((ENV.src_sep, ENV.dst_sep), (".", "/"))

    def test_3_tls(self):
        for side in fh.SIDES:
            for mode in ("starttls", "ssl"):
                with self.subTest(side=side, mode=mode):
                    imap = ENV.imap(side, USER, mode=mode)
                    self.assertIsInstance(imap.sock, ssl.SSLSocket)
                    imap.logout()
                    # With the system's CAs instead of the harness CA the
                    # certificate must not verify: the check really happens.
                    untrusted = ssl.create_default_context()
                    with self.assertRaises(ssl.SSLCertVerificationError):
                        if mode == "ssl":
                            imaplib.IMAP4_SSL(fh.HOST, ENV.port(side, "imaps"),
                                              ssl_context=untrusted, timeout=10)
                        else:
                            plain = imaplib.IMAP4(fh.HOST, ENV.port(side, "imap"), timeout=10)
                            plain.starttls(untrusted)

    def test_4_logins(self):
        for side in fh.SIDES:
            with self.subTest(side=side):
                # A folder only bob has tells whose mailbox a login opened.
                marker = f"whoami-{uuid.uuid4().hex[:8]}"
                imap = ENV.imap(side, USER)
                fh.imap_check(imap.create(fh.mailbox_arg(marker)), "CREATE marker")
                imap.logout()
                try:
                    for how, imap in (
                            ("LOGIN bob*admin", ENV.imap(side, USER, master=True)),
                            ("AUTHENTICATE PLAIN bob/admin",
                             ENV.imap_plain_authzid(side, USER, ENV.master_user, ENV.master_pass)),
                            ("AUTHENTICATE PLAIN over STARTTLS",
                             ENV.imap_plain_authzid(side, USER, ENV.master_user, ENV.master_pass,
                                                    mode="starttls"))):
                        with self.subTest(how=how):
                            self.assertIn(marker, fh.list_folders(imap))
                            imap.logout()
                finally:
                    imap = ENV.imap(side, USER)
                    fh.imap_check(imap.delete(fh.mailbox_arg(marker)), "DELETE marker")
                    imap.logout()
                refused = [
                    ("wrong password", lambda: ENV.imap(side, USER, password="wrong")),
                    ("alice's password",
                     lambda: ENV.imap(side, USER, password=ENV.password("alice"))),
                    ("master, wrong password",
                     lambda: ENV.imap(side, f"{USER}*{ENV.master_user}", password="wrong")),
                    ("master for an unknown user",
                     lambda: ENV.imap(side, "nosuchuser", master=True)),
                    ("a normal user as master",
                     lambda: ENV.imap(side, f"{USER}*alice", password=ENV.password("alice"))),
                    ("PLAIN authzid, wrong password",
                     lambda: ENV.imap_plain_authzid(side, USER, ENV.master_user, "wrong")),
                ]
                for what, attempt in refused:
                    with self.subTest(refused=what), self.assertRaises(imaplib.IMAP4.error):
                        attempt().logout()

    def test_5_lmtp(self):
        msgid = f"<{uuid.uuid4().hex}@selftest.example>"
        body = f"LMTP self-test {msgid}"
        # Bare LF line ends on purpose: `deliver` must turn them into CRLF.
        message = (f"From: t@example.net\nTo: {USER}@example.org\nSubject: lmtp\n"
                   f"Message-ID: {msgid}\n\n{body}\n")
        r = subprocess.run([sys.executable, fh.__file__, "deliver", str(ENV.dir), "--user", USER,
                            "--file", "-"], input=message, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        imap = ENV.imap("src", USER)
        imap.select("INBOX", readonly=True)
        typ, data = imap.search(None, "HEADER", "Message-ID", fh.imap_quote(msgid))
        self.assertEqual(len(data[0].split()), 1, f"{msgid} not in src INBOX")
        typ, data = imap.fetch(data[0].split()[0], "(BODY.PEEK[])")
        raw = fh.parse_fetch_response(data)[0]["body"]
        self.assertIn(body.encode() + b"\r\n", raw)  # bare LF became CRLF
        imap.logout()

    def test_6_copy_and_compare(self):
        s = fh.populate(ENV, "src", USER, "small", seed=7)
        print(f"populate: {s}")
        self.assertTrue(8_000_000 <= s["bytes"] <= 15_000_000, s)
        t0 = time.monotonic()
        copied = naive_copy(ENV, USER, "src", "dst")
        print(f"naive copy: {copied} messages in {time.monotonic() - t0:.1f} s")

        # Identical, and compare itself must leave \Seen alone.
        unseen = self.unseen("src", "INBOX"), self.unseen("dst", "INBOX")
        self.assertGreater(unseen[0], 0)
        stats = {}
        diffs = fh.compare(ENV, USER, "src", USER, "dst", stats=stats)
        self.assertEqual(diffs, [], "\n".join(map(str, diffs)))
        self.assertEqual((self.unseen("src", "INBOX"), self.unseen("dst", "INBOX")), unseen)
        self.assertEqual(stats["messages1"], copied)
        self.assertEqual(stats["messages1"], self.total_messages("src"))
        self.assertEqual((stats["messages2"], stats["bytes2"]),
                         (stats["messages1"], stats["bytes1"]))
        r = run_harness("compare", *COMPARE_ARGS)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("IDENTICAL", r.stdout)

        # One flag changed and one message removed on dst: exactly two differences.
        imap = ENV.imap("dst", USER)
        flagged = pick_unique(imap, "Projects/2024/Q1")
        imap.select(fh.mailbox_arg("Projects/2024/Q1"))
        op = "-FLAGS" if "\\Flagged" in flagged.flags else "+FLAGS"
        fh.imap_check(imap.uid("STORE", str(flagged.uid), op, "(\\Flagged)"), "STORE")
        removed = pick_unique(imap, "Archive/2021")
        imap.select(fh.mailbox_arg("Archive/2021"))
        fh.imap_check(imap.uid("STORE", str(removed.uid), "+FLAGS.SILENT", "(\\Deleted)"), "STORE")
        # UID EXPUNGE (UIDPLUS): only this message, not the corpus's other \Deleted ones.
        fh.imap_check(imap.uid("EXPUNGE", str(removed.uid)), "UID EXPUNGE")
        imap.logout()

        diffs = fh.compare(ENV, USER, "src", USER, "dst")
        self.assertEqual(sorted((d.kind, d.folder) for d in diffs),
                         [("flags", "Projects/2024/Q1"), ("message-missing", "Archive/2021")],
                         "\n".join(map(str, diffs)))
        missing = next(d for d in diffs if d.kind == "message-missing")
        self.assertIn(f"sha256 {removed.digest[:12]}", missing.detail)
        self.assertIn(f"{removed.size} bytes", missing.detail)
        r = run_harness("compare", *COMPARE_ARGS)
        print(r.stdout)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("DIFFERENT: 2 difference(s)", r.stdout)
        self.assertIn(removed.subject, r.stdout)

        # Folder set and subscriptions count too.
        imap = ENV.imap("dst", USER)
        fh.imap_check(imap.create(fh.mailbox_arg("Extra/Only on dst")), "CREATE")
        fh.imap_check(imap.unsubscribe(fh.mailbox_arg("日本語")), "UNSUBSCRIBE")
        imap.logout()
        kinds = sorted((d.kind, d.folder) for d in fh.compare(ENV, USER, "src", USER, "dst"))
        self.assertEqual(kinds, [("flags", "Projects/2024/Q1"), ("folder-extra", "Extra"),
                                 ("folder-extra", "Extra/Only on dst"),
                                 ("message-missing", "Archive/2021"),
                                 ("subscription-missing", "日本語")])
        # Without separator translation nothing below the top level matches.
        r = run_harness("compare", *COMPARE_ARGS, "--no-map-sep")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stdout, r"folder-missing +'Projects\.2024\.Q1'")

    def unseen(self, side, folder):
        imap = ENV.imap(side, USER)
        typ, data = imap.status(fh.mailbox_arg(folder), "(UNSEEN)")
        imap.logout()
        return int(data[0].decode().rsplit("UNSEEN", 1)[1].strip(" )"))

    def total_messages(self, side):
        imap = ENV.imap(side, USER)
        total = 0
        for name, (_d, flags) in fh.list_folders(imap).items():
            if "\\noselect" in (f.lower() for f in flags):
                continue
            typ, data = imap.status(fh.mailbox_arg(name), "(MESSAGES)")
            total += int(data[0].decode().rsplit("MESSAGES", 1)[1].strip(" )"))
        imap.logout()
        return total


ENV = None  # the fixture's fh.Env, loaded in setUpModule


def setUpModule():
    global ENV
    ENV = fh.Env.load()
    for side in fh.SIDES:
        fh.wipe(ENV, side, USER)


if __name__ == "__main__":
    unittest.main(verbosity=2)
