#!/usr/bin/env python3
"""Benchmark of imapferry-sync's one-shot (imapsync) mode on this machine.

Starts the test harness's two Dovecots on free loopback ports, fills the
source account with the harness corpus, and prints, for imapferry-sync:
initial copy (messages/s, MB/s, wall and CPU time, peak RSS), a no-change
re-run, and the same for mbsync (isync) when it is installed, as a yardstick.

    bench/bench_sync.py [--scale medium|small] [--build build]

The servers' CPU is the floor for the initial copy: both Dovecots run on the
same 2 cores, so wall time is bound by them; the tool's own CPU time is what
imapferry controls.
"""
import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "harness"))
import ferry_harness as fh  # noqa: E402


def run_measured(cmd, cwd):
    """Runs cmd; returns (rc, wall s, cpu s, peak RSS MiB, output). Peak RSS
    is the process's VmHWM, polled: getrusage(RUSAGE_CHILDREN) would also
    count the pages of the forked Python before exec."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    out = tempfile.TemporaryFile(mode="w+")
    rc, peak = fh.run_peak_rss(cmd, cwd=cwd, stdout=out)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out.seek(0)
    return rc, wall, cpu, peak, out.read()


def servers_cpu(env):
    """CPU seconds used so far by both Dovecots: each master's own time plus
    that of its reaped children (the imap processes of finished sessions)."""
    time.sleep(0.5)  # let the masters reap the imap processes of sessions just ended
    total = 0
    for side in ("SRC", "DST"):
        with open(f"/proc/{env.values[f'FERRY_{side}_DOVECOT_PID']}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def sync_cmd(binary, env, user, tmpdir):
    # --nofoldersizes: the size tables are two extra reading passes that
    # mbsync does not make either; the state lives in tmpdir
    return [binary, "--nofoldersizes", "--tmpdir", tmpdir, "--host1", "127.0.0.1", "--port1", str(env.port("src", "imap")),
            "--user1", user, "--password1", env.password(user),
            "--host2", "127.0.0.1", "--port2", str(env.port("dst", "imap")),
            "--user2", user, "--password2", env.password(user),
            "--sslargs1", "SSL_ca_file=" + env.ca_file, "--sslargs2", "SSL_ca_file=" + env.ca_file,
            "--syncduplicates", "--nolog", "--pidfile", ""]


def mbsync_config(path, env, user, state_dir):
    with open(path, "w") as f:
        for side, name in (("src", "far"), ("dst", "near")):
            f.write(f"IMAPAccount {name}\nHost localhost\nPort {env.port(side, 'imaps')}\n"
                    f"User {user}\nPass {env.password(user)}\nSSLType IMAPS\n"
                    f"CertificateFile {env.ca_file}\n\n"
                    f"IMAPStore {name}-store\nAccount {name}\n\n")
        f.write("Channel bench\nFar :far-store:\nNear :near-store:\nPatterns *\n"
                f"Create Near\nSync Pull\nSyncState {state_dir}/\nCopyArrivalDate yes\n")


def make_changes(env, user, seed, new=500, toggles=500):
    """The issue's "1,000 mixed changes": new messages APPENDed over the
    folders and \\Flagged toggled on as many existing messages."""
    rng = random.Random(seed)
    imap = env.imap("src", user)
    try:
        folders = [f for f in fh.list_folders(imap) if f != "Empty folder"]
        for n in range(new):
            body = (f"From: bench@example.org\r\nSubject: change {seed}-{n}\r\n"
                    f"Message-Id: <change-{seed}-{n}@example.org>\r\n\r\n"
                    + "line of text\r\n" * rng.randint(5, 200)).encode()
            imap.append(fh.mailbox_arg(rng.choice(folders)), None, None, body)
        left = toggles
        for name in folders:
            if left <= 0:
                break
            typ, data = imap.select(fh.mailbox_arg(name))
            count = int(data[0])
            if count == 0:
                continue
            seqs = rng.sample(range(1, count + 1), min(count, left, 60))
            left -= len(seqs)
            typ, data = imap.fetch(",".join(map(str, seqs)), "(FLAGS)")
            on, off = [], []
            for line in data:
                line = line.decode() if isinstance(line, bytes) else line[0].decode()
                seq = line.split()[0]
                (off if "\\Flagged" in line else on).append(seq)
            if on:
                imap.store(",".join(on), "+FLAGS.SILENT", "(\\Flagged)")
            if off:
                imap.store(",".join(off), "-FLAGS.SILENT", "(\\Flagged)")
            imap.close()
    finally:
        imap.logout()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default="medium")
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--measure", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:  # child mode: one measured command, result on stdout
        rc, wall, cpu, rss, out = run_measured(a.measure, os.getcwd())
        print(f"{rc} {wall:.3f} {cpu:.3f} {rss:.1f}")
        if rc != 0:
            sys.stderr.write(out[-2000:])
        return
    binary = os.path.join(a.build, "sync", "imapferry-sync")
    work = tempfile.mkdtemp(prefix="ferry-bench-")
    os.chmod(work, 0o755)  # Dovecot runs as nobody under it
    env_dir = os.path.join(work, "env")
    fh.start(env_dir, quiet=True)
    try:
        env = fh.Env.load(env_dir)
        s = fh.populate(env, "src", "alice", a.scale, seed=11)
        msgs, size = s["messages"], s["bytes"]
        print(f"corpus: {msgs} messages, {size / 2**20:.1f} MiB in {s['folders']} folders "
              f"({a.scale}); two Dovecot 2.3 on 127.0.0.1, STARTTLS, {os.cpu_count()} cores")

        def measure(cmd):
            out = subprocess.run([sys.executable, __file__, "--measure", *cmd], cwd=work,
                                 capture_output=True, text=True)
            rc, wall, cpu, rss = out.stdout.split()
            if rc != "0":
                sys.exit(f"failed ({rc}): {' '.join(cmd[:1])}\n{out.stderr}")
            return float(wall), float(cpu), float(rss)

        s0 = servers_cpu(env)
        wall, cpu, rss = measure(sync_cmd(binary, env, "alice", work))
        scpu = servers_cpu(env) - s0
        diffs = fh.compare(env, "alice", "src", "alice", "dst")
        print(f"imapferry-sync initial: {wall:.2f} s, {msgs / wall:.0f} msg/s, "
              f"{size / 2**20 / wall:.1f} MiB/s, tool CPU {cpu:.2f} s "
              f"({100 * cpu / scpu:.0f}% of the servers' {scpu:.2f} s), peak RSS {rss:.1f} MiB, "
              f"{'byte-exact' if not diffs else f'{len(diffs)} DIFFERENCES'}")
        wall, cpu, rss = measure(sync_cmd(binary, env, "alice", work))
        print(f"imapferry-sync no-change re-run: {wall:.2f} s, tool CPU {cpu:.2f} s, "
              f"peak RSS {rss:.1f} MiB")

        fh.deliver(env, "alice", b"Subject: one more\r\nMessage-Id: <bench-one@example.org>\r\n"
                                b"\r\nnew\r\n")
        wall, cpu, rss = measure(sync_cmd(binary, env, "alice", work))
        print(f"imapferry-sync one new message (LMTP delivery): {wall:.2f} s, tool CPU {cpu:.2f} s")
        imap = env.imap("src", "alice")
        try:
            imap.select("INBOX")
            imap.store("1", "+FLAGS", "(\\Flagged)")
        finally:
            imap.logout()
        wall, cpu, rss = measure(sync_cmd(binary, env, "alice", work))
        print(f"imapferry-sync one flag change: {wall:.2f} s, tool CPU {cpu:.2f} s")
        make_changes(env, "alice", 1)
        wall, cpu, rss = measure(sync_cmd(binary, env, "alice", work))
        diffs = fh.compare(env, "alice", "src", "alice", "dst")
        print(f"imapferry-sync 1,000 mixed changes (500 new, 500 flag toggles): {wall:.2f} s, "
              f"tool CPU {cpu:.2f} s, {'byte-exact' if not diffs else f'{len(diffs)} DIFFERENCES'}")
        make_changes(env, "alice", 3)
        wall, cpu, rss = measure(sync_cmd(binary, env, "alice", work) + ["--parallel", "2"])
        diffs = fh.compare(env, "alice", "src", "alice", "dst")
        print(f"imapferry-sync 1,000 mixed changes with --parallel 2: {wall:.2f} s, "
              f"tool CPU {cpu:.2f} s, {'byte-exact' if not diffs else f'{len(diffs)} DIFFERENCES'}")
        wall, cpu, rss = measure(sync_cmd(binary, env, "alice", work) + ["--nostate"])
        print(f"imapferry-sync no-change re-run without state (--nostate, as imapsync): "
              f"{wall:.2f} s, tool CPU {cpu:.2f} s")

        if shutil.which("mbsync"):
            fh.wipe(env, "dst", "alice")
            cfg = os.path.join(work, "mbsyncrc")
            os.makedirs(os.path.join(work, "mbsync-state"), exist_ok=True)
            mbsync_config(cfg, env, "alice", os.path.join(work, "mbsync-state"))
            s0 = servers_cpu(env)
            wall, cpu, rss = measure(["mbsync", "-c", cfg, "-q", "bench"])
            scpu = servers_cpu(env) - s0
            print(f"mbsync initial: {wall:.2f} s, {msgs / wall:.0f} msg/s, "
                  f"{size / 2**20 / wall:.1f} MiB/s, tool CPU {cpu:.2f} s "
                  f"({100 * cpu / scpu:.0f}% of the servers' {scpu:.2f} s), "
                  f"peak RSS {rss:.1f} MiB")
            wall, cpu, rss = measure(["mbsync", "-c", cfg, "-q", "bench"])
            print(f"mbsync no-change re-run: {wall:.2f} s, tool CPU {cpu:.2f} s, "
                  f"peak RSS {rss:.1f} MiB")
            make_changes(env, "alice", 2)
            wall, cpu, rss = measure(["mbsync", "-c", cfg, "-q", "bench"])
            print(f"mbsync 1,000 mixed changes (500 new, 500 flag toggles): {wall:.2f} s, "
                  f"tool CPU {cpu:.2f} s")
        else:
            print("mbsync not installed: apt-get install isync to compare")
    finally:
        fh.stop(env_dir, quiet=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
