#!/usr/bin/env python3
"""Benchmark of imapferry-proxy against a direct connection and a blind TCP relay.

Starts the test harness's servers in a temporary directory, fills alice's
source account with the harness corpus (medium: 188 messages in INBOX), and
measures each target with bench/imapload (the C load generator):

  direct    the source Dovecot itself
  haproxy   haproxy 2.6 in TCP mode, one thread (a blind relay; installed
            with apt-get when missing)
  proxy     build/proxy/imapferry-proxy (plain listener, plain upstream,
            marks to the harness Redis)

For each: a 5 MiB LITERAL+ literal and a 1 MiB synchronising one appended
and fetched back byte-identical; a pipelined mixed load (10 clients x 4
commands in flight) with commands/s and the CPU of the relay and of Dovecot
per 1,000 commands; serial latency (one command at a time) and what the
relay adds to it; 10,000 concurrent IDLE sessions and the relay's RSS. For
the proxy also: the delay from a STORE's tagged OK to its mark in Redis
(keyspace notifications, so the time is exact).

    bench/bench_proxy.py [--quick] [--build build] [--targets direct,haproxy,proxy]

The mixed and serial runs alternate between the targets (ABCABC), so a
change in the machine's load affects them all alike. On a shared machine
run it twice: figures move by several per cent between runs.
"""
import argparse
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "harness"))
import ferry_harness as fh  # noqa: E402

HOST = "127.0.0.1"
USER = "alice"
NOFILE = 65536
NOTIFY_SESSIONS = 8  # IDLE sessions that wait for a delivery (one Dovecot process each)  # 10,000 sessions through a relay take 20,000 descriptors in it
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Dovecot settings the bench adds to its own src instance (never to the
# templates in config/test): the default allows 10 sessions per user and IP.
DOVECOT_BASE_OVERRIDE = """
# --- bench/bench_proxy.py: all benchmark sessions are alice from 127.0.0.1 ---
mail_max_userip_connections = 20000
"""
# For the idle phase only (the mixed load keeps Dovecot's one process per
# session): 10,000 sessions in 500-session imap processes, and login
# processes that serve many connections. vsz_limit: 500 sessions need more
# than the default 256 MB of address space.
DOVECOT_IDLE_OVERRIDE = """
# --- bench/bench_proxy.py: 10,000 concurrent idle sessions ---
service imap-login {
  service_count = 0
  client_limit = 1000
  process_limit = 20
  process_min_avail = 2
}
service imap {
  service_count = 0
  client_limit = 500
  process_limit = 50
  vsz_limit = 2G
}
"""


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------
# processes and /proc


def proc_cpu(pid, children=False):
    """CPU seconds of a process (all its threads); with children, plus those
    of its reaped children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15 if children else 13])
    return ticks / CLK_TCK


def proc_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def dovecot_cpu(env):
    """CPU seconds used so far by the src Dovecot: the master and its live
    children (auth, stats, imap processes...) with what they reaped, plus the
    children already reaped (ended sessions). A child that ends between two
    reads moves from one term to the other, so differences are exact."""
    time.sleep(0.5)  # let the master reap the imap processes of sessions just ended
    master = env.src_dovecot_pid
    total = proc_cpu(master, children=True)
    for pid in fh._descendants(master):
        try:
            total += proc_cpu(pid, children=True)
        except OSError:
            pass
    return total


def wait_port(port, proc, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=1) as s:
                s.settimeout(5)
                if s.recv(64).startswith(b"* OK"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"{what}: no IMAP greeting on port {port} after {timeout:.0f} s")


def stop_process(proc, timeout=10.0):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def raise_nofile():
    """Children inherit this: haproxy, the proxy and imapload each need
    descriptors for 10,000 sessions (the relays twice that). Returns the
    limit obtained: without CAP_SYS_RESOURCE (containers) the hard limit
    cannot be raised."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(NOFILE, soft), max(NOFILE, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def dovecot_reconfigure(env, text):
    """Append settings to the bench's own src dovecot.conf and reload."""
    conf = env.values["FERRY_SRC_DOVECOT_CONF"]
    with open(conf, "a") as f:
        f.write(text)
    r = subprocess.run(["doveadm", "-c", conf, "reload"], capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"doveadm reload failed: {r.stderr.strip()}")
    time.sleep(1.0)  # the master restarts its services
    wait_port(env.src_imap_port, None, "dovecot src after reload")


# ---------------------------------------------------------------------------
# targets


class Target:
    def __init__(self, name, port, proc=None):
        self.name, self.port, self.proc = name, port, proc

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None


def haproxy_binary():
    path = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path or os.geteuid() != 0 or not shutil.which("apt-get"):
        return path
    print("haproxy missing: apt-get install -y haproxy ...", flush=True)
    r = subprocess.run(["apt-get", "install", "-y", "haproxy"], capture_output=True, text=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if r.returncode != 0:
        print(f"  apt-get failed: {r.stderr.strip()[-300:]}")
        return None
    return shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def start_haproxy(work, env, nofile):
    binary = haproxy_binary()
    if binary is None:
        print("haproxy: not available (the blind-relay yardstick is skipped)")
        return None
    port = fh._free_ports(1)[0]
    cfg = os.path.join(work, "haproxy.cfg")
    # One thread, like the proxy's one event loop; TCP mode relays bytes blind.
    # haproxy sizes its descriptor limit from maxconn (two per connection).
    maxconn = min(30000, (nofile - 100) // 2)
    with open(cfg, "w") as f:
        f.write(f"""global
    maxconn {maxconn}
    nbthread 1
    pidfile {work}/haproxy.pid
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    maxconn {maxconn}
frontend imap
    bind {HOST}:{port}
    default_backend dovecot
backend dovecot
    server src {HOST}:{env.src_imap_port}
""")
    log = open(os.path.join(work, "haproxy.log"), "wb")
    proc = subprocess.Popen([binary, "-f", cfg, "-db"], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=log)
    wait_port(port, proc, "haproxy")
    return Target("haproxy", port, proc)


def start_imapferry_proxy(work, env, binary):
    """The proxy with a plain listener (like haproxy's), a plain upstream and
    plaintext LOGIN allowed, logging warnings only."""
    helptext = subprocess.run([binary, "--help"], capture_output=True, text=True)
    helptext = helptext.stdout + helptext.stderr
    port, http_port = fh._free_ports(2)
    cmd = [binary, "--listen", f"{HOST}:{port}", "--upstream", f"{HOST}:{env.src_imap_port}",
           "--redis", f"{HOST}:{env.redis_port}"]
    optional = [["--upstream-plain"], ["--allow-plaintext-login"], ["--foreground"],
                ["--log-level", "warn"], ["--http", f"{HOST}:{http_port}"]]
    for opt in optional:
        if re.search(re.escape(opt[0]) + r"\b", helptext):
            cmd += opt
    log = open(os.path.join(work, "proxy.log"), "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    wait_port(port, proc, "imapferry-proxy")
    return Target("proxy", port, proc)


# ---------------------------------------------------------------------------
# imapload runs


def parse_result(out):
    for line in reversed(out.splitlines()):
        if line.startswith("RESULT "):
            return {k: (float(v) if re.fullmatch(r"-?[\d.]+", v) else v)
                    for k, v in (w.split("=", 1) for w in line.split()[1:])}
    return None


def imapload(binary, target, mode, args, timeout=300):
    cmd = [binary, "--mode", mode, "--host", HOST, "--port", str(target.port), "--user", USER,
           "--password", fh.USERS[USER], *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    res = parse_result(r.stdout)
    if r.returncode != 0 or res is None:
        raise BenchError(f"imapload {mode} via {target.name} failed (exit {r.returncode}):\n"
                         f"{r.stdout[-1500:]}{r.stderr[-1500:]}")
    return res


def run_literal(binary, target):
    """5 MiB with LITERAL+, 1 MiB synchronising: both must come back identical."""
    a = imapload(binary, target, "literal", ["--size", "5M"])
    b = imapload(binary, target, "literal", ["--size", "1M", "--sync-literal"])
    return a["identical"] == 1 and b["identical"] == 1 and a["literal"] == "plus"


def run_mixed(binary, target, env, seconds, clients, inflight):
    c0 = proc_cpu(target.pid) if target.pid else 0.0
    d0 = dovecot_cpu(env)
    res = imapload(binary, target, "mixed", ["--clients", clients, "--inflight", inflight,
                                             "--seconds", seconds])
    d1 = dovecot_cpu(env)
    c1 = proc_cpu(target.pid) if target.pid else 0.0
    res["relay_cpu_s"] = c1 - c0
    res["dovecot_cpu_s"] = d1 - d0
    return res


def run_idle(binary, target, env, sessions, hold, batch, deliver=False):
    """Opens the sessions; once all IDLE, samples the relay's RSS; with
    deliver, delivers a message over LMTP and measures when the sessions see
    its EXISTS (imapload reports CLOCK_MONOTONIC times, the clock of Python's
    time.monotonic_ns())."""
    cmd = [binary, "--mode", "idle", "--host", HOST, "--port", str(target.port), "--user", USER,
           "--password", fh.USERS[USER], "--clients", str(sessions), "--seconds", str(hold),
           "--batch", str(batch)]
    rss0 = proc_rss_mib(target.pid) if target.pid else None
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, rss, t_deliver = [], None, None
    for line in p.stdout:
        out.append(line)
        if line.startswith("IDLING"):
            time.sleep(min(1.0, hold / 3))
            if target.pid:
                rss = proc_rss_mib(target.pid)
            if not deliver:
                continue
            t_deliver = time.monotonic_ns()
            fh.deliver(env, USER, b"From: bench <bench@example.org>\r\nSubject: idle wake-up\r\n"
                                  b"Message-Id: <idle-%d@example.org>\r\n\r\nnew mail\r\n"
                                  % t_deliver)
    err = p.stderr.read()
    p.wait()
    res = parse_result("".join(out))
    for line in out:
        if line.startswith("NOTIFY ") and t_deliver is not None:
            n = {k: int(v) for k, v in (w.split("=", 1) for w in line.split()[1:])}
            res["notified"] = n["notified"]
            res["notify_p50_ms"] = (n["p50_ns"] - t_deliver) / 1e6
            res["notify_last_ms"] = (n["last_ns"] - t_deliver) / 1e6
    if res is None:
        raise BenchError(f"imapload idle via {target.name} failed:\n{''.join(out)}{err[-1500:]}")
    res["rss_mib"], res["rss0_mib"] = rss, rss0
    res["rc"] = p.returncode
    if p.returncode != 0:
        res["error"] = err.strip().splitlines()[-1] if err.strip() else ""
    return res


# ---------------------------------------------------------------------------
# mark delay: STORE through the proxy -> ZADD on the due set


def crc16_xmodem(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


class Resp:
    """A minimal RESP2 connection (commands in, replies out)."""

    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, *args):
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise BenchError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise BenchError(f"redis: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            return [self.reply() for _ in range(int(rest))]
        raise BenchError(f"redis: unexpected reply {line!r}")

    def call(self, *args):
        self.send(*args)
        return self.reply()

    def pending(self):
        return b"\r\n" in self.buf

    def drain(self):
        """Discards whatever arrived (notifications of earlier marks)."""
        self.sock.setblocking(False)
        try:
            while self.sock.recv(65536):
                pass
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(5)
        self.buf = b""


class RawImap:
    def __init__(self, port):
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf, self.tag = b"", 0
        self.line()  # greeting

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise BenchError("IMAP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def send(self, cmd):
        self.tag += 1
        t = b"m%d" % self.tag
        self.sock.sendall(t + b" " + cmd.encode() + b"\r\n")
        return t

    def command(self, cmd):
        t = self.send(cmd)
        while True:
            line = self.line()
            if line.startswith(t + b" "):
                if not line.startswith(t + b" OK"):
                    raise BenchError(f"{cmd.split()[0]} failed: {line!r}")
                return


def run_mark_delay(target, env, trials):
    """Median delay (ms) between the client receiving a UID STORE's tagged
    OK through the proxy and Redis announcing the ZADD on the user's due set
    (CONFIG SET notify-keyspace-events Kz; PSUBSCRIBE): the proxy marks on
    the server's OK, so the delay may even be negative."""
    shard = crc16_xmodem(USER.encode()) % 16
    key = f"rep:{{{shard}}}:due"
    member = f"{USER}\tINBOX".encode()
    cmd = Resp(env.redis_port)
    cmd.call("CONFIG", "SET", "notify-keyspace-events", "Kz")
    sub = Resp(env.redis_port)
    sub.call("PSUBSCRIBE", "__keyspace@*__:rep:*:due")
    imap = RawImap(target.port)
    imap.command(f"LOGIN {USER} {fh.USERS[USER]}")
    imap.command("SELECT INBOX")
    delays, missing, members = [], 0, set()
    try:
        for i in range(trials + 1):  # the first is a warm-up
            # a fresh member, so that the proxy's ZADD ... LT adds (and notifies);
            # DEL itself notifies nothing under "Kz" (it is a generic command)
            cmd.call("DEL", key)
            sub.drain()
            t = imap.send(f"UID STORE {1 + i % 50} {'+' if i % 2 == 0 else '-'}FLAGS (\\Flagged)")
            t_ok = t_ev = None
            deadline = time.monotonic() + 2.0
            while (t_ok is None or t_ev is None) and time.monotonic() < deadline:
                ready = ([] if t_ok is not None or b"\r\n" in imap.buf else [imap.sock]) + \
                        ([] if t_ev is not None or sub.pending() else [sub.sock])
                if ready:
                    r, _, _ = select.select(ready, [], [], max(0.0, deadline - time.monotonic()))
                    now = time.perf_counter()
                    for s in r:
                        chunk = s.recv(65536)
                        if not chunk:
                            raise BenchError("connection closed during the mark test")
                        if s is imap.sock:
                            imap.buf += chunk
                        else:
                            sub.buf += chunk
                else:
                    now = time.perf_counter()
                while t_ok is None and b"\r\n" in imap.buf:
                    line = imap.line()
                    if line.startswith(t + b" "):
                        if not line.startswith(t + b" OK"):
                            raise BenchError(f"STORE failed: {line!r}")
                        t_ok = now
                while t_ev is None and sub.pending():
                    ev = sub.reply()
                    if ev[-1] in (b"zadd", b"zincr"):
                        t_ev = now
            if t_ok is None:
                raise BenchError("STORE through the proxy got no answer in 2 s")
            if t_ev is None:
                missing += 1
            elif i > 0:
                delays.append((t_ev - t_ok) * 1000.0)
            score = cmd.call("ZSCORE", key, member)
            if score is not None:
                members.add(member)
            time.sleep(0.01)
        imap.send("LOGOUT")
    finally:
        for s in (imap.sock, sub.sock, cmd.sock):
            s.close()
    return {"median_ms": statistics.median(delays) if delays else None,
            "p90_ms": sorted(delays)[int(0.9 * (len(delays) - 1))] if delays else None,
            "trials": len(delays), "missing": missing, "member_ok": bool(members)}


# ---------------------------------------------------------------------------
# main


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="shorter runs, 2,000 idle sessions (about 1 minute)")
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--imapload", help="default: BUILD/bench/imapload")
    ap.add_argument("--proxy", help="default: BUILD/proxy/imapferry-proxy")
    ap.add_argument("--targets", default="direct,haproxy,proxy")
    ap.add_argument("--seconds", type=float, help="mixed load per run (6; quick 4)")
    ap.add_argument("--rounds", type=int, help="mixed/serial rounds per target (3; quick 1)")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--inflight", type=int, default=4)
    ap.add_argument("--idle-sessions", type=int,
                    help="10000 (quick 2000), fewer if the descriptor limit is lower")
    ap.add_argument("--idle-hold", type=float, help="seconds (4; quick 2)")
    a = ap.parse_args()
    quick = a.quick
    seconds = a.seconds or (4 if quick else 6)
    rounds = a.rounds or (1 if quick else 3)
    serial_iters = 1000 if quick else 2000
    nofile = raise_nofile()
    # a relay holds two descriptors per session
    fit = (nofile - 150) // 2 // 100 * 100
    idle_sessions = a.idle_sessions or min(2000 if quick else 10000, fit)
    idle_hold = a.idle_hold or (2 if quick else 4)
    mark_trials = 15 if quick else 40
    wanted = [t.strip() for t in a.targets.split(",") if t.strip()]

    loadgen = a.imapload or os.path.join(a.build, "bench", "imapload")
    if not os.access(loadgen, os.X_OK):
        sys.exit(f"{loadgen} not found: cmake --build {a.build} --target imapload")
    proxy_bin = a.proxy or os.path.join(a.build, "proxy", "imapferry-proxy")

    if idle_sessions > fit:
        print(f"warning: {idle_sessions} idle sessions need {2 * idle_sessions + 150} "
              f"descriptors in a relay; the limit is {nofile}")
    elif idle_sessions < (2000 if quick else 10000):
        print(f"note: {idle_sessions} idle sessions, not 10000: a relay needs two descriptors per "
              f"session and the hard limit here is {nofile} (ulimit -Hn; raising it needs "
              f"CAP_SYS_RESOURCE)")
    t_begin = time.monotonic()
    work = tempfile.mkdtemp(prefix="ferry-benchpx-")
    os.chmod(work, 0o755)  # Dovecot runs as nobody under it
    env_dir = os.path.join(work, "env")
    targets = []
    fh.start(env_dir, quiet=True)
    try:
        env = fh.Env.load(env_dir)
        dovecot_reconfigure(env, DOVECOT_BASE_OVERRIDE)
        s = fh.populate(env, "src", USER, "medium", seed=11)
        imap = env.imap("src", USER)
        try:
            inbox = re.search(rb"MESSAGES (\d+)", imap.status("INBOX", "(MESSAGES)")[1][0])
        finally:
            imap.logout()
        print(f"corpus: {s['messages']} messages ({s['bytes'] / 2**20:.1f} MiB) for {USER}, "
              f"{int(inbox.group(1))} in INBOX; Dovecot 2.3 on {HOST}, plain IMAP, {os.cpu_count()} cores; "
              f"{'quick' if quick else 'full'} run", flush=True)

        if "direct" in wanted:
            targets.append(Target("direct", env.src_imap_port))
        if "haproxy" in wanted:
            t = start_haproxy(work, env, nofile)
            if t:
                targets.append(t)
        if "proxy" in wanted:
            if os.access(proxy_bin, os.X_OK):
                targets.append(start_imapferry_proxy(work, env, proxy_bin))
            else:
                print(f"proxy: not built ({proxy_bin})")
        results = {t.name: {"mixed": [], "serial": []} for t in targets}

        for t in targets:
            results[t.name]["literal"] = run_literal(loadgen, t)
        print("literals (5 MiB LITERAL+, 1 MiB synchronising, IMAP-looking lines inside): "
              + ", ".join(f"{t.name} {'identical' if results[t.name]['literal'] else 'FAILED'}"
                          for t in targets), flush=True)

        for rnd in range(rounds):
            for t in targets:
                r = run_mixed(loadgen, t, env, seconds, a.clients, a.inflight)
                results[t.name]["mixed"].append(r)
                print(f"  mixed {t.name:8} round {rnd + 1}: {r['cmds_per_s']:7.0f} cmd/s, "
                      f"relay CPU {r['relay_cpu_s']:.2f} s, Dovecot CPU {r['dovecot_cpu_s']:.2f} s,"
                      f" loadgen CPU {r['loadgen_cpu_s']:.2f} s, p50 {r['p50_us'] / 1000:.1f} ms,"
                      f" p99 {r['p99_us'] / 1000:.1f} ms", flush=True)
            for t in targets:
                r = imapload(loadgen, t, "serial", ["--iterations", serial_iters])
                results[t.name]["serial"].append(r)
                print(f"  serial {t.name:8} round {rnd + 1}: median {r['median_us']:.1f} µs, "
                      f"mean {r['mean_us']:.1f} µs", flush=True)

        if "proxy" in results:
            pt = next(t for t in targets if t.name == "proxy")
            results["proxy"]["marks"] = run_mark_delay(pt, env, mark_trials)
            m = results["proxy"]["marks"]
            print(f"  marks: STORE OK -> ZADD median {fmt(m['median_ms'], '.2f')} ms, "
                  f"p90 {fmt(m['p90_ms'], '.2f')} ms over {m['trials']} trials, "
                  f"{m['missing']} missing", flush=True)

        # IDLE notifications, with Dovecot's one process per session (with
        # several sessions per process, as below, Dovecot wakes only one of
        # them at once and the others at their next periodic check)
        for t in targets:
            r = run_idle(loadgen, t, env, NOTIFY_SESSIONS, 3, NOTIFY_SESSIONS, deliver=True)
            results[t.name]["notify"] = r
            print(f"  IDLE wake-up {t.name:8}: new mail seen by {r.get('notified', 0)}/"
                  f"{NOTIFY_SESSIONS} sessions, median {fmt(r.get('notify_p50_ms'), '.1f')} ms, "
                  f"last {fmt(r.get('notify_last_ms'), '.1f')} ms after the LMTP delivery began",
                  flush=True)

        dovecot_reconfigure(env, DOVECOT_IDLE_OVERRIDE)
        for t in targets:
            r = run_idle(loadgen, t, env, idle_sessions, idle_hold, 200)
            results[t.name]["idle"] = r
            print(f"  idle {t.name:8}: {int(r['held'])}/{idle_sessions} held "
                  f"(setup {r['setup_s']:.1f} s), relay RSS "
                  f"{fmt(r['rss_mib'], '.1f')} MiB (at rest {fmt(r['rss0_mib'], '.1f')} MiB)"
                  + (f"; {r['error']}" if r.get("error") else ""), flush=True)
            time.sleep(1.0)  # Dovecot closes the sessions

        report(results, targets, seconds, rounds, a, idle_sessions)
        print(f"\n(whole benchmark: {time.monotonic() - t_begin:.0f} s)")
    finally:
        for t in targets:
            stop_process(t.proc)
        fh.stop(env_dir, quiet=True)
        shutil.rmtree(work, ignore_errors=True)


def report(results, targets, seconds, rounds, a, idle_sessions):
    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    summary = {}
    for t in targets:
        r = results[t.name]
        cmds = sum(m["commands"] for m in r["mixed"])
        summary[t.name] = {
            "tput": statistics.median([m["cmds_per_s"] for m in r["mixed"]]),
            "tput_runs": [m["cmds_per_s"] for m in r["mixed"]],
            "relay_ms": 1e6 * sum(m["relay_cpu_s"] for m in r["mixed"]) / cmds if t.pid else None,
            "dovecot_ms": 1e6 * sum(m["dovecot_cpu_s"] for m in r["mixed"]) / cmds,
            "loadgen_ms": 1e6 * sum(m["loadgen_cpu_s"] for m in r["mixed"]) / cmds,
            "serial": statistics.median([s["median_us"] for s in r["serial"]]),
            "serial_mean": mean([s["mean_us"] for s in r["serial"]]),
        }
    direct = summary.get("direct")

    def ratio(name, ref):
        """Median over the rounds of name's throughput / ref's in the same
        round: the rounds alternate targets, so slow drifts of the machine's
        load cancel out."""
        pairs = zip(summary[name]["tput_runs"], summary[ref]["tput_runs"])
        return statistics.median(x / y for x, y in pairs)

    print(f"\nmixed load: {a.clients} clients x {a.inflight} in flight, {seconds:g} s x {rounds} "
          f"round(s); serial: NOOP and UID FETCH (FLAGS) alternately; idle: {idle_sessions} "
          f"sessions in IDLE on INBOX")
    head = (f"{'target':9} {'cmd/s':>8} {'% direct':>9} {'relay CPU':>10} {'Dovecot CPU':>12} "
            f"{'serial med':>11} {'added':>8} {'IDLE wake':>10} {'idle held':>11} {'relay RSS':>10} "
            f"{'literals':>9}")
    print(head)
    print(f"{'':9} {'':>8} {'':>9} {'ms/1k cmd':>10} {'ms/1k cmd':>12} {'µs':>11} {'µs':>8} "
          f"{'ms':>10} {'':>11} {'MiB':>10} {'':>9}")
    for t in targets:
        s, r = summary[t.name], results[t.name]
        pct = 100 * ratio(t.name, "direct") if direct else None
        pct = fmt(pct, ".1f") + ("%" if pct is not None else "")
        added = s["serial"] - direct["serial"] if direct else None
        idle = r.get("idle", {})
        print(f"{t.name:9} {s['tput']:8.0f} {pct:>9} "
              f"{fmt(s['relay_ms'], '10.1f'):>10} {s['dovecot_ms']:12.1f} {s['serial']:11.1f} "
              f"{fmt(added if t.name != 'direct' else None, '+8.1f'):>8} "
              f"{fmt(r.get('notify', {}).get('notify_p50_ms'), '10.1f'):>10} "
              f"{str(int(idle.get('held', 0))) + '/' + str(idle_sessions):>11} "
              f"{fmt(idle.get('rss_mib'), '10.1f'):>10} "
              f"{'ok' if r['literal'] else 'FAILED':>9}")
    print("  (relay CPU: the relay process only; Dovecot CPU: the src Dovecot, all its processes;"
          " load generator: "
          + ", ".join(f"{t.name} {summary[t.name]['loadgen_ms']:.1f}" for t in targets)
          + " ms/1k cmd)")

    if "proxy" in summary:
        p, m = summary["proxy"], results["proxy"].get("marks", {})
        print("\nissue 5 targets for the proxy:")
        h = summary.get("haproxy")
        if h:
            print(f"  throughput vs haproxy: {100 * ratio('proxy', 'haproxy'):.1f}% (runs: proxy "
                  + "/".join(f"{x:.0f}" for x in p["tput_runs"]) + ", haproxy "
                  + "/".join(f"{x:.0f}" for x in h["tput_runs"]) + ")")
            cpu = p["relay_ms"] / h["relay_ms"] if h["relay_ms"] else None
            print(f"  CPU per 1,000 commands: {p['relay_ms']:.1f} ms vs haproxy "
                  f"{h['relay_ms']:.1f} ms = {fmt(cpu, '.2f')}x (target <= 1.2x): "
                  f"{'met' if cpu is not None and cpu <= 1.2 else 'NOT met'}")
            if direct:
                pa, ha = p["serial"] - direct["serial"], h["serial"] - direct["serial"]
                print(f"  added serial latency: {pa:+.1f} µs vs haproxy {ha:+.1f} µs "
                      f"(target <= haproxy + 20 µs): {'met' if pa <= ha + 20 else 'NOT met'}")
        pn = results["proxy"].get("notify", {})
        dn = results.get("direct", {}).get("notify", {})
        if pn.get("notify_p50_ms") is not None and dn.get("notify_p50_ms") is not None:
            d = pn["notify_p50_ms"] - dn["notify_p50_ms"]
            ok = pn.get("notified") == NOTIFY_SESSIONS and d < 5
            print(f"  IDLE wake-up: {pn['notify_p50_ms']:.1f} ms vs direct "
                  f"{dn['notify_p50_ms']:.1f} ms ({d:+.1f} ms; {pn.get('notified')}/"
                  f"{NOTIFY_SESSIONS} sessions woke): {'met' if ok else 'NOT met'}")
        idle = results["proxy"].get("idle", {})
        if idle.get("rss_mib") is not None:
            per = (idle["rss_mib"] - (idle["rss0_mib"] or 0)) / max(1, idle["held"])
            at10k = (idle["rss0_mib"] or 0) + 10000 * per
            ok = idle["held"] == idle_sessions and idle["rss_mib"] < 300 and at10k * 2**20 < 300e6
            print(f"  {int(idle['held'])}/{idle_sessions} idle sessions, RSS "
                  f"{idle['rss_mib']:.1f} MiB, {per * 1024:.1f} KiB per session"
                  + (f", {at10k:.0f} MiB at 10,000" if idle_sessions != 10000 else "")
                  + f" (target 10,000 under 300 MB): {'met' if ok else 'NOT met'}"
                  + (" (extrapolated)" if ok and idle_sessions < 10000 else ""))
        if m:
            ok = m["median_ms"] is not None and m["median_ms"] < 5 and m["member_ok"]
            print(f"  mark delay after the tagged OK: median {fmt(m['median_ms'], '.2f')} ms "
                  f"(target < 5 ms): {'met' if ok else 'NOT met'}"
                  + ("" if m["member_ok"] else f" (member {USER}<TAB>INBOX not found)"))


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        sys.exit(f"bench_proxy: {e}")
