#!/usr/bin/env python3
"""Benchmark of live replication (issue 6): imapferry-proxy in front of the
source Dovecot, imapferry-sync --daemon replicating to the destination.

Starts the test harness's two Dovecots in a temporary directory with extra
accounts (harness start(extra_users=...)), a private redis-server, the proxy
and the daemon (master-user logins), then prints:

  1. lag     N users (--users) each run a steady mixed load through the proxy
             (APPEND of a message with a unique Message-Id, UID STORE
             +FLAGS (\\Flagged) on one of its messages, UID EXPUNGE of
             another; --rate operations/s per user) for --duration seconds.
             For each change: time from the client's tagged OK to the change
             being visible on the destination, seen by one polling connection
             per user (SEARCH HEADER Message-Id [FLAGGED]); the daemon runs
             with --delete2 so expunges are mirrored (checked by absence).
             Median, p99 and count per kind and overall.
  2. sweep   M idle users (--sweep-users) x F folders (--folders), made warm
             by one imapferry-sync --redis run per user (the state the
             daemon's quick check reads); then a whole-user mark for each is
             put in the due sets at once and the time until every due and
             inflight set is empty is printed; --sweeps times in a row (the
             first one is the first check since Dovecot made the users'
             folders: it updates their indexes once, which costs it more).
  3. burst   --burst pipelined UID STOREs (+FLAGS/-FLAGS \\Flagged alternately)
             on one folder through the proxy; the folder syncs the daemon ran
             for it (its "sync USER [INBOX] started" lines) are counted.

    bench/bench_replication.py [--users 20] [--duration 20] [--sweep-users 100]
        [--folders 20] [--sweeps 2] [--burst 10000] [--workers 4] [--phases lag,sweep,burst]
        [--daemon-arg ARG ...]
        [--build build]

Every process started here (Dovecots, Redis, proxy, daemon and its syncs) is
stopped on exit, Ctrl-C or error.
"""
import argparse
import imaplib
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "harness"))
import ferry_harness as fh  # noqa: E402

HOST = fh.HOST
SHARDS = 16


# Added to the bench's own Dovecots (never to config/test), as a mail server
# that takes many logins is configured (Dovecot's "high-performance" login
# mode, see README "Tuning the servers"): one imap-login process serves many
# connections instead of one process forked per connection (the default,
# service_count 1, also keeps a process per TLS session and refuses logins
# past process_limit 100), and imap processes are reused for later sessions
# (service_count, safe here: every user is the same system user) with a few
# forked ahead. Measured on this machine: Dovecot's CPU per login falls from
# ~35 ms to ~4 ms. 10 sessions per user and IP are also few for the pollers.
DOVECOT_OVERRIDE = """
# --- bench/bench_replication.py: hundreds of concurrent sessions ---
mail_max_userip_connections = 100
service imap-login {
  service_count = 0
  client_limit = 1000
  process_min_avail = 2
  process_limit = 4
}
service imap {
  service_count = 1000
  process_min_avail = 4
  process_limit = 2000
}
"""


def dovecot_reconfigure(env):
    for side in fh.SIDES:
        conf = env.values[f"FERRY_{side.upper()}_DOVECOT_CONF"]
        with open(conf, "a") as f:
            f.write(DOVECOT_OVERRIDE)
        r = subprocess.run(["doveadm", "-c", conf, "reload"], capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"doveadm reload failed: {r.stderr.strip()}")
    deadline = time.monotonic() + 15
    time.sleep(0.5)  # the masters restart their services
    for side in fh.SIDES:
        while True:
            try:
                env.imap(side, "burst").logout()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def crc16(data):
    """CRC16-CCITT (XMODEM), as rk_crc16() and Redis Cluster."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def shard(user):
    return crc16(user.encode()) % SHARDS


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


class Redis:
    def __init__(self, workdir):
        self.sock = self.rfile = None
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.cli("PING") != "PONG":
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def cli(self, *args, stdin=None):
        p = subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                           text=True, input=stdin)
        return p.stdout.strip()

    def command(self, *args):
        """One command on a kept connection (a redis-cli per poll cost the
        machine more CPU than Redis itself): an integer or bulk reply."""
        if self.sock is None:
            self.sock = socket.create_connection((HOST, self.port), timeout=10)
            self.rfile = self.sock.makefile("rb")
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        line = self.rfile.readline()
        if line[:1] == b":":
            return int(line[1:])
        if line[:1] == b"$":
            n = int(line[1:])
            return None if n < 0 else self.rfile.read(n + 2)[:-2].decode()
        if line[:1] == b"+":
            return line[1:].strip().decode()
        raise RuntimeError(f"Redis: {line.strip().decode(errors='replace')}")

    def queue_len(self):
        """Total ZCARD of every rep:{s}:due and rep:{s}:inflight."""
        script = ("local n = 0 for s = 0, 15 do n = n + redis.call('ZCARD', 'rep:{'..s..'}:due')"
                  " + redis.call('ZCARD', 'rep:{'..s..'}:inflight') end return n")
        return self.command("EVAL", script, "0")

    def stop(self):
        if self.sock is not None:
            self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Daemon:
    def __init__(self, binary, env, redis, workdir, users_file, workers, pollactive, extra=()):
        self.log_path = os.path.join(workdir, "daemon.log")
        self.http = free_port()
        cmd = [binary, "--daemon", "--redis", f"{HOST}:{redis.port}",
               "--users", users_file, "--workers", str(workers), "--poll", "3600",
               "--lease", "60", "--http", f"{HOST}:{self.http}", "--tmpdir", workdir,
               "--delete2",
               "--host1", HOST, "--port1", str(env.port("src", "imap")),
               "--authuser1", fh.MASTER_USER, "--password1", fh.MASTER_PASS,
               "--sslargs1", "SSL_ca_file=" + str(env.ca_file),
               "--host2", HOST, "--port2", str(env.port("dst", "imap")),
               "--authuser2", fh.MASTER_USER, "--password2", fh.MASTER_PASS,
               "--sslargs2", "SSL_ca_file=" + str(env.ca_file),
               "--pollactive", str(pollactive)] + list(extra)
        self.out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its syncs too
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.out.close()


CLK_TCK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid):
    """CPU seconds of pid and its live descendants, with what each reaped."""
    total = 0.0
    for p in [pid] + fh._descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                v = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in v[11:15]) / CLK_TCK
        except OSError:
            pass
    return total


def cpu_snapshot(env, daemon, redis):
    return {"daemon": tree_cpu(daemon.proc.pid), "src Dovecot": tree_cpu(env.src_dovecot_pid),
            "dst Dovecot": tree_cpu(env.dst_dovecot_pid), "Redis": tree_cpu(redis.proc.pid)}


def lag_cpu(env, daemon, redis, proxy):
    d = cpu_snapshot(env, daemon, redis)
    d["proxy"] = tree_cpu(proxy.proc.pid)
    return d


def cpu_line(before, after):
    return ", ".join(f"{k} {after[k] - before[k]:.1f} s" for k in before)


def wait_queue_empty(redis, daemon, timeout, settle=0.0):
    """Waits until every due and inflight set is empty (for settle s in a row)."""
    t0 = time.monotonic()
    empty_since = None
    while True:
        if daemon.proc.poll() is not None:
            raise RuntimeError("the daemon exited:\n" + daemon.log()[-3000:])
        n = redis.queue_len()
        now = time.monotonic()
        if n == 0:
            empty_since = empty_since or now
            if now - empty_since >= settle:
                return now - t0
        else:
            empty_since = None
        if now - t0 > timeout:
            raise RuntimeError(f"queue not empty after {timeout} s ({n} items)")
        time.sleep(0.05)


def message(user, tag, n, size=600):
    return (f"From: bench@example.org\r\nTo: {user}@example.org\r\nSubject: {tag} {n}\r\n"
            f"Message-Id: <{tag}-{n}@{user}.example.org>\r\n\r\n"
            + "replication benchmark line\r\n" * max(1, size // 28)).encode()


def proxy_login(env, proxy, user):
    imap = imaplib.IMAP4(HOST, proxy.port)
    imap.starttls(ssl_context=env.ssl_context())
    imap.login(user, env.password(user))
    return imap


# --- 1. replication lag -------------------------------------------------------

class UserLoad:
    """One user's client (through the proxy) and its destination poller."""

    def __init__(self, env, proxy, user, rate, stop_at, nusers, ready, go, moves=False):
        self.env, self.proxy, self.user = env, proxy, user
        self.moves = moves  # every other EXPUNGE step (the first) is a UID MOVE to Archive
        # every client and poller logs in before the first change: the
        # figures are of a steady load, not of 200 logins at once
        self.ready, self.go = ready, go
        self.rate, self.stop_at = rate, stop_at
        # between two looks at the destination: 20/s for up to 20 users, then
        # fewer, so that the pollers do not load the destination Dovecot more
        # than the replication does
        self.interval = 0.05 * max(1.0, nusers / 20)
        self.lock = threading.Lock()
        self.pending = []  # [kind, msgid, t_ok]
        self.lags = {"APPEND": [], "STORE": [], "EXPUNGE": [], "MOVE": []}
        self.guids = {}  # msgid: the destination INBOX copy's X-GUID (--moves)
        self.moved = []  # msgids moved to Archive
        self.visible = []  # (uid on src, msgid), appends seen on dst, not yet used
        self.flagged = []  # (uid, msgid) STOREs seen on dst, not yet expunged
        self.errors = []
        self.done = False

    def client(self, offset):
        try:
            time.sleep(offset)  # logins spread out, not 100 at once
            imap = proxy_login(self.env, self.proxy, self.user)
            if self.moves:
                imap.create("Archive")
            imap.select("INBOX")
            self.ready.wait()
            self.go.wait()
            n = 0
            period = 1.0 / self.rate
            # a steady load: each user's operations at its own phase
            nxt = time.monotonic() + random.uniform(0, period)
            time.sleep(max(0.0, nxt - time.monotonic()))
            while time.monotonic() < self.stop_at:
                kind = ("APPEND", "STORE", "EXPUNGE")[n % 3]
                if kind == "EXPUNGE" and self.moves and n % 6 == 2:
                    kind = "MOVE"
                with self.lock:
                    target = None
                    if kind == "STORE" and self.visible:
                        target = self.visible.pop(0)
                    elif kind in ("EXPUNGE", "MOVE") and self.flagged:
                        target = self.flagged.pop(0)
                if kind != "APPEND" and target is None:
                    kind = "APPEND"
                if kind == "APPEND":
                    msgid = f"<lag-{n}@{self.user}.example.org>"
                    typ, data = imap.append("INBOX", None, None, message(self.user, "lag", n))
                    t_ok = time.monotonic()
                    fh.imap_check((typ, data), "APPEND")
                    m = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
                    uid = int(m.group(1))
                    with self.lock:
                        self.pending.append(["APPEND", msgid, t_ok, uid])
                elif kind == "STORE":
                    uid, msgid = target
                    typ, data = imap.uid("STORE", str(uid), "+FLAGS", "(\\Flagged)")
                    t_ok = time.monotonic()
                    fh.imap_check((typ, data), "STORE")
                    with self.lock:
                        self.pending.append(["STORE", msgid, t_ok, uid])
                elif kind == "MOVE":
                    uid, msgid = target
                    typ, data = imap.uid("MOVE", str(uid), "Archive")
                    t_ok = time.monotonic()
                    fh.imap_check((typ, data), "UID MOVE")
                    with self.lock:
                        self.pending.append(["MOVE", msgid, t_ok, uid])
                        self.moved.append(msgid)
                else:
                    uid, msgid = target
                    fh.imap_check(imap.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)"),
                                  "STORE")
                    typ, data = imap.uid("EXPUNGE", str(uid))
                    t_ok = time.monotonic()
                    fh.imap_check((typ, data), "UID EXPUNGE")
                    with self.lock:
                        self.pending.append(["EXPUNGE", msgid, t_ok, uid])
                n += 1
                nxt += period
                delay = nxt - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            imap.logout()
        except Exception as e:  # reported by the caller
            self.errors.append(f"client {self.user}: {e!r}")
        finally:
            self.done = True

    def poller(self, offset, deadline_after):
        try:
            time.sleep(offset)
            imap = self.env.imap("dst", self.user, master=True)
            imap.select("INBOX", readonly=True)
            self.ready.wait()
            self.go.wait()
            while True:
                with self.lock:
                    todo = list(self.pending)
                if not todo:
                    if self.done:
                        break
                    time.sleep(0.02)
                    continue
                if self.done and time.monotonic() > self.stop_at + deadline_after:
                    break
                # one round trip shows the whole folder (the header is in
                # Dovecot's cache after the first time): cheap to repeat
                imap.noop()
                typ, data = imap.uid("FETCH", "1:*",
                                     "(FLAGS %sBODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
                                     % ("X-GUID " if self.moves else ""))
                t = time.monotonic()
                seen = {}
                guids = {}
                data = data or []
                for i, part in enumerate(data):
                    if isinstance(part, tuple):
                        # FLAGS before the literal or after it (the next item)
                        rest = data[i + 1] if i + 1 < len(data) else b""
                        rest = rest if isinstance(rest, bytes) else b""
                        m = re.search(rb"<[^>]*>", part[1])
                        if m:
                            seen[m.group(0).decode()] = b"\\Flagged" in part[0] + rest
                            g = re.search(rb"X-GUID (\S+)", part[0] + rest)
                            if g:
                                guids[m.group(0).decode()] = g.group(1).decode()
                with self.lock:
                    for item in todo:
                        kind, msgid = item[0], item[1]
                        if kind == "APPEND":
                            done = msgid in seen
                        elif kind == "STORE":
                            done = seen.get(msgid, False)
                        else:
                            done = msgid not in seen
                        if done:
                            if kind == "STORE" and msgid in guids:
                                self.guids[msgid] = guids[msgid]
                            self.pending.remove(item)
                            self.lags[kind].append(t - item[2])
                            if kind == "APPEND":
                                self.visible.append((item[3], msgid))
                            elif kind == "STORE":
                                self.flagged.append((item[3], msgid))
                time.sleep(self.interval)
            imap.logout()
        except Exception as e:
            self.errors.append(f"poller {self.user}: {e!r}")


def moves_line(env, loads):
    """How the moved messages reached Archive on the destination: a copy of
    the destination's INBOX copy (Dovecot keeps the X-GUID) or uploaded
    again (a new X-GUID)."""
    copied = uploaded = missing = unknown = 0
    for ld in loads:
        if not ld.moved:
            continue
        imap = env.imap("dst", ld.user, master=True)
        try:
            imap.select("Archive", readonly=True)
            typ, data = imap.uid("FETCH", "1:*", "(X-GUID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        finally:
            imap.logout()
        there = {}
        data = data or []
        for i, part in enumerate(data):
            if isinstance(part, tuple):
                rest = data[i + 1] if i + 1 < len(data) and isinstance(data[i + 1], bytes) else b""
                m = re.search(rb"<[^>]*>", part[1])
                g = re.search(rb"X-GUID (\S+)", part[0] + rest)
                if m and g:
                    there[m.group(0).decode()] = g.group(1).decode()
        for msgid in ld.moved:
            if msgid not in there:
                missing += 1
            elif msgid not in ld.guids:
                unknown += 1
            elif there[msgid] == ld.guids[msgid]:
                copied += 1
            else:
                uploaded += 1
    return (f"MOVE: {copied} moved messages copied inside the destination (same X-GUID), "
            f"{uploaded} uploaded again, {missing} not in Archive there, {unknown} unknown")


def phase_lag(a, env, proxy, redis, daemon, users):
    print(f"\n1. replication lag: {len(users)} users x {a.rate:g} ops/s each for "
          f"{a.duration:g} s through the proxy (APPEND, UID STORE +FLAGS \\Flagged, "
          f"UID EXPUNGE{' or UID MOVE to Archive' if a.moves else ''} in turn; "
          f"daemon --workers {a.workers} --delete2 "
          f"--pollactive {a.pollactive})", flush=True)
    ready = threading.Barrier(2 * len(users) + 1)
    go = threading.Event()
    loads = [UserLoad(env, proxy, u, a.rate, None, len(users), ready, go, a.moves)
             for u in users]
    threads = []
    for i, ld in enumerate(loads):
        offset = 2.0 * i / len(loads)
        threads.append(threading.Thread(target=ld.client, args=(offset,), daemon=True))
        threads.append(threading.Thread(target=ld.poller, args=(offset, a.grace),
                                        daemon=True))
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=120)
    except threading.BrokenBarrierError:
        pass  # a login failed: its thread reports it
    time.sleep(1.0)  # the logins' own marks and syncs settle
    if a.moves:
        wait_queue_empty(redis, daemon, 120, settle=1.0)  # and the Archive folders' CREATEs
    stop_at = time.monotonic() + a.duration
    for ld in loads:
        ld.stop_at = stop_at
    cpu0, t0 = lag_cpu(env, daemon, redis, proxy), os.times()
    go.set()
    for t in threads:
        t.join()
    cpu1, t1 = lag_cpu(env, daemon, redis, proxy), os.times()
    errors = [e for ld in loads for e in ld.errors]
    for e in errors[:5]:
        print("   error:", e)
    missing = sum(len(ld.pending) for ld in loads)
    total = []
    for kind in ("APPEND", "STORE", "EXPUNGE", "MOVE"):
        lags = [x for ld in loads for x in ld.lags[kind]]
        total += lags
        if lags:
            print(f"   {kind:8s} lag: median {1000 * statistics.median(lags):6.0f} ms, "
                  f"p99 {1000 * pct(lags, 99):6.0f} ms, max {1000 * max(lags):6.0f} ms, "
                  f"n = {len(lags)}")
    if total:
        print(f"   all      lag: median {1000 * statistics.median(total):6.0f} ms, "
              f"p99 {1000 * pct(total, 99):6.0f} ms, n = {len(total)}; "
              f"not seen within {a.grace:g} s after the load (left out of the "
              f"figures): {missing}")
    if a.moves:
        wait_queue_empty(redis, daemon, 120, settle=1.0)
        print("   " + moves_line(env, loads), flush=True)
    log = daemon.log()
    print(f"   daemon: {log.count('] started')} syncs started so far, "
          f"{log.count(' failed (exit')} failed; destination polled every "
          f"{1000 * loads[0].interval:.0f} ms (the lag's resolution); machine load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    # the load and its grace period; the bench's clients and pollers are this process
    print(f"   CPU during the load: {cpu_line(cpu0, cpu1)}, the bench's clients and pollers "
          f"{t1.user + t1.system - t0.user - t0.system:.1f} s (of "
          f"{(t1.elapsed - t0.elapsed) * os.cpu_count():.0f} s on {os.cpu_count()} cores)",
          flush=True)


# --- 2. sweep -----------------------------------------------------------------

def make_folders(env, users, nfolders):
    """F empty folders per user, made on disk on both sides (maildir++ on the
    source: .Fnn; LAYOUT=fs on the destination: Fnn/), owned by the mail uid."""
    uid, gid = int(env.values["FERRY_MAIL_UID"]), os.getegid()
    if os.geteuid() == 0:
        import pwd
        gid = pwd.getpwuid(uid).pw_gid
    for side, fmt in (("src", ".F{:02d}"), ("dst", "F{:02d}")):
        root = env.values[f"FERRY_{side.upper()}_MAIL_DIR"]
        for u in users:
            for i in range(nfolders):
                base = os.path.join(root, u, fmt.format(i))
                for sub in ("cur", "new", "tmp"):
                    os.makedirs(os.path.join(base, sub), exist_ok=True)
            for dirpath, dirnames, filenames in os.walk(os.path.join(root, u)):
                os.chown(dirpath, uid, gid)


def warm_cmd(binary, env, redis, user, workdir):
    return [binary, "--redis", f"{HOST}:{redis.port}", "--tmpdir", workdir,
            "--nolog", "--pidfile", "", "--nofoldersizes", "--syncduplicates", "--delete2",
            "--host1", HOST, "--port1", str(env.port("src", "imap")),
            "--authuser1", fh.MASTER_USER, "--user1", user,
            "--sslargs1", "SSL_ca_file=" + str(env.ca_file),
            "--host2", HOST, "--port2", str(env.port("dst", "imap")),
            "--authuser2", fh.MASTER_USER, "--user2", user,
            "--sslargs2", "SSL_ca_file=" + str(env.ca_file)]


def warm_users(binary, env, redis, users, workdir, parallel):
    """One imapferry-sync --redis run per user, `parallel` at a time."""
    penv = dict(os.environ, IMAPSYNC_PASSWORD1=fh.MASTER_PASS,
                IMAPSYNC_PASSWORD2=fh.MASTER_PASS)
    todo, running, failed = list(users), [], []
    while todo or running:
        while todo and len(running) < parallel:
            u = todo.pop(0)
            running.append((u, subprocess.Popen(warm_cmd(binary, env, redis, u, workdir),
                                                stdout=subprocess.DEVNULL,
                                                stderr=subprocess.DEVNULL, env=penv)))
        time.sleep(0.02)
        for item in list(running):
            if item[1].poll() is not None:
                running.remove(item)
                if item[1].returncode != 0:
                    failed.append(item[0])
    return failed


def phase_sweep(a, env, redis, daemon, users, binary, workdir):
    print(f"\n2. sweep: {len(users)} idle users x {a.folders} folders "
          f"(+ INBOX, Drafts, Sent, Trash, Junk), no changes", flush=True)
    t0 = time.monotonic()
    make_folders(env, users, a.folders)
    failed = warm_users(binary, env, redis, users, workdir, a.workers)
    if failed:
        print(f"   warm-up failed for {len(failed)} users, e.g. {failed[:3]}")
    wait_queue_empty(redis, daemon, 600, settle=1.0)
    print(f"   set-up (folders on disk, one warm-up sync per user): "
          f"{time.monotonic() - t0:.1f} s", flush=True)
    for n in range(1, a.sweeps + 1):
        sweep_once(env, redis, daemon, users, n, a.sweeps)
    print("   round trips: not counted; per user and side, whatever its number of folders: "
          "STARTTLS, CAPABILITY, AUTHENTICATE, ID, then LIST (with every folder's STATUS: "
          "LIST-STATUS), NAMESPACE and LSUB in one, LOGOUT")


def sweep_once(env, redis, daemon, users, n, total):
    """Every user's whole-user mark at once; prints the time until done."""
    log_from = len(daemon.log())
    # every user's whole-user mark, due now (Redis's clock), in one pipeline
    now_ms = int(redis.cli("TIME").split()[0]) * 1000
    cmds = "".join(f'ZADD "rep:{{{shard(u)}}}:due" LT {now_ms} "{u}\t*"\n' for u in users)
    cpu0 = cpu_snapshot(env, daemon, redis)
    t0 = time.monotonic()
    redis.cli("--pipe", stdin=cmds)
    secs = wait_queue_empty(redis, daemon, 600)
    took = time.monotonic() - t0
    time.sleep(0.3)  # Dovecot's masters reap the ended sessions' processes
    cpu1 = cpu_snapshot(env, daemon, redis)
    log = daemon.log()[log_from:]
    checks = len(re.findall(r"\[\*\] started", log))
    folder_syncs = len(re.findall(r"\[[^*\]][^\]]*\] started", log))
    what = f"sweep {n} of {total}" if total > 1 else "sweep"
    print(f"   {what}: {took:.2f} s until every due and inflight set was empty "
          f"({secs:.2f} s of waiting after the marks); {checks} quick checks, "
          f"{folder_syncs} folder syncs (0: the state was warm); "
          f"{len(users) / took:.0f} users/s; load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"   CPU during the sweep: {cpu_line(cpu0, cpu1)}", flush=True)


# --- 3. coalescing ------------------------------------------------------------

def phase_burst(a, env, proxy, redis, daemon, user):
    print(f"\n3. coalescing: {a.burst} pipelined UID STOREs on {user}'s INBOX through the "
          f"proxy", flush=True)
    imap = proxy_login(env, proxy, user)
    for n in range(20):
        imap.append("INBOX", None, None, message(user, "burst", n))
    imap.select("INBOX")
    typ, data = imap.uid("SEARCH", None, "ALL")
    uids = data[0].split()
    imap.logout()
    wait_queue_empty(redis, daemon, 120, settle=4.0)  # > the low-priority debounce
    log_from = len(daemon.log())

    raw = socket.create_connection((HOST, proxy.port))
    f = raw.makefile("rb")
    f.readline()
    raw.sendall(b"s STARTTLS\r\n")
    while not f.readline().startswith(b"s "):
        pass
    sock = env.ssl_context().wrap_socket(raw, server_hostname="localhost")
    f = sock.makefile("rb")
    sock.sendall(b"l LOGIN %s %s\r\nx SELECT INBOX\r\n" % (
        user.encode(), env.password(user).encode()))
    while not f.readline().startswith(b"x "):
        pass
    lines = []
    for n in range(a.burst):
        uid = uids[n % len(uids)].decode()
        sign = "+" if (n // len(uids)) % 2 == 0 else "-"
        lines.append(f"a{n} UID STORE {uid} {sign}FLAGS (\\Flagged)\r\n")
    ok = [0]

    def reader():
        while True:
            line = f.readline()
            if not line:
                return
            if line.startswith(b"a"):
                ok[0] += b" OK " in line
                if line.startswith(b"a%d " % (a.burst - 1)):
                    return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t0 = time.monotonic()
    sock.sendall("".join(lines).encode())
    t.join(300)
    burst_s = time.monotonic() - t0
    sock.sendall(b"z LOGOUT\r\n")
    sock.close()
    settle = wait_queue_empty(redis, daemon, 300, settle=4.0)
    log = daemon.log()[log_from:]
    syncs = len(re.findall(rf"sync {re.escape(user)} \[INBOX\] started", log))
    print(f"   {ok[0]} of {a.burst} STOREs OK in {burst_s:.2f} s "
          f"({a.burst / burst_s:.0f}/s); daemon: {syncs} syncs of {user} [INBOX] "
          f"(queue empty {settle:.1f} s after the last reply)", flush=True)
    diffs = fh.compare(env, user, "src", user, "dst")
    print(f"   {user}: source and destination "
          f"{'identical' if not diffs else f'differ: {diffs[:3]}'}")


# --- main ---------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=20, help="users of the lag phase (20)")
    ap.add_argument("--duration", type=float, default=20, help="seconds of load (20)")
    ap.add_argument("--rate", type=float, default=0.5, help="operations/s per user (0.5)")
    ap.add_argument("--grace", type=float, default=20,
                    help="seconds after the load to wait for the last changes (20)")
    ap.add_argument("--sweep-users", type=int, default=100, help="idle users (100)")
    ap.add_argument("--folders", type=int, default=20, help="folders per idle user (20)")
    ap.add_argument("--sweeps", type=int, default=2,
                    help="sweeps in a row (2: the first is the first check since Dovecot "
                         "made the folders, which costs it more)")
    ap.add_argument("--burst", type=int, default=10000, help="STOREs of the burst (10000)")
    ap.add_argument("--workers", type=int, default=4, help="daemon --workers (4)")
    ap.add_argument("--pollactive", type=int, default=3600,
                    help="daemon --pollactive (3600: its default, 60, would quick-check "
                         "every user of the initial sync in the middle of the load)")
    ap.add_argument("--moves", action="store_true",
                    help="lag phase: every other expunge is a UID MOVE to Archive instead, and "
                         "the bench counts the moves copied inside the destination")
    ap.add_argument("--daemon-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for the daemon, e.g. --daemon-arg=--noid (repeatable)")
    ap.add_argument("--phases", default="lag,sweep,burst")
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    phases = set(a.phases.split(","))
    sync_bin = os.path.abspath(os.path.join(a.build, "sync", "imapferry-sync"))
    proxy_bin = os.path.abspath(os.path.join(a.build, "proxy", "imapferry-proxy"))
    for b in (sync_bin, proxy_bin):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b}: not built (--build DIR)")

    lag_users = [f"lag{i:04d}" for i in range(a.users if "lag" in phases else 0)]
    sweep_users = [f"idle{i:04d}" for i in range(a.sweep_users if "sweep" in phases else 0)]
    burst_user = "burst"
    extra = {u: f"{u}-pw" for u in lag_users + sweep_users + [burst_user]}

    # SIGTERM/SIGHUP clean up like Ctrl-C
    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    work = tempfile.mkdtemp(prefix="ferry-replbench-")
    os.chmod(work, 0o755)  # Dovecot runs as nobody under it
    env_dir = os.path.join(work, "env")
    redis = proxy = daemon = None
    started = False
    try:
        t0 = time.monotonic()
        started = True
        env = fh.start(env_dir, quiet=True, extra_users=extra)
        dovecot_reconfigure(env)
        redis = Redis(work)
        proxy = fh.start_proxy(env, proxy_bin, redis_port=redis.port, log_dir=work,
                               extra_args=["--log-level", "warn"])
        users_file = os.path.join(work, "users")
        with open(users_file, "w") as f:
            f.write("".join(f"{u}\n" for u in lag_users + [burst_user]))
        daemon = Daemon(sync_bin, env, redis, work, users_file, a.workers, a.pollactive,
                    a.daemon_arg)
        wait_queue_empty(redis, daemon, 300, settle=1.0)
        print(f"set-up: harness, redis, proxy, daemon and the initial sync of "
              f"{len(lag_users) + 1} users: {time.monotonic() - t0:.1f} s; "
              f"{os.cpu_count()} cores, Dovecot 2.3 on 127.0.0.1, STARTTLS everywhere",
              flush=True)
        if "lag" in phases:
            phase_lag(a, env, proxy, redis, daemon, lag_users)
            wait_queue_empty(redis, daemon, 300, settle=1.0)
        if "sweep" in phases:
            phase_sweep(a, env, redis, daemon, sweep_users, sync_bin, work)
        if "burst" in phases:
            phase_burst(a, env, proxy, redis, daemon, burst_user)
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not skip this
        if daemon:
            daemon.stop()
        if proxy:
            proxy.stop()
        if redis:
            redis.stop()
        if started:
            fh.stop(env_dir, quiet=True)
        if a.keep:
            print("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
