#!/usr/bin/env python3
"""imapferry-sync's incremental engine (issue 4), against the harness's Dovecots.

After a first full run, a changed folder gets an incremental pass: only
host1's changes are read (QRESYNC, or CONDSTORE with IMAPFERRY_NOQRESYNC=1),
never the whole folder's headers. Each case checks the protocol trace
(--debugimap) for what was asked, and the accounts byte for byte:
new messages, flag changes, expunges on host1, a UIDVALIDITY reset, a
destination written by someone else, a corrupt UID map, a run killed in the
middle of an incremental pass.

Uses user dave on both sides (other tests use alice, bob and carol). Needs
FERRY_ENV_DIR (the ctest fixture) and FERRY_SYNC (the binary).
"""

import atexit
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import ferry_harness as fh

USER = "dave"
ENV = fh.Env.load()
SYNC = os.environ["FERRY_SYNC"]
WORKDIR = tempfile.mkdtemp(prefix="ferry-delta-test-")
atexit.register(shutil.rmtree, WORKDIR, ignore_errors=True)

# A whole-folder read of headers or metadata: what an incremental pass must
# never send ("UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE m)" is allowed).
FULL_READ = re.compile(r"C: \S+ UID FETCH 1:\* \(UID FLAGS INTERNALDATE")
BODY_FETCH = re.compile(r"C: \S+ UID FETCH [0-9:,]+ \(BODY\.PEEK\[\]\)")


def sync_cmd(*extra):
    return [SYNC,
            "--host1", "127.0.0.1", "--port1", str(ENV.port("src", "imap")),
            "--user1", USER, "--password1", ENV.password(USER),
            "--host2", "127.0.0.1", "--port2", str(ENV.port("dst", "imap")),
            "--user2", USER, "--password2", ENV.password(USER),
            "--sslargs1", "SSL_ca_file=" + ENV.ca_file, "--sslargs2", "SSL_ca_file=" + ENV.ca_file,
            "--nolog", "--nofoldersizes", "--syncduplicates",
            "--pidfile", os.path.join(WORKDIR, "sync.pid"), "--tmpdir", WORKDIR] + list(extra)


def run_sync(*extra, env=None):
    p = subprocess.run(sync_cmd(*extra), capture_output=True, text=True, timeout=300,
                       cwd=WORKDIR, env=env)
    return p.returncode, p.stdout + p.stderr


def stat(out, label):
    m = re.search(r"^" + re.escape(label) + r"\s*: (\d+)", out, re.M)
    return int(m.group(1)) if m else None


def src_imap():
    return ENV.imap("src", USER)


def forget_redis_state(cli, *keys):
    """USER's state and UID maps in the harness Redis deleted (and keys)."""
    for key in keys:
        subprocess.run(cli + ["DEL", key], capture_output=True)
    for pattern in (f"rep:*:st:{USER}", f"rep:*:map:{USER}:*", f"rep:*:gone:{USER}:*"):
        found = subprocess.run(cli + ["--scan", "--pattern", pattern],
                               capture_output=True, text=True).stdout.splitlines()
        for key in found:
            subprocess.run(cli + ["DEL", key], capture_output=True)


def monitored(cli, pattern, *args):
    """run_sync(*args) with Redis MONITOR on: the commands matching pattern
    (a regex on MONITOR's lines), the exit code and the output."""
    mon = subprocess.Popen(cli + ["MONITOR"], stdout=subprocess.PIPE, text=True)
    try:
        line = mon.stdout.readline().strip()
        if line != "OK":
            raise RuntimeError(f"MONITOR: {line}")
        rc, out = run_sync(*args)
        subprocess.run(cli + ["ECHO", "monitor-end"], capture_output=True)
        lines = []
        for line in mon.stdout:
            if '"monitor-end"' in line:
                break
            lines.append(line)
    finally:
        mon.kill()
        mon.wait()
        mon.stdout.close()
    return [ln for ln in lines if re.search(pattern, ln)], rc, out


def copyuid(test, imap, cmd, uid, to):
    """UID COPY or MOVE of uid to folder to on the selected mailbox; the
    COPYUID code's (uidvalidity, source set, destination set)."""
    typ, data = imap.uid(cmd, uid, to)
    test.assertEqual("OK", typ, data)
    code = imap.untagged_responses.get("COPYUID", [b""])[-1].decode().split()
    test.assertEqual(3, len(code), code)
    return code


def message(n, tag):
    return (f"From: a@example.org\r\nTo: {USER}@example.org\r\nSubject: {tag} {n}\r\n"
            f"Message-Id: <{tag}-{n}@example.org>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
            f"\r\nbody {n} of {tag}\r\n" + "x" * (n % 7 * 300) + "\r\n").encode()


class SyncDelta(unittest.TestCase):
    longMessage = False  # the run's output is long: show its tail only

    def setUp(self):
        fh.wipe(ENV, "src", USER)
        fh.wipe(ENV, "dst", USER)
        shutil.rmtree(os.path.join(WORKDIR, "imapferry_state"), ignore_errors=True)
        fh.populate(ENV, "src", USER, "small", seed=21)
        rc, out = run_sync()
        self.assertEqual(0, rc, out[-3000:])
        self.nfolders = int(re.search(r"Looping on each one of (\d+) folders", out).group(1))

    def assert_identical(self):
        diffs = fh.compare(ENV, USER, "src", USER, "dst")
        self.assertEqual([], [str(d) for d in diffs])

    def assert_no_full_read(self, out):
        self.assertIsNone(FULL_READ.search(out), "a whole-folder read in an incremental pass")

    def change_source(self):
        """Flag changes in two folders, one message appended to a third and
        one delivered by LMTP: four folders change, one message each way."""
        imap = src_imap()
        try:
            imap.select("INBOX")
            imap.store("1:3", "+FLAGS", "(\\Flagged $Delta)")
            imap.select("Archive.2019")
            imap.store("2", "+FLAGS", "($DeltaMark)")  # a new keyword: surely a change
            fh.imap_check(imap.append("Sent", "(\\Seen)", None, message(1, "appended")), "APPEND")
        finally:
            imap.logout()
        fh.deliver(ENV, USER, message(2, "delivered"))

    def check_incremental(self, *extra, env=None):
        self.change_source()
        rc, out = run_sync("--debugimap", *extra, env=env)
        self.assertEqual(0, rc, out[-4000:])
        self.assertEqual(3, out.count("changed since the last run: incremental pass"), out[-4000:])
        self.assertEqual(self.nfolders - 3, out.count("unchanged since the last run, skipped"))
        self.assert_no_full_read(out)
        self.assertEqual(2, stat(out, "Messages transferred"))
        self.assertEqual(2, len(BODY_FETCH.findall(out)), "one body fetch per new message")
        self.assertRegex(out, r"C: \S+ UID STORE \S+ FLAGS\.SILENT")
        self.assertIn("The sync looks good", out, out[-3000:])
        self.assert_identical()
        # and then nothing is left to do
        rc, out = run_sync("--debugimap", *extra, env=env)
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(self.nfolders, out.count("unchanged since the last run, skipped"))
        self.assertEqual(0, stat(out, "Messages transferred"))
        self.assertIn("The sync looks good", out, out[-3000:])
        return out

    def test_redis_maps_read_only_when_a_folder_changed(self):
        """With the state in Redis, the UID maps (most of a big mailbox's
        state) are not read by a run that finds every folder unchanged (a
        --quickcheck, the sweep's check); a run with changed folders reads
        them and syncs incrementally (no whole-folder read), also from
        --parallel workers (each on its own Redis connection)."""
        port = str(ENV.values["FERRY_REDIS_PORT"])
        redis = f"127.0.0.1:{port}"
        cli = ["redis-cli", "-p", port]
        forget_redis_state(cli)
        self.addCleanup(forget_redis_state, cli)
        rc, out = run_sync("--redis", redis)
        self.assertEqual(0, rc, out[-3000:])

        def map_reads(*extra):
            gets, rc, out = monitored(cli, r'"GET" "rep:\S*:map:', "--redis", redis, *extra)
            self.assertEqual(0, rc, out[-3000:])
            return gets, out

        gets, out = map_reads("--quickcheck")
        self.assertRegex(out, rf"Quick check: 0 of {self.nfolders} folders changed")
        self.assertEqual([], gets)
        gets, out = map_reads()
        self.assertEqual(self.nfolders, out.count("unchanged since the last run, skipped"))
        self.assertEqual([], gets)
        out = self.check_incremental("--redis", redis)
        self.change_source()  # (the flags are set already: INBOX and Sent change)
        gets, out = map_reads("--parallel", "2", "--debugimap")
        self.assertEqual(2, out.count("changed since the last run: incremental pass"), out[-3000:])
        self.assert_no_full_read(out)
        self.assertEqual(2, stat(out, "Messages transferred"))
        self.assertGreaterEqual(len(gets), self.nfolders, "the maps were read")
        self.assert_identical()

    def test_incremental_qresync(self):
        out = self.check_incremental()
        self.assertNotIn("CHANGEDSINCE", out, out[-3000:])

    def test_incremental_condstore_only(self):
        env = dict(os.environ, IMAPFERRY_NOQRESYNC="1")
        self.change_source()
        rc, out = run_sync("--debugimap", env=env)
        self.assertEqual(0, rc, out[-4000:])
        self.assertIn("(CHANGEDSINCE ", out, out[-3000:])
        self.assertNotIn("ENABLE QRESYNC", out, out[-3000:])
        self.assert_no_full_read(out)
        self.assert_identical()

    def expunge_on_source(self, env=None):
        imap = src_imap()
        try:
            imap.select("INBOX")
            typ, data = imap.fetch("2", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            uid = re.search(rb"UID (\d+)", data[0][0]).group(1).decode()
            subject = data[0][1].decode().split(":", 1)[1].strip()
            imap.uid("STORE", uid, "+FLAGS", "(\\Deleted)")
            imap.uid("EXPUNGE", uid)  # only this one (the corpus has other \Deleted mail)
        finally:
            imap.logout()
        rc, out = run_sync("--debugimap", env=env)
        self.assertEqual(0, rc, out[-4000:])
        self.assertIn("1 vanished on host1", out, out[-3000:])
        self.assert_no_full_read(out)
        self.assertEqual(1, stat(out, "Messages found in host2 not in host1"), out[-3000:])
        # nothing is deleted without --delete2: the message stays on host2
        diffs = fh.compare(ENV, USER, "src", USER, "dst")
        self.assertEqual(["message-extra"], [d.kind for d in diffs], [str(d) for d in diffs])
        self.assertEqual("INBOX", diffs[0].folder)
        self.assertIn(f"Subject: {subject!r}", diffs[0].detail)
        # the next run says the same, from the state alone
        rc, out = run_sync(env=env)
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(self.nfolders, out.count("unchanged since the last run, skipped"))
        self.assertEqual(1, stat(out, "Messages found in host2 not in host1"), out[-3000:])

    def test_expunge_qresync(self):
        self.expunge_on_source()

    def test_expunge_condstore_only(self):
        self.expunge_on_source(env=dict(os.environ, IMAPFERRY_NOQRESYNC="1"))

    def test_uidvalidity_reset_is_a_full_pass(self):
        """The folder deleted and made again (same messages, new UIDVALIDITY):
        the stored map is for the old one, so headers identify; no copy."""
        imap = src_imap()
        try:
            imap.select("Archive.2019")
            typ, data = imap.fetch("1:*", "(FLAGS INTERNALDATE BODY.PEEK[])")
            msgs = [(re.search(rb"FLAGS \(([^)]*)\)", meta).group(1).decode(),
                     re.search(rb'INTERNALDATE "([^"]+)"', meta).group(1).decode(), body)
                    for meta, body in (d for d in data if isinstance(d, tuple))]
            imap.close()
            fh.imap_check(imap.delete("Archive.2019"), "DELETE")
            fh.imap_check(imap.create("Archive.2019"), "CREATE")
            for flags, when, body in msgs:
                flags = " ".join(f for f in flags.split() if f != "\\Recent")
                fh.imap_check(imap.append("Archive.2019", f"({flags})", f'"{when}"', body),
                              "APPEND")
        finally:
            imap.logout()
        rc, out = run_sync("--debugimap")
        self.assertEqual(0, rc, out[-4000:])
        self.assertNotIn("incremental pass", out, out[-3000:])
        self.assertRegex(out, r"C: \S+ UID FETCH 1:\* \(UID FLAGS INTERNALDATE")
        self.assertEqual(0, stat(out, "Messages transferred"))
        self.assert_identical()

    def test_destination_written_by_someone_else(self):
        """A message appended to host2's INBOX by another client: host2 is
        not as we left it, so the folder gets a full pass (and the stranger's
        message is reported, not duplicated or lost)."""
        imap = ENV.imap("dst", USER)
        try:
            fh.imap_check(imap.append("INBOX", None, None, message(3, "stranger")), "APPEND")
        finally:
            imap.logout()
        fh.deliver(ENV, USER, message(4, "delivered"))
        rc, out = run_sync("--debugimap")
        self.assertEqual(0, rc, out[-4000:])
        self.assertNotIn("incremental pass", out, out[-3000:])
        self.assertEqual(1, stat(out, "Messages transferred"))
        self.assertEqual(1, stat(out, "Messages found in host2 not in host1"))

    def test_corrupt_map_costs_a_full_pass_only(self):
        state_dir = os.path.join(WORKDIR, "imapferry_state")
        (name,) = os.listdir(state_dir)
        path = os.path.join(state_dir, name)
        with open(path) as f:
            lines = f.read().splitlines()
        with open(path, "w") as f:
            for line in lines:
                f.write(re.sub(r"^(M .*) \d+:\d+:\d+", r"\1 zz:1", line) + "\n")
        self.change_source()
        rc, out = run_sync("--debugimap")
        self.assertEqual(0, rc, out[-4000:])
        self.assertIn("a bad UID map line", out, out[-3000:])
        self.assertNotIn("incremental pass", out, out[-3000:])
        self.assertEqual(2, stat(out, "Messages transferred"))
        self.assert_identical()
        rc, out = run_sync()
        self.assertEqual(self.nfolders, out.count("unchanged since the last run, skipped"))

    def test_killed_during_incremental_pass_converges(self):
        imap = src_imap()
        try:
            for n in range(300):
                fh.imap_check(imap.append("INBOX", None, None, message(n, "burst")), "APPEND")
        finally:
            imap.logout()
        p = subprocess.Popen(sync_cmd(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             cwd=WORKDIR, text=True)
        copied, seen = 0, []
        for line in p.stdout:
            seen.append(line)
            if " copied to " in line:
                copied += 1
                if copied == 40:
                    p.send_signal(signal.SIGKILL)
                    break
        p.stdout.close()
        p.wait(timeout=60)
        self.assertEqual(40, copied, "".join(seen[-30:]))
        # host2 still runs the APPENDs that were in flight at the kill; a
        # run started before they land would copy them again (the daemon
        # waits 2 s before it retries a failed sync)
        fh.wait_sessions_gone(ENV, "dst", USER)
        self.assertIn("incremental pass", "".join(seen))
        rc, out = run_sync()
        self.assertEqual(0, rc, out[-3000:])
        self.assertNotIn("incremental pass", out, out[-3000:])  # host2 moved: identification
        # the rest, and nothing twice (APPENDs in flight at the kill may have landed)
        self.assertLessEqual(stat(out, "Messages transferred"), 300 - 40)
        self.assertGreater(stat(out, "Messages transferred"), 300 - 40 - 40)
        self.assert_identical()
        rc, out = run_sync()
        self.assertEqual(self.nfolders, out.count("unchanged since the last run, skipped"))

    def killed_after_folders(self, done, *extra):
        """A first run (host2 empty, no state) SIGKILLed as its folder
        number done + 1 starts; returns the names of the folders it passed."""
        fh.wipe(ENV, "dst", USER)
        shutil.rmtree(os.path.join(WORKDIR, "imapferry_state"), ignore_errors=True)
        p = subprocess.Popen(sync_cmd(*extra), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             cwd=WORKDIR, text=True)
        passed, seen = [], []
        for line in p.stdout:
            seen.append(line)
            m = re.match(r"Folder +\d+/\d+ \[(.*?)\] +->", line)
            if m and "unchanged since the last run" not in line:
                if len(passed) == done:
                    p.send_signal(signal.SIGKILL)
                    break
                passed.append(m.group(1))
        p.stdout.close()
        p.wait(timeout=60)
        self.assertEqual(-signal.SIGKILL, p.returncode, "".join(seen[-30:]))
        fh.wait_sessions_gone(ENV, "dst", USER)
        return passed

    def check_killed_run_keeps_finished_folders(self, *extra):
        passed = self.killed_after_folders(3, "--checkpoint", "0", *extra)
        rc, out = run_sync(*extra)
        self.assertEqual(0, rc, out[-3000:])
        skipped = re.findall(r"Folder +\d+/\d+ \[(.*?)\] +->.*unchanged since the last run", out)
        self.assertEqual(passed, skipped, out[-3000:])
        self.assert_identical()
        rc, out = run_sync(*extra)
        self.assertEqual(self.nfolders, out.count("unchanged since the last run, skipped"),
                         out[-3000:])

    def test_killed_run_keeps_the_folders_it_finished(self):
        """--checkpoint 0: the state file is saved after every folder, so
        the run after a kill skips the folders finished before it (without
        it: a full pass of each)."""
        self.check_killed_run_keeps_finished_folders()

    def test_killed_run_keeps_the_folders_it_finished_redis(self):
        """The same with the state in Redis: each save writes what changed
        since the one before, the last save at the end included."""
        self.check_killed_run_keeps_finished_folders(
            "--redis", f"127.0.0.1:{ENV.values['FERRY_REDIS_PORT']}")
        cli = ["redis-cli", "-p", str(ENV.values["FERRY_REDIS_PORT"])]
        forget_redis_state(cli)

    def test_killed_parallel_run_keeps_the_folders_it_finished(self):
        """--parallel 2 --checkpoint 0: the parent saves the state of each
        folder a worker finished while the others run; the run killed
        (parent and workers) leaves the next one at least those to skip."""
        fh.wipe(ENV, "dst", USER)
        statedir = os.path.join(WORKDIR, "imapferry_state")
        shutil.rmtree(statedir, ignore_errors=True)
        p = subprocess.Popen(sync_cmd("--parallel", "2", "--checkpoint", "0"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             cwd=WORKDIR, start_new_session=True)
        saved, deadline = 0, time.monotonic() + 60
        try:
            while saved < 3:
                self.assertIsNone(p.poll(), "the run ended before 3 folders were saved")
                self.assertLess(time.monotonic(), deadline)
                saved = 0
                for dirpath, _dirs, files in os.walk(statedir):
                    for name in files:
                        if not name.endswith(".tmp"):
                            with open(os.path.join(dirpath, name), errors="replace") as f:
                                saved += sum(1 for line in f if line.startswith("F "))
                time.sleep(0.01)
        finally:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=60)
        fh.wait_sessions_gone(ENV, "dst", USER)
        rc, out = run_sync()
        self.assertEqual(0, rc, out[-3000:])
        skipped = out.count("unchanged since the last run, skipped")
        self.assertGreaterEqual(skipped, saved, out[-3000:])
        self.assertLess(skipped, self.nfolders, "the run was not killed before its end")
        self.assert_identical()
        rc, out = run_sync()
        self.assertEqual(self.nfolders, out.count("unchanged since the last run, skipped"),
                         out[-3000:])

    def test_checkpoint_default_writes_once_in_a_short_run(self):
        """A run shorter than --checkpoint (10 s) writes its state once, at
        the end: killed, it leaves the next run a full pass; and a negative
        value is refused."""
        self.killed_after_folders(3)
        rc, out = run_sync()
        self.assertEqual(0, rc, out[-3000:])
        self.assertNotIn("unchanged since the last run", out, out[-3000:])
        rc, out = run_sync("--checkpoint", "-1")
        self.assertEqual(64, rc, out[-3000:])
        self.assertIn("Error: --checkpoint must be 0 or a number of seconds, not -1", out)

    def test_folder_renamed_on_source(self):
        """RENAME on host1 (with children): host2's folders are renamed too,
        nothing is uploaded again, nothing is left behind."""
        imap = src_imap()
        try:
            fh.imap_check(imap.rename("Projects.2024", "Projects.2025"), "RENAME")
        finally:
            imap.logout()
        rc, out = run_sync("--debugimap")
        self.assertEqual(0, rc, out[-4000:])
        self.assertIn("Host1: folder [Projects.2024] was renamed to [Projects.2025]", out,
                      out[-3000:])
        self.assertRegex(out, r"C: \S+ RENAME Projects/2024 Projects/2025", out[-3000:])
        self.assertEqual(0, stat(out, "Messages transferred"))
        self.assertIsNone(re.search(r"C: \S+ UID FETCH [0-9:,]+ \(BODY\.PEEK\[\]\)", out))
        self.assert_identical()
        rc, out = run_sync()
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(self.nfolders, out.count("unchanged since the last run, skipped"))

    def test_new_folder_with_a_reused_name_is_not_a_rename(self):
        """A folder deleted on host1 and another one created: different
        UIDVALIDITY, so no rename (and nothing deleted on host2)."""
        imap = src_imap()
        try:
            fh.imap_check(imap.delete("Projects.2024.Q2"), "DELETE")
            fh.imap_check(imap.create("Projects.2024.Q3"), "CREATE")
            fh.imap_check(imap.append("Projects.2024.Q3", None, None, message(5, "q3")), "APPEND")
        finally:
            imap.logout()
        rc, out = run_sync()
        self.assertEqual(0, rc, out[-4000:])
        self.assertNotIn("was renamed", out, out[-3000:])
        self.assertEqual(1, stat(out, "Messages transferred"))
        diffs = fh.compare(ENV, USER, "src", USER, "dst")
        self.assertEqual({"folder-extra"}, {d.kind for d in diffs if "Q2" in d.folder},
                         [str(d) for d in diffs])

    def test_state_in_redis(self):
        """--redis keeps the state under the shared key schema (no file in
        tmpdir); the next runs skip and delta from it; a corrupt field only
        costs a full pass."""
        redis = f"127.0.0.1:{ENV.values['FERRY_REDIS_PORT']}"
        cli = ["redis-cli", "-p", str(ENV.values["FERRY_REDIS_PORT"])]
        shutil.rmtree(os.path.join(WORKDIR, "imapferry_state"), ignore_errors=True)
        rc, out = run_sync("--redis", redis)
        self.assertEqual(0, rc, out[-3000:])
        self.assertFalse(os.path.exists(os.path.join(WORKDIR, "imapferry_state")))
        keys = subprocess.run(cli + ["--scan", "--pattern", f"rep:*:st:{USER}"],
                              capture_output=True, text=True).stdout.split()
        self.assertEqual(1, len(keys), keys)
        fields = subprocess.run(cli + ["HKEYS", keys[0]], capture_output=True,
                                text=True).stdout.split("\n")
        self.assertIn("INBOX", fields)
        self.assertIn("_pair", fields)
        self.change_source()
        rc, out = run_sync("--redis", redis, "--debugimap")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(3, out.count("incremental pass"), out[-3000:])
        self.assert_no_full_read(out)
        self.assert_identical()
        subprocess.run(cli + ["HSET", keys[0], "INBOX", "F garbage"], capture_output=True)
        rc, out = run_sync("--redis", redis)
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("is corrupt; ignoring the state", out, out[-3000:])
        self.assertEqual(0, stat(out, "Messages transferred"))
        rc, out = run_sync("--redis", redis)
        self.assertEqual(self.nfolders, out.count("unchanged since the last run, skipped"))
        subprocess.run(cli + ["DEL", keys[0]], capture_output=True)

    def test_quickcheck_without_redis_refused_before_connecting(self):
        rc, out = run_sync("--quickcheck", "--debugimap")
        self.assertEqual(64, rc, out[-2000:])
        self.assertIn("--quickcheck needs --redis HOST:PORT", out)
        self.assertNotIn("[host1] C:", out, "it connected first")

    def test_quickcheck_one_list_status_per_side(self):
        """--quickcheck (the daemon's whole-user check): each side's folders
        come with their STATUS in one LIST ... RETURN (STATUS ...) (RFC 5819);
        only the folder this check creates on host2 is STATUSed by itself;
        the folders changed on either side (and the new one) are marked in
        Redis, no other."""
        port = str(ENV.values["FERRY_REDIS_PORT"])
        redis = f"127.0.0.1:{port}"

        def cli(*args):
            return subprocess.run(["redis-cli", "-p", port, *args], capture_output=True,
                                  text=True).stdout.split("\n")

        def marks():
            out = []
            for key in cli("--scan", "--pattern", "rep:*:due"):
                if key:
                    out += [m.split("\t", 1)[1] for m in cli("ZRANGE", key, "0", "-1")
                            if m.startswith(USER + "\t")]
            return out

        def clear():
            for key in cli("--scan", "--pattern", "rep:*:due"):
                for m in cli("ZRANGE", key, "0", "-1") if key else []:
                    if m.startswith(USER + "\t"):
                        cli("ZREM", key, m)
            for pattern in (f"rep:*:st:{USER}", f"rep:*:map:{USER}:*", f"rep:*:gone:{USER}:*"):
                for key in cli("--scan", "--pattern", pattern):
                    if key:
                        cli("DEL", key)

        clear()
        self.addCleanup(clear)
        rc, out = run_sync("--redis", redis)
        self.assertEqual(0, rc, out[-3000:])
        self.change_source()  # INBOX, Archive.2019, Sent
        imap = src_imap()
        try:
            fh.imap_check(imap.create("QNew"), "CREATE")
        finally:
            imap.logout()
        imap = ENV.imap("dst", USER)
        try:
            fh.imap_check(imap.append("Trash", None, None, message(5, "stranger")), "APPEND")
        finally:
            imap.logout()
        rc, out = run_sync("--redis", redis, "--quickcheck", "--debugimap")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(["1", "2"], re.findall(
            r"\[host(\d)\] C: \S+ LIST \"\" \"\*\" RETURN \(STATUS \(", out), out[-3000:])
        # (create_folder's existence check, imapsync's, and the check's own)
        self.assertEqual({("2", "QNew")},
                         set(re.findall(r"\[host(\d)\] C: \S+ STATUS (\S+)", out)))
        self.assertRegex(out, rf"Quick check: 5 of {self.nfolders + 1} folders changed")
        got = marks()
        self.assertEqual(5, len(got), got)
        for name in ("INBOX", "Sent", "Trash", "QNew"):
            self.assertIn(name, got)
        self.assertEqual(0, stat(out, "Messages transferred") or 0)
        # a second check finds the same: nothing was recorded as synced
        rc, out = run_sync("--redis", redis, "--quickcheck")
        self.assertEqual(0, rc, out[-3000:])
        self.assertRegex(out, rf"Quick check: 5 of {self.nfolders + 1} folders changed")

    def test_state_saved_when_redis_dropped_the_connection(self):
        """The state is written on the connection that read it; when Redis
        closed that one meanwhile (its client timeout, during a long run),
        the state is written on a new one: nothing lost, no error."""
        port = str(ENV.values["FERRY_REDIS_PORT"])
        cli = ["redis-cli", "-p", port]
        forget_redis_state(cli)
        self.addCleanup(forget_redis_state, cli)
        self.addCleanup(subprocess.run, cli + ["CONFIG", "SET", "timeout", "0"],
                        capture_output=True)
        subprocess.run(cli + ["CONFIG", "SET", "timeout", "1"], check=True, capture_output=True)
        self.change_source()  # two new messages, copied at 1/s: a run of 2 s or more
        rc, out = run_sync("--redis", f"127.0.0.1:{port}", "--maxmessagespersecond", "1")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(2, stat(out, "Messages transferred"))
        self.assertNotIn("State: cannot", out, out[-3000:])
        subprocess.run(cli + ["CONFIG", "SET", "timeout", "0"], check=True, capture_output=True)
        rc, out = run_sync("--redis", f"127.0.0.1:{port}")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(self.nfolders, out.count("unchanged since the last run, skipped"),
                         out[-3000:])

    def test_state_write_fenced_by_the_lease(self):
        """--fence (a daemon's job): the state is written only while the
        queue item's owner (rep:{s}:owner) is still the run's "worker:token";
        a run whose lease was taken over (another token) writes nothing and
        says why, and the newer owner's state stands."""
        port = str(ENV.values["FERRY_REDIS_PORT"])
        redis = f"127.0.0.1:{port}"
        cli = ["redis-cli", "-p", port]
        forget_redis_state(cli)
        self.addCleanup(forget_redis_state, cli)
        shard = fh.shard(USER)
        owner_key, state_key = f"rep:{{{shard}}}:owner", f"rep:{{{shard}}}:st:{USER}"
        member = f"{USER}\tINBOX"
        self.addCleanup(subprocess.run, cli + ["HDEL", owner_key, member], capture_output=True)
        # the item belongs to another worker's newer claim
        subprocess.run(cli + ["HSET", owner_key, member, "other:8"], check=True,
                       capture_output=True)
        rc, out = run_sync("--redis", redis, "--folder", "INBOX", "--fence",
                           f"{member}\tme:7")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("lease on the folder was lost", out)
        self.assertEqual("0", subprocess.run(cli + ["EXISTS", state_key], capture_output=True,
                                             text=True).stdout.strip())
        # the run still holds it: written
        subprocess.run(cli + ["HSET", owner_key, member, "me:7"], check=True,
                       capture_output=True)
        rc, out = run_sync("--redis", redis, "--folder", "INBOX", "--fence",
                           f"{member}\tme:7")
        self.assertEqual(0, rc, out[-3000:])
        self.assertNotIn("State: cannot", out, out[-3000:])
        fields = subprocess.run(cli + ["HKEYS", state_key], capture_output=True,
                                text=True).stdout.split("\n")
        self.assertIn("INBOX", fields)
        self.assertIn("_pair", fields)
        maps = subprocess.run(cli + ["--scan", "--pattern", f"rep:{{{shard}}}:map:{USER}:*"],
                              capture_output=True, text=True).stdout.splitlines()
        self.assertEqual([f"rep:{{{shard}}}:map:{USER}:INBOX"], maps)  # --folder INBOX
        rc, out = run_sync("--redis", redis, "--folder", "INBOX")
        self.assertEqual(1, out.count("unchanged since the last run, skipped"), out[-3000:])

    def test_move_hint_copies_inside_host2(self):
        """A message moved on host1 from INBOX to Sent, with the proxy's move
        hint in Redis (rkeys.h: "move", from, to, UIDVALIDITY, COPYUID sets):
        Sent's sync copies it inside host2 from INBOX's copy (UID COPY) with
        no body read on host1, and with host1's flags (not those of INBOX's
        copy); a hint the state cannot vouch for is ignored (the message is
        uploaded as usual)."""
        port = str(ENV.values["FERRY_REDIS_PORT"])
        redis = f"127.0.0.1:{port}"
        cli = ["redis-cli", "-p", port]
        hint_key = f"rep:{{{fh.shard(USER)}}}:hint:{USER}"
        forget_redis_state(cli, hint_key)
        self.addCleanup(forget_redis_state, cli, hint_key)
        rc, out = run_sync("--redis", redis)
        self.assertEqual(0, rc, out[-3000:])

        def move(uid_index, to):
            imap = src_imap()
            try:
                imap.select("INBOX")
                typ, data = imap.uid("SEARCH", None, "ALL")
                uid = data[0].split()[uid_index].decode()
                # a flag host2's INBOX copy lacks: the copy in Sent must get it
                imap.uid("STORE", uid, "+FLAGS", "($MovedFlag)")
                return copyuid(self, imap, "MOVE", uid, to)
            finally:
                imap.logout()

        uv, src, dst = move(0, "Sent")
        subprocess.run(cli + ["LPUSH", hint_key, f"move\tINBOX\tSent\t{uv}\t{src}\t{dst}"],
                       check=True, capture_output=True)
        # a hint naming a UID the state has not mapped: ignored
        uv, src2, dst2 = move(1, "Sent")
        subprocess.run(cli + ["LPUSH", hint_key, f"move\tINBOX\tSent\t{uv}\t999999\t{dst2}"],
                       check=True, capture_output=True)
        # malformed hints (whoever wrote them) are skipped, nothing else
        for bad in ("move", "move\tINBOX", f"move\tINBOX\tSent\t{uv}\t*\t1:*",
                    f"move\tINBOX\tSent\t{uv}\t1:4294967295\t1:4294967295",
                    f"move\tINBOX\tSent\t{uv}\t1,2\t3", f"copy\tINBOX\tSent\tx\t{src}\t{dst}",
                    "rename\tINBOX\tSent", "\t\t\t\t\t", "x" * 5000):
            subprocess.run(cli + ["RPUSH", hint_key, bad], check=True, capture_output=True)
        rc, out = run_sync("--redis", redis, "--folder", "Sent", "--debugimap")
        self.assertEqual(0, rc, "\n".join(l for l in out.splitlines()
                                          if "Err" in l or "rror" in l or "STORE" in l)[-3000:])
        self.assertIn("inside host2", out, out[-4000:])
        self.assertRegex(out, r"\[host2\] C: \S+ UID COPY \d+ Sent")
        self.assertEqual(2, stat(out, "Messages transferred"))
        # the hints naming Sent in its UIDVALIDITY are used up (the daemon's
        # --delete2 wait looks for unused ones); the others stay
        left = subprocess.run(cli + ["LRANGE", hint_key, "0", "-1"], capture_output=True,
                              text=True).stdout.splitlines()
        self.assertFalse([h for h in left if h.startswith(f"move\tINBOX\tSent\t{uv}\t")],
                         left)
        self.assertIn("rename\tINBOX\tSent", left)
        self.assertIn(f"copy\tINBOX\tSent\tx\t{src}\t{dst}", left)
        self.assertEqual(1, len(BODY_FETCH.findall(out)), "only the unvouched one is read")
        # the copied one's bytes count too (as "Messages transferred" does)
        sizes = [int(m) for m in re.findall(r"msg Sent/\d+ \{(\d+)\}", out)]
        self.assertEqual(2, len(sizes), out[-3000:])
        self.assertEqual(sum(sizes), stat(out, "Total bytes transferred"))
        imap = ENV.imap("dst", USER)
        try:
            imap.select("Sent", readonly=True)
            typ, data = imap.uid("SEARCH", None, "KEYWORD", "$MovedFlag")
            self.assertEqual(2, len(data[0].split()), "the moved messages' host1 flags")
        finally:
            imap.logout()
        rc, out = run_sync("--redis", redis, "--delete2")
        self.assertEqual(0, rc, out[-3000:])
        self.assert_identical()

        # a hint for a message already there (Sent synced before the hint
        # came): a pass with nothing to copy uses it up under --delete2 (the
        # daemon's wait), and leaves it alone otherwise
        stale = f"move\tINBOX\tSent\t{uv}\t{src}\t{dst}"
        subprocess.run(cli + ["LPUSH", hint_key, stale], check=True, capture_output=True)
        for n, extra in enumerate(([], ["--delete2"])):
            imap = src_imap()
            try:
                imap.select("Sent")
                imap.uid("STORE", dst, "+FLAGS", f"($Stale{n})")
            finally:
                imap.logout()
            rc, out = run_sync("--redis", redis, "--folder", "Sent", *extra)
            self.assertEqual(0, rc, out[-3000:])
            self.assertIn("changed since the last run: incremental pass", out, out[-3000:])
            left = subprocess.run(cli + ["LRANGE", hint_key, "0", "-1"], capture_output=True,
                                  text=True).stdout.splitlines()
            self.assertEqual(not extra, stale in left, (extra, [h[:60] for h in left]))

        # one message copied twice to Sent (two copy hints naming the same
        # source UID): one copy inside host2, the other uploaded, both there
        imap = src_imap()
        try:
            imap.select("INBOX")
            typ, data = imap.uid("SEARCH", None, "ALL")
            uid = data[0].split()[0].decode()
            typ, data = imap.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            msgid = data[0][1].decode().split(":", 1)[1].strip()
            hints = []
            for _ in range(2):
                code = copyuid(self, imap, "COPY", uid, "Sent")
                hints.append(f"copy\tINBOX\tSent\t{code[0]}\t{code[1]}\t{code[2]}")
        finally:
            imap.logout()
        for hint in hints:
            subprocess.run(cli + ["LPUSH", hint_key, hint], check=True, capture_output=True)
        rc, out = run_sync("--redis", redis, "--folder", "Sent")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(1, out.count("inside host2"), str(hints) + out[-4000:])
        self.assertEqual(2, stat(out, "Messages transferred"))
        imap = ENV.imap("dst", USER)
        try:
            imap.select("Sent", readonly=True)
            typ, data = imap.uid("SEARCH", None, "HEADER", "Message-Id", msgid)
            self.assertEqual(2, len(data[0].split()), f"copies of {msgid} in host2's Sent")
        finally:
            imap.logout()
        self.assert_identical()

    def test_move_hint_after_the_source_folder_synced(self):
        """The proxy marks both folders of a MOVE; when the source folder's
        sync runs first, it drops the moved message from INBOX's UID map.
        The pair is kept aside (rep:{s}:gone:<user>:INBOX, for as long as
        hints live; only for messages a move hint names), so Sent's sync
        still copies the message inside host2 instead of uploading it
        again."""
        port = str(ENV.values["FERRY_REDIS_PORT"])
        redis = f"127.0.0.1:{port}"
        cli = ["redis-cli", "-p", port]
        hint_key = f"rep:{{{fh.shard(USER)}}}:hint:{USER}"
        gone_key = f"rep:{{{fh.shard(USER)}}}:gone:{USER}:INBOX"
        forget_redis_state(cli, hint_key)
        self.addCleanup(forget_redis_state, cli, hint_key)
        rc, out = run_sync("--redis", redis)
        self.assertEqual(0, rc, out[-3000:])
        hints = []
        imap = src_imap()
        try:
            imap.select("INBOX")
            typ, data = imap.uid("SEARCH", None, "ALL")
            for uid in data[0].split()[:2]:
                code = copyuid(self, imap, "MOVE", uid.decode(), "Sent")
                hints.append(f"move\tINBOX\tSent\t{code[0]}\t{code[1]}\t{code[2]}")
        finally:
            imap.logout()
        for hint in hints:
            subprocess.run(cli + ["LPUSH", hint_key, hint], check=True, capture_output=True)
        # the source folder first: its incremental pass sees two vanished
        rc, out = run_sync("--redis", redis, "--folder", "INBOX")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("2 vanished on host1", out, out[-3000:])
        ttl = int(subprocess.run(cli + ["TTL", gone_key], capture_output=True,
                                 text=True).stdout)
        self.assertTrue(86000 < ttl <= 86400, ttl)
        # two hints from INBOX: its kept pairs are read once
        gets, rc, out = monitored(cli, rf'"GET" "{re.escape(gone_key)}"', "--redis", redis,
                                  "--folder", "Sent", "--debugimap")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(2, out.count("inside host2"), out[-4000:])
        self.assertEqual(1, len(gets), gets)
        self.assertRegex(out, r"\[host2\] C: \S+ UID COPY \d+(:\d+|,\d+) Sent")
        self.assertEqual(0, len(BODY_FETCH.findall(out)), "no body read on host1")
        # a message that vanished with no move hint naming it: nothing kept
        subprocess.run(cli + ["DEL", gone_key], check=True, capture_output=True)
        imap = src_imap()
        try:
            imap.select("INBOX")
            typ, data = imap.uid("SEARCH", None, "ALL")
            typ, data = imap.uid("MOVE", data[0].split()[0].decode(), "Sent")
            self.assertEqual("OK", typ, data)
        finally:
            imap.logout()
        rc, out = run_sync("--redis", redis, "--folder", "INBOX")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("1 vanished on host1", out, out[-3000:])
        self.assertEqual("0", subprocess.run(cli + ["EXISTS", gone_key], capture_output=True,
                                             text=True).stdout.strip())
        # --delete2 takes the host2 copies away: nothing is kept for hints
        rc, out = run_sync("--redis", redis, "--delete2")
        self.assertEqual(0, rc, out[-3000:])
        self.assert_identical()
        subprocess.run(cli + ["DEL", gone_key], check=True, capture_output=True)
        imap = src_imap()
        try:
            imap.select("INBOX")
            typ, data = imap.uid("SEARCH", None, "ALL")
            typ, data = imap.uid("MOVE", data[0].split()[0].decode(), "Sent")
            self.assertEqual("OK", typ, data)
        finally:
            imap.logout()
        rc, out = run_sync("--redis", redis, "--delete2", "--folder", "INBOX")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("1 vanished on host1 (1 deleted on host2)", out, out[-3000:])
        self.assertEqual("0", subprocess.run(cli + ["EXISTS", gone_key], capture_output=True,
                                             text=True).stdout.strip())
        rc, out = run_sync("--redis", redis, "--delete2")
        self.assertEqual(0, rc, out[-3000:])
        self.assert_identical()

    def test_parallel_workers(self):
        """--parallel N: folders synced by N worker processes, each with its
        own connections; their counters and state merge into one report and
        one state, so the next run skips everything."""
        fh.wipe(ENV, "dst", USER)
        shutil.rmtree(os.path.join(WORKDIR, "imapferry_state"), ignore_errors=True)
        rc, out = run_sync("--parallel", "3")
        self.assertEqual(0, rc, out[-3000:])
        self.assertIn("by 3 workers (--parallel)", out, out[-3000:])
        self.assertGreater(stat(out, "Messages transferred"), 100)
        self.assertRegex(out, r"The sync looks good, all \d+ identified messages")
        self.assert_identical()
        self.change_source()
        rc, out = run_sync("--parallel", "2", "--debugimap")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(3, out.count("changed since the last run: incremental pass"))
        self.assertEqual(2, stat(out, "Messages transferred"))
        self.assert_identical()
        rc, out = run_sync("--parallel", "2")
        self.assertEqual(0, rc, out[-3000:])
        self.assertEqual(self.nfolders, out.count("unchanged since the last run, skipped"))
        self.assertIn("The sync looks good", out, out[-3000:])

    def test_nodelta_means_full_pass(self):
        self.change_source()
        rc, out = run_sync("--nodelta", "--debugimap")
        self.assertEqual(0, rc, out[-3000:])
        self.assertNotIn("incremental pass", out, out[-3000:])
        self.assertRegex(out, r"C: \S+ UID FETCH 1:\* \(UID FLAGS INTERNALDATE")
        self.assert_identical()


if __name__ == "__main__":
    unittest.main(verbosity=2)
