#!/usr/bin/env python3
"""Benchmark of the per-user cutover (issue 7): imapferryctl with the proxy in
front of the source and the daemon keeping the destination warm.

Starts the test harness's two Dovecots in a temporary directory with --users
extra accounts (cut0000 ...), each with --messages messages in INBOX and
Archive, a private redis-server, imapferry-proxy (source upstream, destination
for users cut over) and imapferry-sync --daemon, waits for the initial sync,
then prints:

  1. one warm user with a live session through the proxy: the wall time of
     `imapferryctl cutover USER` end to end, and how long a login made
     through the proxy during the freeze was held before it landed on the
     destination;
  2. every other user with `imapferryctl cutover --all --jobs N`: the wall
     time, the summary line, and the route of every user afterwards.

    bench/bench_cutover.py [--users 100] [--messages 5] [--jobs 8] [--build build]

Issue 7's targets: a warm user in under 5 s with held logins waiting no more
than that; 100 users with --all in under 2 minutes on this machine. Every
process started here is stopped on exit, Ctrl-C or error.
"""
import argparse
import imaplib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "harness"))
sys.path.insert(0, HERE)
import ferry_harness as fh  # noqa: E402
import bench_replication as br  # noqa: E402

HOST = fh.HOST


def sync_options(env, workdir):
    opts = []
    for n, side in (("1", "src"), ("2", "dst")):
        opts += [f"--host{n}", HOST, f"--port{n}", str(env.port(side, "imap")),
                 f"--authuser{n}", fh.MASTER_USER, f"--password{n}", fh.MASTER_PASS,
                 f"--sslargs{n}", f"SSL_ca_file={env.ca_file}"]
    return opts + ["--syncduplicates", "--delete2", "--nolog", "--tmpdir", workdir]


def fill(env, users, n):
    def one(batch):
        for u in batch:
            imap = env.imap("src", u)
            try:
                imap.create("Archive")
                for k in range(n):
                    for folder in ("INBOX", "Archive"):
                        fh.imap_check(imap.append(folder, "(\\Seen)", None,
                                                  br.message(u, folder.lower(), k)), "APPEND")
            finally:
                imap.logout()
    threads = [threading.Thread(target=one, args=(users[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def proxy_session(env, proxy, user):
    imap = imaplib.IMAP4(HOST, proxy.port, timeout=60)
    imap.starttls(ssl_context=env.ssl_context())
    imap.login(user, env.password(user))
    return imap


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=100, help="users to cut over (100)")
    ap.add_argument("--messages", type=int, default=5,
                    help="messages per folder (INBOX, Archive) and user (5)")
    ap.add_argument("--jobs", type=int, default=8, help="cutover --all --jobs (8)")
    ap.add_argument("--workers", type=int, default=4, help="daemon --workers (4)")
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    a = ap.parse_args()
    sync_bin = os.path.abspath(os.path.join(a.build, "sync", "imapferry-sync"))
    proxy_bin = os.path.abspath(os.path.join(a.build, "proxy", "imapferry-proxy"))
    ctl_bin = os.path.abspath(os.path.join(a.build, "ctl", "imapferryctl"))
    for b in (sync_bin, proxy_bin, ctl_bin):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b}: not built (--build DIR)")
    users = [f"cut{i:04d}" for i in range(a.users)]
    extra = {u: f"{u}-pw" for u in users + ["burst"]}

    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    work = tempfile.mkdtemp(prefix="ferry-cutbench-")
    os.chmod(work, 0o755)  # Dovecot runs as nobody under it
    env_dir = os.path.join(work, "env")
    redis = proxy = daemon = None
    started = False
    try:
        t0 = time.monotonic()
        started = True
        env = fh.start(env_dir, quiet=True, extra_users=extra)
        br.dovecot_reconfigure(env)
        fill(env, users, a.messages)
        redis = br.Redis(work)
        proxy = fh.start_proxy(env, proxy_bin, redis_port=redis.port, log_dir=work,
                               extra_args=["--log-level", "warn", "--upstream-dst",
                                           f"{HOST}:{env.port('dst', 'imap')}"])
        users_file = os.path.join(work, "users")
        with open(users_file, "w") as f:
            f.write("".join(f"{u}\n" for u in users))
        daemon = br.Daemon(sync_bin, env, redis, work, users_file, a.workers, 3600)
        br.wait_queue_empty(redis, daemon, 600, settle=1.0)
        print(f"set-up: harness, {len(users)} users x {2 * a.messages} messages, redis, proxy, "
              f"daemon and its initial sync: {time.monotonic() - t0:.1f} s; "
              f"{os.cpu_count()} cores, Dovecot 2.3 on 127.0.0.1, STARTTLS everywhere",
              flush=True)
        opts = sync_options(env, work)
        ctl = [ctl_bin, "--redis", f"{HOST}:{redis.port}", "--sync", sync_bin]

        # 1. one warm user with a live session; a login during the freeze
        user = users[0]
        live = proxy_session(env, proxy, user)
        live.select("INBOX")
        held = {}

        def late_login():
            time.sleep(0.05)  # the freeze is on by then (the ctl's first step)
            t = time.monotonic()
            held["start"] = t
            try:
                s = proxy_session(env, proxy, user)
                held["wait"] = time.monotonic() - t
                held["end"] = time.monotonic()
                held["sep"] = s.list('""', '""')[1][0].decode(errors="replace")
                s.logout()
            except Exception as e:
                held["error"] = repr(e)
        th = threading.Thread(target=late_login)
        t = time.monotonic()
        th.start()
        p = subprocess.run([*ctl, "cutover", user, "--", *opts], capture_output=True,
                           text=True, timeout=300)
        t_end = time.monotonic()
        one = t_end - t
        th.join(60)
        dst_sep = f'"{env.sep("dst")}"'
        where = ("the destination" if dst_sep in held.get("sep", "") else
                 f"the SOURCE ({held.get('sep')})")
        try:
            live.logout()
        except Exception:
            pass  # the BYE came first
        print(f"\n1. one warm user ({2 * a.messages} messages, a live session through the "
              f"proxy, the daemon running): cutover {one:.2f} s end to end, exit "
              f"{p.returncode}; a login made {held.get('start', t) - t:.2f} s after the start "
              + (f"took {held['wait']:.2f} s (held until the flip) and landed on {where}"
                 if "wait" in held else f"failed: {held.get('error')}"),
              flush=True)
        if p.returncode != 0:
            print(p.stdout[-2000:] + p.stderr[-2000:])

        # 2. everyone else
        t = time.monotonic()
        p = subprocess.run([*ctl, "cutover", "--all", "--jobs", str(a.jobs), "--", *opts],
                           capture_output=True, text=True, timeout=1800)
        took = time.monotonic() - t
        summary = [line for line in p.stdout.splitlines() if line.startswith("cutover:")]
        st = subprocess.run([*ctl, "status", "--json"], capture_output=True, text=True,
                            timeout=120)
        routes = {}
        try:
            for u in json.loads(st.stdout).get("users", []):
                routes[u.get("route") or "SRC"] = routes.get(u.get("route") or "SRC", 0) + 1
        except ValueError:
            routes = {"unreadable status": 1}
        print(f"\n2. cutover --all --jobs {a.jobs} of the other {len(users) - 1} users: "
              f"{took:.1f} s, exit {p.returncode}; {summary[-1] if summary else p.stdout[-500:]}"
              f"; routes afterwards: {routes}", flush=True)
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if daemon:
            daemon.stop()
        if proxy:
            proxy.stop()
        if redis:
            redis.stop()
        if started:
            fh.stop(env_dir, quiet=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
