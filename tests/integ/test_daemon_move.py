#!/usr/bin/env python3
"""imapferry-sync --daemon --delete2 and a MOVE seen by the proxy (issue 6):
the target folder's sync copies the moved message inside the destination
from the source folder's copy there (the move hint), and the source
folder's sync deletes that copy (--delete2). So a source folder claimed
while the target's sync is in flight waits for it (at most 3 s at a time);
never for a target that is only due, so two folders with moves into each
other never wait for each other (test_rqueue test_move_wait).

The test plays the proxy and another worker, user sybil:

  1. the source folder claimed while the target's sync is in flight (the
     other worker) waits; the target's sync then runs here: the message
     lands in Archive as a copy of the destination's INBOX copy (same
     Dovecot X-GUID: not a second upload), and the INBOX copy is deleted
     after that;
  2. the target's sync uses its hints up: after it, the source waits no
     more, even while the target is in flight again;
  3. a target that stays busy (a lease that does not end) holds the source
     folder back for 3 s at most: then its expunge is mirrored anyway, and
     the next ones (for a minute) without waiting.

Needs FERRY_ENV_DIR and FERRY_SYNC.
"""

import atexit
import os
import shutil
import subprocess
import tempfile
import time
import unittest

import ferry_harness as fh
from private_redis import PrivateRedis

ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
USER = "sybil"
WORKDIR = tempfile.mkdtemp(prefix="ferry-move-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)


def message(n):
    return (f"From: a@example.org\r\nTo: {USER}@example.org\r\nSubject: move {n}\r\n"
            f"Message-Id: <move-{n}@example.org>\r\n\r\nbody {n}\r\n").encode()


class DaemonMove(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        for side in ("src", "dst"):
            fh.wipe(ENV, side, USER)
        imap = ENV.imap("src", USER)
        try:
            imap.create("Archive")
            for n in range(4):
                fh.imap_check(imap.append("INBOX", None, None, message(n)), "APPEND")
        finally:
            imap.logout()
        users = os.path.join(WORKDIR, "users")
        with open(users, "w") as f:
            f.write(USER + "\n")
        cls.redis = PrivateRedis(WORKDIR)
        cls.log_path = os.path.join(WORKDIR, "daemon.log")
        cmd = [SYNC, "--daemon", "--redis", f"{fh.HOST}:{cls.redis.port}", "--users", users,
               "--workers", "2", "--poll", "600", "--pollactive", "3600", "--delete2",
               "--tmpdir", WORKDIR, *ENV.master_sync_args()]
        with open(cls.log_path, "ab") as log:
            cls.daemon = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        deadline = time.monotonic() + 60
        while f"user {USER}: in sync" not in cls.log():
            if cls.daemon.poll() is not None or time.monotonic() > deadline:
                cls.tearDownClass()
                raise RuntimeError("the initial sync did not end:\n" + cls.log()[-3000:])
            time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        fh.stop_daemon(cls.daemon)
        cls.redis.stop()

    @classmethod
    def log(cls):
        with open(cls.log_path, errors="replace") as f:
            return f.read()

    def uids(self, side, folder, msgid):
        imap = ENV.imap(side, USER)
        try:
            imap.select(fh.mailbox_arg(folder), readonly=True)
            typ, data = imap.uid("SEARCH", None, "HEADER", "Message-Id", msgid)
            return data[0].split()
        finally:
            imap.logout()

    def guid(self, side, folder, msgid):
        """Dovecot's X-GUID: a COPY inside the server keeps it, an APPEND
        makes a new one."""
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

    def move_on_source(self, n):
        """UID MOVE of message n from INBOX to Archive on the source itself,
        and the proxy's move hint for it; returns its Message-Id."""
        msgid = f"<move-{n}@example.org>"
        imap = ENV.imap("src", USER)
        try:
            imap.select("INBOX")
            typ, data = imap.uid("SEARCH", None, "HEADER", "Message-Id", msgid)
            typ, data = imap.uid("MOVE", data[0].split()[0].decode(), "Archive")
            self.assertEqual("OK", typ, data)
            code = imap.untagged_responses.get("COPYUID", [b""])[-1].decode().split()
            self.assertEqual(3, len(code), code)
        finally:
            imap.logout()
        hint_key = f"rep:{{{fh.shard(USER)}}}:hint:{USER}"
        self.redis.cli("LPUSH", hint_key, f"move\tINBOX\tArchive\t{code[0]}\t{code[1]}\t{code[2]}")
        return msgid

    def redis_now(self):
        sec, usec = self.redis.cli("TIME").split()
        return int(sec) * 1000 + int(usec) // 1000

    def due(self, *folder_at_ms):
        """Marks (folder, due ms) pairs in one ZADD: the daemon claims every
        20 ms, so two commands could let it see only the first mark."""
        key = f"rep:{{{fh.shard(USER)}}}:due"
        args = []
        for folder, at_ms in folder_at_ms:
            args += [str(at_ms), f"{USER}\t{folder}"]
        self.redis.cli("ZADD", key, *args)

    def wait_for(self, what, cond, timeout):
        deadline = time.monotonic() + timeout
        while not cond():
            self.assertIsNone(self.daemon.poll(), self.log()[-3000:])
            self.assertLess(time.monotonic(), deadline, what + "\n" + self.log()[-3000:])
            time.sleep(0.1)

    def test_1_source_folder_waits_for_the_target(self):
        msgid = self.move_on_source(0)
        guid = self.guid("dst", "INBOX", msgid)
        inflight = f"rep:{{{fh.shard(USER)}}}:inflight"
        due = f"rep:{{{fh.shard(USER)}}}:due"
        member = f"{USER}\tArchive"
        # Archive's sync in flight in "another worker" when INBOX is claimed
        self.redis.cli("ZADD", inflight, str(self.redis_now() + 3600_000), member)
        self.due(("INBOX", self.redis_now()))
        self.wait_for("INBOX waiting", lambda: f"sync {USER} [INBOX] waits for" in self.log(), 10)
        self.assertTrue(self.uids("dst", "INBOX", msgid), "INBOX did not wait")
        # that worker ends without syncing: Archive is due again, before
        # INBOX (its score earlier than INBOX's put-back one), in one step
        self.redis.cli("EVAL", "redis.call('ZREM', KEYS[1], ARGV[1]) "
                       "redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])", "2", inflight, due,
                       member, str(self.redis_now() - 5000))
        self.wait_for("the message in Archive and out of INBOX on the destination",
                      lambda: self.uids("dst", "Archive", msgid)
                      and not self.uids("dst", "INBOX", msgid), 30)
        self.assertEqual(guid, self.guid("dst", "Archive", msgid),
                         "uploaded again, not copied inside the destination\n"
                         + self.log()[-3000:])
        self.assertIn(f"sync {USER} [INBOX] waits for the sync of a folder a MOVE", self.log())
        self.wait_for("accounts equal", lambda: fh.compare(ENV, USER, "src", USER, "dst") == [],
                      20)

    def test_2_a_used_hint_holds_nothing_back(self):
        """The target's sync uses its hints up: the source folder no longer
        waits for the target once it has been synced (a hint lives a day),
        even while the target is in flight again."""
        waits = f"sync {USER} [INBOX] waits for"
        done = f"sync {USER} [INBOX] done"
        hint_key = f"rep:{{{fh.shard(USER)}}}:hint:{USER}"
        inflight = f"rep:{{{fh.shard(USER)}}}:inflight"
        member = f"{USER}\tArchive"
        self.assertEqual("", self.redis.cli("LRANGE", hint_key, "0", "-1"))
        nwaits, ndone = self.log().count(waits), self.log().count(done)
        self.redis.cli("ZADD", inflight, str(self.redis_now() + 3600_000), member)
        try:
            self.due(("INBOX", self.redis_now()))
            self.wait_for("INBOX synced", lambda: self.log().count(done) > ndone, 20)
        finally:
            self.redis.cli("ZREM", inflight, member)
        self.assertEqual(nwaits, self.log().count(waits), self.log()[-2000:])

    def test_3_a_busy_target_holds_the_source_back_for_3_s_at_most(self):
        msgid = self.move_on_source(1)
        inflight = f"rep:{{{fh.shard(USER)}}}:inflight"
        member = f"{USER}\tArchive"
        # a lease nobody ends: Archive looks in flight the whole time
        self.redis.cli("ZADD", inflight, str(self.redis_now() + 3600_000), member)
        try:
            t0 = time.monotonic()
            self.due(("INBOX", self.redis_now()))
            self.wait_for("the destination's INBOX copy deleted",
                          lambda: not self.uids("dst", "INBOX", msgid), 30)
            self.assertGreater(time.monotonic() - t0, 2.5, "the source folder did not wait")
            # then it rests: a next move out of INBOX, the target still
            # busy, does not wait again (a long sync of the target must
            # not add 3 s to each of the source's changes)
            waits = self.log().count(f"sync {USER} [INBOX] waits for")
            msgid = self.move_on_source(2)
            self.due(("INBOX", self.redis_now()))
            self.wait_for("the destination's INBOX copy deleted at once",
                          lambda: not self.uids("dst", "INBOX", msgid), 2.5)
            self.assertEqual(waits, self.log().count(f"sync {USER} [INBOX] waits for"))
        finally:
            self.redis.cli("ZREM", inflight, member)
        self.due(("Archive", self.redis_now()))
        self.wait_for("accounts equal", lambda: fh.compare(ENV, USER, "src", USER, "dst") == [],
                      20)

if __name__ == "__main__":
    unittest.main(verbosity=2)
