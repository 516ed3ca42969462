#!/usr/bin/env python3
"""ferry_harness: real Dovecot and Redis servers for imapferry's integration tests.

Command line (DIR is the test directory; everything lives under it):

  ferry_harness.py start DIR           start Dovecot "src" and "dst" and Redis on free
                                       loopback ports, write DIR/env, print a summary
  ferry_harness.py stop DIR [--keep]   stop them and remove DIR (idempotent)
  ferry_harness.py populate DIR --side src --user alice [--scale small|medium] [--seed N]
  ferry_harness.py compare DIR --user1 alice --side1 src --user2 alice --side2 dst
                                       exit 0 if both accounts hold the same folders,
                                       subscriptions and messages, 1 otherwise
  ferry_harness.py deliver DIR --user alice --file MSG [--side src]   (LMTP, "-" = stdin)

As a module (tests run with PYTHONPATH=tests/harness and FERRY_ENV_DIR=DIR):

  from ferry_harness import Env, populate, compare
  env = Env.load()                                  # reads $FERRY_ENV_DIR/env
  imap = env.imap('src', 'alice', mode='starttls')  # logged-in imaplib client
  populate(env, 'src', 'alice', 'small', seed=1)
  diffs = compare(env, 'alice', 'src', 'alice', 'dst')   # [] when identical

Python 3 standard library only. Linux only (process handling reads /proc).
"""

import argparse
import base64
import collections
import dataclasses
import datetime
import email.utils
import grp
import hashlib
import imaplib
import json
import os
import pwd
import random
import re
import shlex
import shutil
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
SIDES = ("src", "dst")
USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw", "dave": "dave-pw",
         "erin": "erin-pw", "frank": "frank-pw", "heidi": "heidi-pw", "grace": "grace-pw",
         "kate": "kate-pw", "judy": "judy-pw", "ivan": "ivan-pw", "leo": "leo-pw",
         "nina": "nina-pw", "oscar": "oscar-pw", "peggy": "peggy-pw", "quinn": "quinn-pw",
         "rupert": "rupert-pw", "sybil": "sybil-pw"}
MASTER_USER = "admin"
MASTER_PASS = "admin-pw"
MASTER_SEP = "*"
# Mailbox layout and hierarchy separator per side. They differ on purpose, so
# that separator translation is exercised by every src -> dst test.
LAYOUTS = {"src": ("maildir++", "."), "dst": ("fs", "/")}
# Dovecot's notify_status plugin (imapferry-sync --daemon --notifystatus): the
# source loads it for everyone, but it is active only for NSTATUS_USER, whose
# userdb entry points its dict at FERRY_NSTATUS_REDIS_PORT: a port reserved at
# start where nothing listens until a test starts a redis-server of its own
# there (tests/integ/test_daemon_nstatus.py). Other users are not affected.
NSTATUS_USER = "leo"
NSTATUS_PREFIX = "nstatus/"  # Dovecot splits the dict URI at ":": none in here

START_TIMEOUT = 15.0  # seconds for each service to answer
STOP_TIMEOUT = 5.0  # seconds after SIGTERM before SIGKILL
IMAP_TIMEOUT = 60.0  # socket timeout of the IMAP clients made here

HARNESS_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = HARNESS_DIR.parent.parent / "config" / "test"
MARKER = ".ferry-harness"  # file that marks a directory as ours (safe to delete)
# Dovecot binds unix sockets in base_dir, e.g. "token-login/imap-urlauth"; a
# sun_path holds 107 bytes, so a longer base_dir goes to a short temp dir.
MAX_BASE_DIR = 70
# Characters allowed in DIR: it is pasted into config files unquoted.
SAFE_PATH = re.compile(r"^[A-Za-z0-9._/+-]+$")


class HarnessError(Exception):
    """A failure with a message meant for the person running the tests."""


# ---------------------------------------------------------------------------
# Modified UTF-7 (RFC 3501 section 5.1.3): mailbox names on the wire.
# Printable ASCII except "&" stands for itself, "&" is "&-", every other run of
# characters is UTF-16BE in base64 with "," for "/" and no padding, in "&...-".


def crc16(data):
    """CRC16/XMODEM of bytes, as rk_crc16() and Redis Cluster compute it."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def shard(user):
    """rk_shard() of include/imapferry/rkeys.h: CRC16/XMODEM of the name mod 16,
    for tests that read or write the rep:{s}:... keys themselves."""
    return crc16(user.encode()) % 16


def key_slot(key):
    """Redis Cluster's slot of key (str): CRC16 of its hash tag, the bytes
    between the first "{" and the next "}" when not empty, else of all of
    it (rk_key_slot())."""
    data = key.encode()
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    return crc16(data) & 16383


def metrics(port, host=HOST):
    """A /metrics page (the proxy's or the daemon's) as {name or
    name{labels}: number}."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def stop_daemon(proc, timeout=30):
    """SIGTERM to a daemon started with start_new_session=True; SIGKILL to
    its whole process group after timeout s. Its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def mutf7_encode(name):
    """Encode a Unicode mailbox name to modified UTF-7 (an ASCII str)."""
    out, run = [], []

    def flush():
        if run:
            raw = "".join(run).encode("utf-16-be")  # surrogate pairs included
            b64 = base64.b64encode(raw).decode("ascii").rstrip("=")
            out.append("&" + b64.replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def mutf7_decode(text):
    """Decode a modified UTF-7 mailbox name; raise ValueError if it is not
    valid and canonical (i.e. not exactly what mutf7_encode would produce)."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch != "&":
            if not 0x20 <= ord(ch) <= 0x7E:
                raise ValueError(f"8-bit character in modified UTF-7: {text!r}")
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError(f"unterminated '&' sequence in {text!r}")
        if end == i + 1:
            out.append("&")
        else:
            b64 = text[i + 1 : end].replace(",", "/")
            try:
                raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
                out.append(raw.decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"bad base64 run in {text!r}: {e}") from None
        i = end + 1
    result = "".join(out)
    if mutf7_encode(result) != text:
        raise ValueError(f"non-canonical modified UTF-7: {text!r}")
    return result


# ---------------------------------------------------------------------------
# Small IMAP helpers on top of imaplib (which neither quotes arguments nor
# parses LIST or FETCH responses).


def imap_quote(s):
    """An IMAP quoted string (RFC 3501 "quoted") for an ASCII str."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox_arg(name):
    """The command argument for a Unicode mailbox name: quoted modified UTF-7."""
    return imap_quote(mutf7_encode(name))


def imap_check(result, what):
    """Raise HarnessError unless an imaplib (typ, data) result is OK."""
    typ, data = result
    if typ != "OK":
        raise HarnessError(f"{what} failed: {typ} {data!r}")
    return data


class _Scanner:
    """Reads the tokens of one response line: atoms, quoted strings, NIL and
    parenthesised lists of atoms (enough for LIST/LSUB)."""

    def __init__(self, text):
        self.s, self.i = text, 0

    def _skip_space(self):
        while self.i < len(self.s) and self.s[self.i] == " ":
            self.i += 1

    def parens(self):
        self._skip_space()
        if self.s[self.i : self.i + 1] != "(":
            raise ValueError(f"expected '(' in {self.s!r}")
        end = self.s.index(")", self.i)
        items = self.s[self.i + 1 : end].split()
        self.i = end + 1
        return items

    def nstring(self):
        """A quoted string, NIL (None) or an atom."""
        self._skip_space()
        if self.s[self.i : self.i + 1] == '"':
            out, self.i = [], self.i + 1
            while True:
                ch = self.s[self.i]
                if ch == "\\":
                    out.append(self.s[self.i + 1])
                    self.i += 2
                elif ch == '"':
                    self.i += 1
                    return "".join(out)
                else:
                    out.append(ch)
                    self.i += 1
        start = self.i
        while self.i < len(self.s) and self.s[self.i] not in " ()":
            self.i += 1
        atom = self.s[start : self.i]
        return None if atom.upper() == "NIL" else atom


def parse_list_response(data):
    """Parse imaplib's LIST/LSUB data into [(flags, delimiter, name)], name
    decoded from modified UTF-7. A name sent as a literal arrives as a
    (b"... {N}", b"name") tuple."""
    result = []
    for entry in data:
        if entry is None or entry == b")":
            continue
        if isinstance(entry, tuple):
            sc = _Scanner(entry[0].decode("utf-8"))
            flags, delim = sc.parens(), sc.nstring()
            raw = entry[1].decode("utf-8")
        else:
            sc = _Scanner(entry.decode("utf-8"))
            flags, delim = sc.parens(), sc.nstring()
            raw = sc.nstring()
        result.append((flags, delim, mutf7_decode(raw)))
    return result


def list_folders(imap):
    """{name: (delimiter, flags)} of every mailbox (LIST "" "*")."""
    data = imap_check(imap.list('""', '"*"'), "LIST")
    return {name: (delim, flags) for flags, delim, name in parse_list_response(data)}


def list_subscribed(imap):
    """The set of subscribed mailbox names (LSUB "" "*")."""
    data = imap_check(imap.lsub('""', '"*"'), "LSUB")
    return {name for _flags, _delim, name in parse_list_response(data)}


def hierarchy_separator(imap):
    """The server's separator of the personal namespace (LIST "" "")."""
    data = imap_check(imap.list('""', '""'), 'LIST "" ""')
    return parse_list_response(data)[0][1]


MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def format_internaldate(when):
    """RFC 3501 date-time (without quotes) for an aware datetime; English
    month names whatever the locale."""
    off = int(when.utcoffset().total_seconds()) // 60
    sign = "+" if off >= 0 else "-"
    off = abs(off)
    return (
        f"{when.day:02d}-{MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when:%H:%M:%S} {sign}{off // 60:02d}{off % 60:02d}"
    )


def parse_internaldate(text):
    """Seconds since the epoch of an RFC 3501 date-time (without quotes)."""
    m = re.fullmatch(r"\s*(\d{1,2})-(\w{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)", text)
    if not m:
        raise ValueError(f"bad INTERNALDATE {text!r}")
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    tz = datetime.timedelta(hours=int(zh), minutes=int(zm)) * (1 if sign == "+" else -1)
    when = datetime.datetime(
        int(year), MONTHS.index(mon.capitalize()) + 1, int(day), int(hh), int(mm), int(ss),
        tzinfo=datetime.timezone(tz),
    )
    return int(when.timestamp())


_FETCH_START = re.compile(rb"^\d+ \(")


def parse_fetch_response(data):
    """Turn imaplib's FETCH data into dicts {uid, flags, internaldate, body}.

    imaplib returns a message whose BODY[] is a literal as a (prefix, body)
    tuple followed by the rest of the line (b")" or b" FLAGS (...))"); the
    items may sit on either side of the literal, so both are searched."""
    out, i = [], 0
    while i < len(data):
        item, body = data[i], None
        if isinstance(item, tuple):
            meta, body = item[0], item[1]
            nxt = data[i + 1] if i + 1 < len(data) else None
            if isinstance(nxt, bytes) and not _FETCH_START.match(nxt):
                meta += nxt
                i += 1
        else:
            meta = item
        i += 1
        if meta is None:
            continue
        text = meta.decode("utf-8", "replace")
        uid = re.search(r"\bUID (\d+)", text)
        flags = re.search(r"\bFLAGS \(([^)]*)\)", text)
        date = re.search(r'\bINTERNALDATE "([^"]+)"', text)
        out.append(
            {
                "uid": int(uid.group(1)) if uid else None,
                "flags": flags.group(1).split() if flags else None,
                "internaldate": date.group(1) if date else None,
                "body": body,
            }
        )
    return out


def message_subject(raw, limit=60):
    """The first Subject header of a message (unfolded, truncated) or ""."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    m = re.search(r"(?im)^subject:[ \t]*(.*(?:\r\n[ \t].*)*)", head)
    if not m:
        return ""
    subject = re.sub(r"\r\n[ \t]+", " ", m.group(1)).strip()
    return subject if len(subject) <= limit else subject[: limit - 3] + "..."


# ---------------------------------------------------------------------------
# The env file and the Env object.


def read_env_file(path):
    """{KEY: value} from a file of shell-quoted KEY=VALUE lines."""
    values = {}
    for line in Path(path).read_text().splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 1 and "=" in words[0]:
            key, value = words[0].split("=", 1)
            values[key] = value
    return values


def write_env_file(path, values):
    """Write {KEY: value} as shell-sourceable lines, atomically."""
    lines = ["# Written by ferry_harness.py start; shell-sourceable (set -a; . ./env)."]
    lines += [f"{key}={shlex.quote(str(value))}" for key, value in values.items()]
    tmp = Path(str(path) + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


class Env:
    """A started harness, as described by DIR/env.

    Every FERRY_* key is also an attribute: FERRY_SRC_IMAP_PORT is
    env.src_imap_port (an int), FERRY_CA_FILE is env.ca_file, etc."""

    def __init__(self, directory, values):
        self.dir = Path(directory)
        self.values = values

    @classmethod
    def load(cls, directory=None):
        """Read DIR/env (DIR defaults to $FERRY_ENV_DIR)."""
        directory = directory or os.environ.get("FERRY_ENV_DIR")
        if not directory:
            raise HarnessError("no harness directory given and FERRY_ENV_DIR is not set")
        path = Path(directory) / "env"
        if not path.is_file():
            raise HarnessError(f"{path} does not exist: run `ferry_harness.py start {directory}`")
        values = read_env_file(path)
        if "FERRY_REDIS_PID" not in values:
            raise HarnessError(f"{path} is incomplete: the harness did not finish starting")
        return cls(directory, values)

    def __getattr__(self, name):
        if name.startswith("_") or name in ("dir", "values"):
            raise AttributeError(name)
        key = "FERRY_" + name.upper()
        if key not in self.values:
            raise AttributeError(f"{key} is not in the env file")
        value = self.values[key]
        return int(value) if value.isdigit() else value

    @property
    def users(self):
        """{user: password} of the normal (non-master) users."""
        return dict(pair.split(":", 1) for pair in self.values["FERRY_USERS"].split())

    def password(self, user):
        try:
            return self.users[user]
        except KeyError:
            raise HarnessError(f"no user {user!r} in the harness ({', '.join(self.users)})") from None

    def oauth_token(self, user):
        """The fixed OAuth2 access token of a user (the harness token server
        and both Dovecots' oauth2 passdb accept it)."""
        return dict(p.split(":", 1) for p in self.values["FERRY_OAUTH_TOKENS"].split())[user]

    def sep(self, side):
        """Hierarchy separator of a side's personal namespace."""
        return self.values[f"FERRY_{side.upper()}_SEP"]

    def port(self, side, kind):
        """Port of a listener: side "src"/"dst", kind "imap"/"imaps"/"lmtp"."""
        return int(self.values[f"FERRY_{side.upper()}_{kind.upper()}_PORT"])

    def ssl_context(self):
        """A client TLS context that trusts only the harness CA and checks
        the host name (the certificate is for localhost and 127.0.0.1)."""
        return ssl.create_default_context(cafile=self.values["FERRY_CA_FILE"])

    def connect(self, side, mode="plain", timeout=IMAP_TIMEOUT):
        """An unauthenticated IMAP connection. mode: "plain" (no TLS),
        "starttls" (plain port, then STARTTLS) or "ssl" (implicit TLS)."""
        if mode == "ssl":
            return imaplib.IMAP4_SSL(
                HOST, self.port(side, "imaps"), ssl_context=self.ssl_context(), timeout=timeout
            )
        imap = imaplib.IMAP4(HOST, self.port(side, "imap"), timeout=timeout)
        if mode == "starttls":
            imap.starttls(self.ssl_context())
        elif mode != "plain":
            raise ValueError(f"unknown mode {mode!r}")
        return imap

    def master_sync_args(self):
        """imapferry-sync's options to reach both Dovecots with master-user
        logins (the daemon's way: any user, no user password), STARTTLS
        verified against the harness CA."""
        return ["--host1", HOST, "--port1", str(self.port("src", "imap")),
                "--authuser1", MASTER_USER, "--password1", MASTER_PASS,
                "--sslargs1", f"SSL_ca_file={self.ca_file}",
                "--host2", HOST, "--port2", str(self.port("dst", "imap")),
                "--authuser2", MASTER_USER, "--password2", MASTER_PASS,
                "--sslargs2", f"SSL_ca_file={self.ca_file}"]

    def imap(self, side, user, mode="plain", master=False, password=None):
        """A logged-in client (LOGIN command). master=True logs in as
        "user*admin" with the master password."""
        imap = self.connect(side, mode)
        try:
            if master:
                imap.login(f"{user}{self.master_sep}{self.master_user}", self.master_pass)
            else:
                imap.login(user, password if password is not None else self.password(user))
        except BaseException:
            imap.shutdown()
            raise
        return imap

    def imap_plain_authzid(self, side, authzid, authcid, password, mode="plain"):
        """A client logged in with AUTHENTICATE PLAIN authzid/authcid/password
        (RFC 4616), e.g. ("alice", "admin", master password)."""
        imap = self.connect(side, mode)
        token = f"{authzid}\0{authcid}\0{password}".encode("utf-8")
        try:
            imap.authenticate("PLAIN", lambda _challenge: token)
        except BaseException:
            imap.shutdown()
            raise
        return imap


# ---------------------------------------------------------------------------
# Processes: identified by pid and command line, never by name alone.


def _proc_stat(pid):
    """(state, ppid) of a process, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _alive(pid):
    """True while a process runs. A zombie counts as gone: its parent (often
    init, which may reap late) still has to collect it, but it holds nothing."""
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _cmdline(pid):
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return []


def _descendants(pid):
    """Pids of all descendants of pid (Dovecot's master and its children)."""
    children = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st:
                children[st[1]].append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _read_pid(path):
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _terminate(masters, timeout=STOP_TIMEOUT):
    """SIGTERM the masters (each stops its own children), wait for them and
    their descendants to go, SIGKILL whatever is left after timeout. Returns
    the pids that survived even that."""
    pids = [p for p in masters + [d for m in masters for d in _descendants(m)] if _alive(p)]
    for pid in masters:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if _alive(p)]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 2
    while any(_alive(p) for p in left) and time.monotonic() < deadline:
        time.sleep(0.05)
    # The daemons' parent is init, which may reap late (this is cosmetic:
    # a zombie holds no port or file, but shows up in pgrep). Wait a little.
    deadline = time.monotonic() + 3
    while any(_proc_stat(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in left if _alive(p)]


def _port_listening(port):
    try:
        with socket.create_connection((HOST, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path, lines=25):
    """The last lines of a log file, indented, for error messages."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"    ({path}: no log)"
    return f"    --- last lines of {path} ---\n" + "\n".join("    " + t for t in text)


# ---------------------------------------------------------------------------
# start


def _find_program(name):
    """Full path of a program; /usr/sbin is searched even when not in PATH."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/usr/local/sbin:/sbin"
    found = shutil.which(name, path=path)
    if not found:
        raise HarnessError(f"{name} not found (Debian: apt-get install dovecot-imapd "
                           "dovecot-lmtpd redis-server openssl)")
    return found


def _free_ports(count):
    """count distinct free loopback ports: bind port 0 and let the kernel
    choose. All sockets stay open until all are chosen so none repeats; the
    window between closing and the server's bind is short, and a server that
    loses that race is restarted on new ports (see _start_with_retry)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _render(template, dest, values):
    """Copy a template from config/test, replacing every @NAME@ by values[NAME]."""
    text = (TEMPLATE_DIR / template).read_text()

    def subst(m):
        if m.group(1) not in values:
            raise HarnessError(f"{template}: no value for @{m.group(1)}@")
        return str(values[m.group(1)])

    Path(dest).write_text(re.sub(r"@([A-Z_]+)@", subst, text))


def _identity():
    """Who runs what.

    Dovecot never grants mail access to uid 0 ("Mail access for users with
    UID 0 not permitted"), so as root the mail is owned by the system user
    "nobody" (uid/gid from the passwd-file userdb; first/last_valid_uid admit
    exactly that uid). Not "dovecot" or "dovenull": those are Dovecot's own
    privilege-separation users (auth, login), and giving them the mailboxes
    would let those processes read mail. No user is created: no system-wide
    change. As a non-root developer every process, mail included, runs as
    that developer (Dovecot cannot switch users then, nor chroot)."""
    if os.geteuid() == 0:
        try:
            nobody = pwd.getpwnam("nobody")
            for user in ("dovecot", "dovenull"):
                pwd.getpwnam(user)
            grp.getgrnam("dovecot")
        except KeyError as e:
            raise HarnessError(f"system user missing ({e}): is dovecot-core installed?") from None
        return {
            "root": True,
            "mail_uid": nobody.pw_uid,
            "mail_gid": nobody.pw_gid,
            "mail_user": "nobody",
            "internal_user": "dovecot",
            "internal_group": "dovecot",
            "login_user": "dovenull",
            "login_chroot": "login",
            "anvil_chroot": "empty",
        }
    me = pwd.getpwuid(os.geteuid())
    return {
        "root": False,
        "mail_uid": me.pw_uid,
        "mail_gid": os.getegid(),
        "mail_user": me.pw_name,
        "internal_user": me.pw_name,
        "internal_group": grp.getgrgid(os.getegid()).gr_name,
        "login_user": me.pw_name,
        "login_chroot": "",
        "anvil_chroot": "",
    }


def _check_traversable(directory, users):
    """As root, Dovecot's auth process (user dovecot) reads DIR/<side>/users
    and the mail processes (user nobody) write DIR/<side>/mail: every parent
    of DIR must let them through."""
    for user in users:
        pw = pwd.getpwnam(user)
        groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
        for parent in [directory, *directory.parents]:
            st = parent.stat()
            if st.st_uid == pw.pw_uid:
                ok = st.st_mode & stat.S_IXUSR
            elif st.st_gid in groups:
                ok = st.st_mode & stat.S_IXGRP
            else:
                ok = st.st_mode & stat.S_IXOTH
            if not ok:
                raise HarnessError(
                    f"{parent} is not searchable by user {user!r}, which Dovecot uses "
                    f"under {directory}; choose a DIR under /tmp or chmod o+x {parent}"
                )


def _make_tls(tls_dir):
    """A throw-away CA (ca.pem) and a server certificate it signed for
    CN=localhost with SAN DNS:localhost, IP:127.0.0.1. EC P-256 keys: they
    take milliseconds to generate where RSA takes a second."""
    tls_dir.mkdir(mode=0o755, exist_ok=True)
    openssl = _find_program("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
         "-subj", "/CN=imapferry test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         "-addext", "subjectKeyIdentifier=hash"],
        [openssl, "req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
         "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-set_serial", str(random.SystemRandom().getrandbits(63)), "-days", "30",
         "-extfile", str(TEMPLATE_DIR / "tls-server.ext"), "-out", "server.pem"],
    ]
    for cmd in steps:
        r = subprocess.run(cmd, cwd=tls_dir, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise HarnessError(f"{' '.join(cmd[:3])} failed:\n{r.stdout.decode(errors='replace')}")
    # Readable by Dovecot's config process only (it runs as root, or as you).
    (tls_dir / "ca.key").chmod(0o600)
    (tls_dir / "server.key").chmod(0o600)


def _wait_ready(what, probe, alive, logs, deadline):
    """Call probe() until it succeeds; fail when the process died or at the
    deadline, with the tail of its logs."""
    last = None
    while True:
        try:
            return probe()
        except (OSError, ssl.SSLError, HarnessError) as e:
            last = e
        if not alive():
            raise HarnessError(f"{what}: the server exited ({last})\n"
                               + "\n".join(map(_tail, logs)))
        if time.monotonic() > deadline:
            raise HarnessError(f"{what}: no answer after {START_TIMEOUT:.0f} s ({last})\n"
                               + "\n".join(map(_tail, logs)))
        time.sleep(0.05)


def _probe_greeting(port, prefix, ctx=None):
    """Connect (through TLS when ctx is given) and check the first line."""
    with socket.create_connection((HOST, port), timeout=2) as raw:
        sock = ctx.wrap_socket(raw, server_hostname=HOST) if ctx else raw
        line = sock.makefile("rb").readline(1024)
        if not line.startswith(prefix):
            raise HarnessError(f"port {port}: unexpected greeting {line!r}")
        return line


def _probe_redis(port):
    with socket.create_connection((HOST, port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        line = sock.makefile("rb").readline(1024)
        if line != b"+PONG\r\n":
            raise HarnessError(f"redis: PING answered {line!r}")


def _userdb_extra(side, user, values):
    """Extra userdb fields of a passwd-file line ("" for most users)."""
    if side == "src" and user == NSTATUS_USER:
        return (f"userdb_notify_status_dict=redis:host={HOST}"
                f":port={values['FERRY_NSTATUS_REDIS_PORT']}:prefix={NSTATUS_PREFIX}")
    return ""


def _start_dovecot(directory, side, ident, ports, base_dir, ctx):
    """Render DIR/<side>/dovecot.conf, start Dovecot, wait for its listeners.
    Returns the master pid."""
    side_dir = directory / side
    layout, sep = LAYOUTS[side]
    mail_dir = side_dir / "mail"
    location = f"maildir:{mail_dir}/%u" + (":LAYOUT=fs" if layout == "fs" else "")
    conf = side_dir / "dovecot.conf"
    _render("dovecot.conf.in", conf, {
        "SIDE": side, "SIDE_DIR": side_dir, "BASE_DIR": base_dir, "TLS_DIR": directory / "tls",
        "INTERNAL_USER": ident["internal_user"], "INTERNAL_GROUP": ident["internal_group"],
        "LOGIN_USER": ident["login_user"], "LOGIN_CHROOT": ident["login_chroot"],
        "ANVIL_CHROOT": ident["anvil_chroot"],
        "MAIL_UID": ident["mail_uid"], "MAIL_GID": ident["mail_gid"],
        "MAIL_LOCATION": location, "SEPARATOR": sep,
        "MAIL_PLUGINS": "notify notify_status" if side == "src" else "",
        "IMAP_PLUGINS": "imap_zlib" if side == "dst" else "",
        "IMAP_PORT": ports["imap"], "IMAPS_PORT": ports["imaps"], "LMTP_PORT": ports["lmtp"],
    })
    log = side_dir / "dovecot.log"
    errlog = side_dir / "dovecot.stderr"
    # Dovecot checks its configuration, binds the listeners, then forks into the
    # background: a non-zero exit means it never ran. Output goes to a file, not
    # a pipe, so that no daemon holds the caller's (ctest's) pipe open.
    with open(errlog, "wb") as err:
        r = subprocess.run([_find_program("dovecot"), "-c", str(conf)], cwd=side_dir,
                           stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=START_TIMEOUT)
    if r.returncode != 0:
        raise HarnessError(f"dovecot {side} failed to start (exit {r.returncode})\n"
                           + _tail(errlog) + "\n" + _tail(log))
    deadline = time.monotonic() + START_TIMEOUT
    pidfile = Path(base_dir) / "master.pid"
    pid = _wait_ready(f"dovecot {side} master.pid", lambda: _pid_from(pidfile),
                      lambda: True, [log, errlog], deadline)
    alive = lambda: _alive(pid)  # noqa: E731
    logs = [log, errlog]
    _wait_ready(f"dovecot {side} IMAP :{ports['imap']}",
                lambda: _probe_greeting(ports["imap"], b"* OK"), alive, logs, deadline)
    _wait_ready(f"dovecot {side} IMAPS :{ports['imaps']}",
                lambda: _probe_greeting(ports["imaps"], b"* OK", ctx), alive, logs, deadline)
    _wait_ready(f"dovecot {side} LMTP :{ports['lmtp']}",
                lambda: _probe_greeting(ports["lmtp"], b"220"), alive, logs, deadline)
    return pid


def _pid_from(pidfile):
    """The pid in a daemon's pid file; HarnessError while it is not there."""
    pid = _read_pid(pidfile)
    if pid is None:
        raise HarnessError(f"no pid in {pidfile} yet")
    return pid


def _start_redis(directory, port):
    """Render DIR/redis/redis.conf, start redis-server, wait for PONG."""
    rdir = directory / "redis"
    rdir.mkdir(mode=0o755, exist_ok=True)
    conf = rdir / "redis.conf"
    _render("redis.conf.in", conf, {"PORT": port, "REDIS_DIR": rdir})
    errlog = rdir / "redis.stderr"
    log = rdir / "redis.log"
    with open(errlog, "wb") as err:
        r = subprocess.run([_find_program("redis-server"), str(conf)], cwd=rdir,
                           stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=START_TIMEOUT)
    if r.returncode != 0:
        raise HarnessError(f"redis-server failed to start (exit {r.returncode})\n"
                           + _tail(errlog) + "\n" + _tail(log))
    deadline = time.monotonic() + START_TIMEOUT
    pid = _wait_ready("redis pidfile", lambda: _pid_from(rdir / "redis.pid"),
                      lambda: True, [log, errlog], deadline)
    _wait_ready(f"redis :{port}", lambda: _probe_redis(port), lambda: _alive(pid),
                [log, errlog], deadline)
    return pid


def _start_oauth(directory, users, values):
    """The OAuth2 token server (oauth_server.py) for XOAUTH2/OAUTHBEARER
    tests: a test service account (RSA key pair made here, Google-style
    DIR/oauth/key.json whose token_uri is the local server), a fixed access
    token per user, and DIR/<side>/dovecot-oauth2.conf.ext for Dovecot's
    oauth2 passdb (introspection over HTTPS, harness CA). Fills values."""
    odir = directory / "oauth"
    odir.mkdir(mode=0o755, exist_ok=True)
    openssl = _find_program("openssl")
    for cmd in ([openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", "sa.key"],
                [openssl, "pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]):
        r = subprocess.run(cmd, cwd=odir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise HarnessError(f"{' '.join(cmd[:2])} failed:\n{r.stdout.decode(errors='replace')}")
    (odir / "sa.key").chmod(0o600)
    email = "ferry-sync@imapferry-test.iam.gserviceaccount.com"
    tokens = {u: "fixed-" + u + "-" + base64.urlsafe_b64encode(os.urandom(18)).decode()
              for u in users}
    config = odir / "config.json"
    config.write_text(json.dumps({
        "cert": str(directory / "tls" / "server.pem"), "key": str(directory / "tls" / "server.key"),
        "public_key": str(odir / "sa.pub"), "client_email": email, "users": sorted(users),
        "fixed_tokens": tokens, "port_file": str(odir / "port"),
        "pid_file": str(odir / "oauth.pid")}))
    config.chmod(0o600)
    log = odir / "oauth.log"
    with open(log, "wb") as out:  # a file, not a pipe: ctest must not wait on it
        proc = subprocess.Popen([sys.executable, str(HARNESS_DIR / "oauth_server.py"),
                                 "--config", str(config)], cwd=odir, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True)
    values["FERRY_OAUTH_PID"] = proc.pid
    values["FERRY_OAUTH_LOG"] = log
    deadline = time.monotonic() + START_TIMEOUT
    port = _wait_ready("oauth server port", lambda: _pid_from(odir / "port"),
                       lambda: proc.poll() is None, [log], deadline)
    ctx = ssl.create_default_context(cafile=str(directory / "tls" / "ca.pem"))

    def probe():
        with socket.create_connection((HOST, port), timeout=2) as raw:
            with ctx.wrap_socket(raw, server_hostname=HOST) as sock:
                sock.sendall(b"GET /stats HTTP/1.0\r\n\r\n")
                if not sock.recv(64).startswith(b"HTTP/1.0 200"):
                    raise HarnessError("oauth server: /stats did not answer 200")

    _wait_ready(f"oauth server :{port}", probe, lambda: proc.poll() is None, [log], deadline)
    token_uri = f"https://{HOST}:{port}/token"
    key = {"type": "service_account", "project_id": "imapferry-test",
           "private_key_id": os.urandom(20).hex(), "private_key": (odir / "sa.key").read_text(),
           "client_email": email, "client_id": "100000000000000000001",
           "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": token_uri}
    (odir / "key.json").write_text(json.dumps(key, indent=2) + "\n")
    (odir / "key.json").chmod(0o600)
    for side in SIDES:
        (directory / side / "dovecot-oauth2.conf.ext").write_text(
            "# Written by ferry_harness.py: Dovecot's oauth2 passdb asks oauth_server.py.\n"
            "introspection_mode = post\n"
            f"introspection_url = https://{HOST}:{port}/introspect\n"
            f"tls_ca_cert_file = {directory / 'tls' / 'ca.pem'}\n"
            "username_attribute = username\n"
            "active_attribute = active\n"
            "active_value = true\n"
            "timeout_msecs = 10000\n")
    values.update({
        "FERRY_OAUTH_PORT": port,
        "FERRY_OAUTH_TOKEN_URI": token_uri,
        "FERRY_OAUTH_KEY_JSON": odir / "key.json",
        "FERRY_OAUTH_SA_KEY": odir / "sa.key",
        "FERRY_OAUTH_SA_EMAIL": email,
        "FERRY_OAUTH_TOKENS": " ".join(f"{u}:{t}" for u, t in tokens.items()),
    })


def _start_with_retry(what, start, new_ports, logs):
    """Run start(ports); if the server lost a free port to someone else in
    the meantime ("Address already in use"), try again on new ports."""
    for attempt in range(3):
        ports = new_ports()
        try:
            return ports, start(ports)
        except HarnessError as e:
            in_use = "already in use" in str(e) or any(
                "already in use" in Path(p).read_text(errors="replace")
                for p in logs if Path(p).exists())
            if not in_use or attempt == 2:
                raise
            print(f"{what}: a port was taken meanwhile, retrying", file=sys.stderr)
            for p in logs:
                Path(p).unlink(missing_ok=True)


def start(directory, quiet=False, extra_users=None):
    """Start both Dovecots and Redis under directory, write DIR/env and return
    an Env. On failure, stops whatever did start and raises HarnessError
    (DIR is kept so that its logs can be read; `stop` removes it).
    extra_users: optional {user: password} added to USERS for this run
    (benchmarks with many accounts); FERRY_EXTRA_USERS="u1 u2 ..." in the
    environment does the same with passwords "<user>-pw"."""
    users = dict(USERS)
    users.update({u: f"{u}-pw" for u in os.environ.get("FERRY_EXTRA_USERS", "").split()})
    users.update(extra_users or {})
    t0 = time.monotonic()
    directory = Path(os.path.abspath(directory))
    if not SAFE_PATH.match(str(directory)):
        raise HarnessError(f"{directory}: use a path of letters, digits and ._/+- only")
    os.umask(0o022)
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).exists():
            raise HarnessError(f"{directory} exists, is not empty and was not made by this harness")
        stop(directory, keep=True, quiet=True)  # leftovers of an earlier run
        for child in directory.iterdir():
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    directory.chmod(0o755)
    (directory / MARKER).write_text("Made by tests/harness/ferry_harness.py; removed by `stop`.\n")

    ident = _identity()
    if ident["root"]:
        _check_traversable(directory, [ident["mail_user"], ident["internal_user"]])

    values = {
        "FERRY_DIR": directory,
        "FERRY_HOST": HOST,
        "FERRY_CA_FILE": directory / "tls" / "ca.pem",
        "FERRY_USERS": " ".join(f"{u}:{p}" for u, p in users.items()),
        "FERRY_MASTER_USER": MASTER_USER,
        "FERRY_MASTER_PASS": MASTER_PASS,
        "FERRY_MASTER_SEP": MASTER_SEP,
        "FERRY_MAIL_UID": ident["mail_uid"],
        "FERRY_NSTATUS_REDIS_PORT": _free_ports(1)[0],
        "FERRY_NSTATUS_PREFIX": NSTATUS_PREFIX,
        "FERRY_NSTATUS_USER": NSTATUS_USER,
    }
    env_path = directory / "env"
    try:
        _make_tls(directory / "tls")
        ctx = ssl.create_default_context(cafile=str(values["FERRY_CA_FILE"]))
        for side in SIDES:  # the oauth2 passdb settings go there
            (directory / side).mkdir(mode=0o755, parents=True, exist_ok=True)
        _start_oauth(directory, users, values)
        write_env_file(env_path, values)
        for side in SIDES:
            side_dir = directory / side
            for sub in ("state", "mail", "home"):
                (side_dir / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
            for sub in ("mail", "home"):
                os.chown(side_dir / sub, ident["mail_uid"], ident["mail_gid"])
                (side_dir / sub).chmod(0o700)
            # Test passwords in clear ({PLAIN}): these accounts exist only here.
            (side_dir / "users").write_text("".join(
                f"{u}:{{PLAIN}}{p}:{ident['mail_uid']}:{ident['mail_gid']}::{side_dir}/home/{u}::{_userdb_extra(side, u, values)}\n"
                for u, p in users.items()))
            (side_dir / "master-users").write_text(f"{MASTER_USER}:{{PLAIN}}{MASTER_PASS}\n")
            base_dir = side_dir / "run"
            if len(str(base_dir)) > MAX_BASE_DIR:
                base_dir = Path(tempfile.mkdtemp(prefix=f"ferry-{side}-"))
            base_dir.mkdir(mode=0o755, exist_ok=True)
            base_dir.chmod(0o755)
            P = f"FERRY_{side.upper()}_"
            values.update({
                P + "SEP": LAYOUTS[side][1],
                P + "LAYOUT": LAYOUTS[side][0],
                P + "DOVECOT_CONF": side_dir / "dovecot.conf",
                P + "BASE_DIR": base_dir,
                P + "LOG": side_dir / "dovecot.log",
                P + "MAIL_DIR": side_dir / "mail",
            })
        # Written before anything runs, so that `stop` always finds the paths.
        write_env_file(env_path, values)

        for side in SIDES:
            P = f"FERRY_{side.upper()}_"

            def new_ports():
                return dict(zip(("imap", "imaps", "lmtp"), _free_ports(3)))

            def run(ports, side=side, P=P):
                values.update({P + "IMAP_PORT": ports["imap"], P + "IMAPS_PORT": ports["imaps"],
                               P + "LMTP_PORT": ports["lmtp"]})
                write_env_file(env_path, values)
                return _start_dovecot(directory, side, ident, ports, values[P + "BASE_DIR"], ctx)

            _ports, pid = _start_with_retry(f"dovecot {side}", run, new_ports, [values[P + "LOG"]])
            values[P + "DOVECOT_PID"] = pid
            write_env_file(env_path, values)

        rdir = directory / "redis"
        values["FERRY_REDIS_CONF"] = rdir / "redis.conf"
        values["FERRY_REDIS_LOG"] = rdir / "redis.log"

        def run_redis(ports):
            values["FERRY_REDIS_PORT"] = ports[0]
            write_env_file(env_path, values)
            return _start_redis(directory, ports[0])

        _ports, pid = _start_with_retry("redis", run_redis, lambda: _free_ports(1),
                                        [rdir / "redis.log"])
        values["FERRY_REDIS_PID"] = pid  # written last: its presence means "complete"
        write_env_file(env_path, values)
    except BaseException:
        stop(directory, keep=True, quiet=True)
        raise

    env = Env(directory, {k: str(v) for k, v in values.items()})
    if not quiet:
        _print_summary(env, time.monotonic() - t0)
    return env


def _print_summary(env, elapsed):
    print(f"ferry harness up in {elapsed:.1f} s under {env.dir}")
    for side, label in (("src", "source"), ("dst", "dest  ")):
        print(f"  {label} IMAP {HOST}:{env.port(side, 'imap')} (STARTTLS), "
              f"IMAPS {HOST}:{env.port(side, 'imaps')}, LMTP {HOST}:{env.port(side, 'lmtp')}, "
              f"separator {env.sep(side)!r}, log {env.values[f'FERRY_{side.upper()}_LOG']}")
    print(f"  redis  {HOST}:{env.redis_port}")
    print(f"  oauth  {env.oauth_token_uri} (JWT-bearer grant; Dovecot introspects at "
          f"/introspect), service account key {env.oauth_key_json}")
    print("  login " + ", ".join(f"{u} / {p}" for u, p in env.users.items())
          + f"; master {MASTER_USER} / {MASTER_PASS} as \"alice{MASTER_SEP}{MASTER_USER}\"")
    print(f"  CA file {env.ca_file}; settings in {env.dir / 'env'}")


# ---------------------------------------------------------------------------
# stop


def stop(directory, keep=False, quiet=False):
    """Stop everything started for directory and remove it (unless keep).
    Idempotent: a missing, half-started or already stopped DIR is fine.
    Returns True when nothing is left running or listening."""
    directory = Path(os.path.abspath(directory))
    say = (lambda *a: None) if quiet else print
    if not directory.exists():
        say(f"{directory}: nothing to stop")
        return True
    try:
        values = read_env_file(directory / "env")
    except (OSError, ValueError):
        values = {}
    ok = True

    victims = []  # (what, pid)
    for side in SIDES:
        P = f"FERRY_{side.upper()}_"
        conf = values.get(P + "DOVECOT_CONF", str(directory / side / "dovecot.conf"))
        base_dir = values.get(P + "BASE_DIR", str(directory / side / "run"))
        pids = {_read_pid(Path(base_dir) / "master.pid"), _int(values.get(P + "DOVECOT_PID"))}
        for pid in pids:
            # Only a dovecot started with this very config file is ours.
            if pid and _alive(pid) and conf.encode() in _cmdline(pid):
                victims.append((f"dovecot {side}", pid))
    redis_port = values.get("FERRY_REDIS_PORT")
    pids = {_read_pid(directory / "redis" / "redis.pid"), _int(values.get("FERRY_REDIS_PID"))}
    for pid in pids:
        args = b" ".join(_cmdline(pid)) if pid else b""
        if pid and _alive(pid) and b"redis-server" in args and (
                not redis_port or f":{redis_port}".encode() in args):
            victims.append(("redis", pid))

    pid = _int(values.get("FERRY_OAUTH_PID"))
    if pid and _alive(pid) and (directory / "oauth" / "config.json").as_posix().encode() in _cmdline(pid):
        victims.append(("oauth server", pid))

    survivors = _terminate([pid for _what, pid in victims])
    for what, pid in victims:
        say(f"stopped {what} (pid {pid})")
    if survivors:
        ok = False
        print(f"error: processes {survivors} survived SIGKILL", file=sys.stderr)

    for key, port in values.items():
        if key.endswith("_PORT") and port.isdigit() and _port_listening(port):
            ok = False
            print(f"error: something still listens on {HOST}:{port} ({key})", file=sys.stderr)

    if not keep and ok:
        for side in SIDES:
            base_dir = values.get(f"FERRY_{side.upper()}_BASE_DIR", "")
            if base_dir and not base_dir.startswith(str(directory) + "/"):
                shutil.rmtree(base_dir, ignore_errors=True)
        if (directory / MARKER).exists():
            shutil.rmtree(directory)
            say(f"removed {directory}")
        else:
            print(f"warning: {directory} was not made by this harness; not removed",
                  file=sys.stderr)
    return ok


def _int(text):
    return int(text) if text and text.isdigit() else None


# ---------------------------------------------------------------------------
# populate: a deterministic, realistic corpus.

# (path, subscribed, weight): weight * scale["per_weight"] messages each.
FOLDER_PLAN = [
    (("INBOX",), True, 6),
    (("Sent",), True, 3),
    (("Drafts",), True, 1),
    (("Trash",), True, 1),
    (("Junk",), True, 1),
    (("Archive",), True, 1),
    (("Archive", "2019"), False, 2),
    (("Archive", "2020"), True, 2),
    (("Archive", "2021"), True, 2),
    (("Projects",), True, 1),
    (("Projects", "2024"), True, 1),
    (("Projects", "2024", "Q1"), True, 2),
    (("Projects", "2024", "Q2"), True, 1),
    (("Bücher",), True, 1),
    (("Bücher", "Sachbücher"), True, 1),
    (("日本語",), True, 1),
    (('My "quoted" folder',), True, 1),
    (("R&D",), False, 1),
    (("Lists",), True, 1),
    (("Lists", "imap-protocol"), False, 2),
    (("Empty folder",), True, 0),
]
# Folders dovecot.conf.in creates with "auto = subscribe".
SPECIAL_USE_FLAGS = {"\\Sent", "\\Drafts", "\\Trash", "\\Junk"}
# big_share: share of messages with a 100-500 KB attachment; mid_share: 10-80 KB.
SCALES = {
    "small": {"per_weight": 4, "big_share": 0.08, "mid_share": 0.22},
    "medium": {"per_weight": 30, "big_share": 0.03, "mid_share": 0.25},
}
# The two really big messages, in every scale: (folder, size in bytes).
HUGE = [(("INBOX",), 5_000_000), (("Archive", "2020"), 2_500_000)]

WORDS = ("imap mailbox folder sync proxy server client message flag keyword quota backup "
         "migration weekly report budget meeting agenda invoice draft review release plan "
         "customer ticket status update deadline project coffee monday friday notes summary "
         "question answer thanks please attached document version change request approval "
         "network latency storage index cache header body literal capability namespace").split()
TOPICS = ("Weekly report", "Re: Budget 2024", "Meeting notes", "Invoice", "Fwd: Release plan",
          "Question about the migration", "Server maintenance", "Re: Re: Ticket update",
          "Holiday schedule", "Draft: proposal")
ZONES = [0, 60, 120, -300, -480, 540, 330, -180]  # minutes east of UTC


@dataclasses.dataclass
class CorpusMessage:
    raw: bytes
    flags: list
    internaldate: str  # RFC 3501 date-time, without quotes


@dataclasses.dataclass
class CorpusFolder:
    path: tuple  # hierarchy components, e.g. ("Projects", "2024", "Q1")
    subscribed: bool
    messages: list


def _words(rng, count):
    return " ".join(rng.choice(WORDS) for _ in range(count))


def _text_lines(rng, size):
    """Plain-text lines (at most 72 columns) of about size bytes."""
    lines, total = [], 0
    while total < size:
        line = _words(rng, rng.randint(4, 11))[:72] if rng.random() > 0.15 else ""
        lines.append(line)
        total += len(line) + 2
    return lines


def _base64_lines(data):
    return base64.encodebytes(data).decode("ascii").splitlines()  # 76 columns


def _build_message(rng, seq, seed, user, when, size, kind):
    """One RFC 5322 message of about size bytes, CRLF line ends only.
    kind: "text", "attach", "8bit", "longlines" or "nomsgid"."""
    sender = rng.choice(["Anna Schmidt <anna@example.net>", "bob.jones@example.com",
                         "\"Lee, Min\" <min.lee@example.org>", "noreply@lists.example.net"])
    sent = when - datetime.timedelta(minutes=rng.randint(1, 30))
    head = []
    for hop in range(rng.randint(1, 3)):  # newest Received first
        t = when - datetime.timedelta(seconds=hop * rng.randint(1, 40))
        mx, ip = f"mx{hop + 1}.example.net", f"192.0.2.{rng.randint(1, 254)}"
        head += [f"Received: from {mx} ({mx} [{ip}])",
                 f"\tby mail.example.org (Postfix) with ESMTPS id {rng.getrandbits(40):010X}",
                 f"\tfor <{user}@example.org>; {email.utils.format_datetime(t)}"]
    subject = f"{rng.choice(TOPICS)} #{seq}"
    if kind == "8bit":
        sender = "Jürgen Müller <juergen@example.de>"
        subject = f"Grüße aus Köln — 日本語のテスト #{seq}"
    head += [f"From: {sender}", f"To: {user}@example.org", f"Subject: {subject}",
             f"Date: {email.utils.format_datetime(sent)}"]
    if kind != "nomsgid":
        head.append(f"Message-ID: <{seed:x}.{seq}.{rng.getrandbits(32):08x}@example.net>")
    head.append("MIME-Version: 1.0")

    if kind == "8bit":
        body = ["Hallo Jürgen,", "", "schöne Grüße, 日本語の本文です。 Ça va? Ελληνικά.", ""]
        body += _text_lines(rng, size - 600)
        head += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
    elif kind == "longlines":
        head.append("Content-Type: text/plain; charset=us-ascii")
        body = ["Lines far beyond 998 octets follow (RFC 5322 says SHOULD NOT, servers cope).",
                "x" * 1500, _words(rng, 2000), ""] + _text_lines(rng, max(0, size - 16000))
    elif kind == "attach":
        boundary = f"=_ferry_{seed}_{seq}"
        text = _text_lines(rng, rng.randint(200, 1500))
        name = f"{rng.choice(['report', 'scan', 'photo', 'archive'])}-{seq}.bin"
        payload = rng.randbytes(max(0, (size - 2000) * 57 // 78))
        head.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        body = ["This is a multi-part message in MIME format.", "", f"--{boundary}",
                "Content-Type: text/plain; charset=us-ascii", "", *text, "", f"--{boundary}",
                f'Content-Type: application/octet-stream; name="{name}"',
                f'Content-Disposition: attachment; filename="{name}"',
                "Content-Transfer-Encoding: base64", "", *_base64_lines(payload),
                f"--{boundary}--", ""]
    else:
        head.append("Content-Type: text/plain; charset=us-ascii")
        body = _text_lines(rng, size - 700)
    return "\r\n".join(head + [""] + body).encode("utf-8") + b"\r\n"


def _random_flags(rng, folder):
    flags = []
    if folder != "Drafts" and rng.random() < 0.7:
        flags.append("\\Seen")
    if rng.random() < 0.1:
        flags.append("\\Answered")
    if rng.random() < 0.1:
        flags.append("\\Flagged")
    if folder == "Drafts":
        flags.append("\\Draft")
    if folder == "Trash" and rng.random() < 0.5:
        flags.append("\\Deleted")
    if rng.random() < 0.1:
        flags.append("$Label1")
    if rng.random() < 0.05:
        flags.append("$MDNSent")
    if folder == "Junk":
        flags.append("Junk")
    elif folder == "INBOX" and rng.random() < 0.15:
        flags.append("NonJunk")
    return flags


def build_corpus(seed=1, scale="small", user="alice"):
    """The folders and messages populate() creates: [CorpusFolder].
    Deterministic: the same seed and scale give the same bytes, flags and
    dates (the user name only appears in To: and Received: headers)."""
    params = SCALES[scale]
    rng = random.Random(seed)
    epoch0 = datetime.datetime(2016, 1, 1, tzinfo=datetime.timezone.utc).timestamp()
    epoch1 = datetime.datetime(2024, 12, 31, tzinfo=datetime.timezone.utc).timestamp()
    folders, seq = [], 0

    def when():
        zone = datetime.timezone(datetime.timedelta(minutes=rng.choice(ZONES)))
        return datetime.datetime.fromtimestamp(rng.randint(int(epoch0), int(epoch1)), zone)

    def message(folder, kind=None, size=None, flags=None):
        nonlocal seq
        seq += 1
        r = rng.random()
        if size is None:
            if r < params["big_share"]:
                size = rng.randint(100_000, 500_000)
            elif r < params["big_share"] + params["mid_share"]:
                size = rng.randint(10_000, 80_000)
            else:
                size = rng.randint(1_024, 8_000)
        if kind is None:
            kind = "attach" if size >= 10_000 else ("nomsgid" if rng.random() < 0.1 else "text")
        t = when()
        raw = _build_message(rng, seq, seed, user, t, size, kind)
        flags = _random_flags(rng, folder[-1]) if flags is None else flags
        return CorpusMessage(raw, flags, format_internaldate(t))

    for path, subscribed, weight in FOLDER_PLAN:
        msgs = [message(path) for _ in range(weight * params["per_weight"])]
        for huge_path, size in HUGE:
            if huge_path == path:
                msgs.append(message(path, "attach", size, ["\\Seen"]))
        if path == ("INBOX",):
            msgs.append(message(path, "nomsgid", 2_000, ["NonJunk"]))
            msgs.append(message(path, "text", 3_000, ["\\Deleted", "\\Seen"]))
            dup = message(path, "text", 4_000, ["\\Seen", "$Label1"])
            msgs += [dup, dup, dup]  # exact duplicates: same bytes, flags and date
            twin = message(path, "text", 1_500, ["\\Seen"])
            msgs += [twin, dataclasses.replace(twin, flags=[])]  # same bytes, other flags
        if path == ("Bücher",):
            msgs.append(message(path, "8bit", 3_000, ["\\Seen", "\\Flagged"]))
        if path == ("Lists",):
            msgs.append(message(path, "longlines", 30_000, []))
        folders.append(CorpusFolder(path, subscribed, msgs))
    return folders


def populate(env, side, user, scale="small", seed=1, quiet=True):
    """Fill user's account on side with build_corpus(seed, scale) over IMAP
    (LOGIN with the user's password; CREATE, SUBSCRIBE, APPEND with flags and
    INTERNALDATE). Appends to whatever is there already. Returns a summary
    {folders, messages, bytes, seconds}."""
    t0 = time.monotonic()
    corpus = build_corpus(seed, scale, user)
    imap = env.imap(side, user)
    try:
        sep = hierarchy_separator(imap)
        if sep != env.sep(side):
            raise HarnessError(f"{side}: separator {sep!r}, env file says {env.sep(side)!r}")
        existing = set(list_folders(imap))
        count = size = 0
        for folder in corpus:
            name = sep.join(folder.path)
            if name not in existing:
                imap_check(imap.create(mailbox_arg(name)), f"CREATE {name}")
            if folder.subscribed:
                imap_check(imap.subscribe(mailbox_arg(name)), f"SUBSCRIBE {name}")
            for msg in folder.messages:
                flags = "(" + " ".join(msg.flags) + ")" if msg.flags else None
                imap_check(imap.append(mailbox_arg(name), flags, f'"{msg.internaldate}"', msg.raw),
                           f"APPEND to {name}")
                count += 1
                size += len(msg.raw)
            if not quiet:
                print(f"  {name}: {len(folder.messages)} messages")
    finally:
        imap.logout()
    return {"folders": len(corpus), "messages": count, "bytes": size,
            "seconds": round(time.monotonic() - t0, 2)}


def sessions(env, side, users):
    """Sessions of users (a name or a collection) on side's Dovecot, as
    doveadm who counts them: a session lasts as long as its imap process,
    also after its client is gone."""
    users = {users} if isinstance(users, str) else set(users)
    conf = env.values[f"FERRY_{side.upper()}_DOVECOT_CONF"]
    out = subprocess.run(["doveadm", "-c", str(conf), "who"], capture_output=True,
                         text=True).stdout
    return sum(int(f[1]) for f in (line.split() for line in out.splitlines()[1:])
               if len(f) > 1 and f[0] in users)


def wait_sessions_gone(env, side, users, timeout=15):
    """Until no session of users is left on side's Dovecot. A client
    killed mid-transfer leaves its pipelined commands in the server's input:
    the server runs them (APPENDs land) for a while after the kill."""
    deadline = time.monotonic() + timeout
    while sessions(env, side, users):
        if time.monotonic() > deadline:
            raise AssertionError(f"sessions of {users} still on {side} after {timeout} s")
        time.sleep(0.05)


def wipe(env, side, user):
    """Return an account to its fresh state: every folder but INBOX and the
    special-use ones deleted, those emptied (EXPUNGE), and only the
    special-use ones left subscribed. Lets a test start over on a shared
    fixture."""
    imap = env.imap(side, user)
    try:
        sep = hierarchy_separator(imap)
        folders = list_folders(imap)
        keep = {n for n, (_d, flags) in folders.items()
                if n.upper() == "INBOX" or set(flags) & SPECIAL_USE_FLAGS}
        for name in sorted(folders, key=lambda n: -n.count(sep)):  # children first
            if name in keep:
                if int(imap_check(imap.select(mailbox_arg(name)), f"SELECT {name}")[0]):
                    imap_check(imap.store("1:*", "+FLAGS.SILENT", "(\\Deleted)"), name)
                    imap_check(imap.expunge(), f"EXPUNGE in {name}")
                imap_check(imap.unselect(), f"UNSELECT {name}")
            else:
                imap_check(imap.delete(mailbox_arg(name)), f"DELETE {name}")
        for name in list_subscribed(imap) - {n for n in keep if n.upper() != "INBOX"}:
            imap_check(imap.unsubscribe(mailbox_arg(name)), f"UNSUBSCRIBE {name}")
    finally:
        imap.logout()


# ---------------------------------------------------------------------------
# compare


@dataclasses.dataclass(frozen=True)
class MessageInfo:
    """What compare() knows of one message: the sha256 of BODY[] and the
    metadata that must survive a migration."""

    digest: str
    size: int
    flags: tuple  # sorted, without \Recent
    internaldate: str
    epoch: int
    subject: str
    uid: int

    @property
    def key(self):
        return (self.digest, self.flags, self.epoch)

    def describe(self):
        return (f"{self.size} bytes, flags ({' '.join(self.flags)}), "
                f"INTERNALDATE \"{self.internaldate}\", Subject: {self.subject!r}, "
                f"sha256 {self.digest[:12]}, uid {self.uid}")


@dataclasses.dataclass
class Difference:
    """One difference found by compare().

    kind: folder-missing / folder-extra (only on side 1 / only on side 2),
    subscription-missing / subscription-extra, folder-noselect,
    message-missing / message-extra, flags, internaldate, flags+internaldate.
    folder is in side 2's naming; where names the account that has it."""

    kind: str
    folder: str
    where: str
    detail: str

    def __str__(self):
        return f"{self.kind:<21} {self.folder!r} {self.where}: {self.detail}"


FETCH_BATCH = 200  # messages per FETCH command: memory stays bounded by the batch


def fetch_folder(imap, name):
    """[MessageInfo] of every message in a folder, via EXAMINE (read-only)
    and FETCH (UID FLAGS INTERNALDATE BODY.PEEK[]) in batches: nothing is
    changed, not even \\Seen."""
    data = imap_check(imap.select(mailbox_arg(name), readonly=True), f"EXAMINE {name}")
    exists = int(data[0])
    out = []
    for lo in range(1, exists + 1, FETCH_BATCH):
        hi = min(exists, lo + FETCH_BATCH - 1)
        resp = imap_check(imap.fetch(f"{lo}:{hi}", "(UID FLAGS INTERNALDATE BODY.PEEK[])"),
                          f"FETCH in {name}")
        for m in parse_fetch_response(resp):
            if m["body"] is None:
                continue  # an unsolicited FLAGS update, not our answer
            flags = tuple(sorted(f for f in (m["flags"] or []) if f.lower() != "\\recent"))
            out.append(MessageInfo(hashlib.sha256(m["body"]).hexdigest(), len(m["body"]), flags,
                                   m["internaldate"], parse_internaldate(m["internaldate"]),
                                   message_subject(m["body"]), m["uid"]))
    if len(out) != exists:
        raise HarnessError(f"{name}: EXISTS {exists} but {len(out)} messages fetched")
    return out


def map_folder(name, sep_from, sep_to):
    """A folder name in another separator ("INBOX" is case-insensitive)."""
    parts = name.split(sep_from) if sep_from else [name]  # NIL: a flat namespace
    if parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    return (sep_to or sep_from or "").join(parts)


def _diff_messages(folder, msgs1, msgs2, who1, who2):
    """Differences between two multisets of messages of one folder."""
    keyed1, keyed2 = collections.defaultdict(list), collections.defaultdict(list)
    for m in msgs1:
        keyed1[m.key].append(m)
    for m in msgs2:
        keyed2[m.key].append(m)
    c1 = collections.Counter({k: len(v) for k, v in keyed1.items()})
    c2 = collections.Counter({k: len(v) for k, v in keyed2.items()})
    by_uid = lambda m: m.uid  # noqa: E731
    only1 = sorted((m for k, n in (c1 - c2).items() for m in keyed1[k][:n]), key=by_uid)
    only2 = sorted((m for k, n in (c2 - c1).items() for m in keyed2[k][:n]), key=by_uid)
    # Same bytes on both sides but other flags or date: one "changed" line
    # rather than a missing plus an extra message.
    pool = collections.defaultdict(list)
    for m in only2:
        pool[m.digest].append(m)
    diffs = []
    for m in only1:
        if pool[m.digest]:
            o = pool[m.digest].pop(0)
            what = [w for w, differs in (("flags", m.flags != o.flags),
                                         ("internaldate", m.epoch != o.epoch)) if differs]
            diffs.append(Difference(
                "+".join(what), folder, f"{who1} uid {m.uid} / {who2} uid {o.uid}",
                f"flags ({' '.join(m.flags)}) vs ({' '.join(o.flags)}), "
                f"INTERNALDATE \"{m.internaldate}\" vs \"{o.internaldate}\", "
                f"{m.size} bytes, Subject: {m.subject!r}"))
        else:
            diffs.append(Difference("message-missing", folder, f"only on {who1}", m.describe()))
    for m in only2:
        if m in pool[m.digest]:
            diffs.append(Difference("message-extra", folder, f"only on {who2}", m.describe()))
    return diffs


def compare(env, user1, side1, user2, side2, map_sep=True, stats=None):
    """Compare two accounts: folder set, subscriptions, and per folder the
    multiset of (sha256 of BODY[], flags without \\Recent, INTERNALDATE).
    Side 1's folder names are translated to side 2's separator unless
    map_sep is False. Returns [Difference], empty when identical; fills the
    optional stats dict with folders/messages/bytes per side."""
    who1, who2 = f"{side1} {user1}", f"{side2} {user2}"
    imap1 = env.imap(side1, user1)
    try:
        imap2 = env.imap(side2, user2)
    except BaseException:
        imap1.logout()
        raise
    try:
        sep1, sep2 = hierarchy_separator(imap1), hierarchy_separator(imap2)
        if not map_sep:
            sep2 = sep1

        def live(imap, sep):  # {name in side 2's naming: (own name, (delim, flags))}
            return {map_folder(n, sep, sep2): (n, f) for n, f in list_folders(imap).items()
                    if "\\nonexistent" not in (x.lower() for x in f[1])}

        folders1, folders2 = live(imap1, sep1), live(imap2, sep2)
        subs1 = {map_folder(n, sep1, sep2) for n in list_subscribed(imap1)}
        subs2 = {map_folder(n, sep2, sep2) for n in list_subscribed(imap2)}

        diffs = []
        for name in sorted(folders1.keys() - folders2.keys()):
            diffs.append(Difference("folder-missing", name, f"only on {who1}",
                                    f"named {folders1[name][0]!r} there"))
        for name in sorted(folders2.keys() - folders1.keys()):
            diffs.append(Difference("folder-extra", name, f"only on {who2}",
                                    f"named {folders2[name][0]!r} there"))
        for name in sorted(subs1 - subs2):
            diffs.append(Difference("subscription-missing", name, f"only on {who1}", "subscribed"))
        for name in sorted(subs2 - subs1):
            diffs.append(Difference("subscription-extra", name, f"only on {who2}", "subscribed"))

        counts = [[0, 0, 0], [0, 0, 0]]  # per side: folders, messages, bytes
        for name in sorted(folders1.keys() & folders2.keys()):
            (n1, (_d1, f1)), (n2, (_d2, f2)) = folders1[name], folders2[name]
            sel1 = "\\noselect" not in (x.lower() for x in f1)
            sel2 = "\\noselect" not in (x.lower() for x in f2)
            if sel1 != sel2:
                diffs.append(Difference("folder-noselect", name, f"{who1} vs {who2}",
                                        f"selectable: {sel1} vs {sel2}"))
                continue
            if not sel1:
                continue
            msgs1, msgs2 = fetch_folder(imap1, n1), fetch_folder(imap2, n2)
            for count, msgs in zip(counts, (msgs1, msgs2)):
                count[0] += 1
                count[1] += len(msgs)
                count[2] += sum(m.size for m in msgs)
            diffs += _diff_messages(name, msgs1, msgs2, who1, who2)
    finally:
        for imap in (imap1, imap2):
            try:
                imap.logout()  # never CLOSE: it would expunge \Deleted messages
            except (OSError, imaplib.IMAP4.error):
                pass
    if stats is not None:
        for n, (folders, messages, size) in zip("12", counts):
            stats.update({f"folders{n}": folders, f"messages{n}": messages, f"bytes{n}": size})
    return diffs


# ---------------------------------------------------------------------------
# deliver


def run_peak_rss(cmd, cwd=None, stdout=None):
    """Run cmd to completion while polling its VmHWM; returns (returncode,
    peak RSS in MiB). getrusage(RUSAGE_CHILDREN) would also count the pages
    of the forked Python before exec, so the process is watched instead."""
    p = subprocess.Popen(cmd, cwd=cwd, stdout=stdout, stderr=subprocess.STDOUT)
    hwm = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.002)
    return p.returncode, hwm / 1024.0


def deliver(env, user, message, side="src", sender="sender@example.net"):
    """Deliver message (bytes; bare LF is turned into CRLF) to user's INBOX
    through LMTP, bypassing IMAP and any proxy. Raises on refusal."""
    message = re.sub(rb"\r?\n", b"\r\n", message)
    with smtplib.LMTP(HOST, env.port(side, "lmtp"), timeout=30) as lmtp:
        lmtp.sendmail(sender, [user], message)


# ---------------------------------------------------------------------------
# imapferry-proxy in front of a side's Dovecot (for the proxy's tests)


@dataclasses.dataclass
class ProxyProcess:
    """A running imapferry-proxy started by start_proxy(). port: the plain
    listener (STARTTLS offered), tls_port: implicit TLS, http_port: /metrics;
    log: its stderr/stdout file."""

    proc: subprocess.Popen
    port: int
    tls_port: int
    http_port: int
    log: Path

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM (graceful shutdown), SIGKILL after timeout; returns the
        exit status (negative: killed by that signal)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def start_proxy(env, binary, extra_args=(), side="src", upstream_security="starttls",
                redis_port=None, log_dir=None):
    """Start imapferry-proxy (binary) in front of side's Dovecot on free
    loopback ports, with the harness's server certificate (CN localhost,
    signed by the harness CA) on both listeners; returns a ProxyProcess once
    the plain listener greets. upstream_security: "starttls" (plain port),
    "ssl" (IMAPS port) or "plain". Marks go to the harness Redis unless
    redis_port says otherwise (None = harness Redis, 0 = no Redis).
    extra_args are appended (flags override earlier ones)."""
    tls_dir = env.dir / "tls"
    log_dir = Path(log_dir) if log_dir else env.dir
    if upstream_security == "ssl":
        upstream = ["--upstream", f"{HOST}:{env.port(side, 'imaps')}", "--upstream-ssl"]
    elif upstream_security == "starttls":
        upstream = ["--upstream", f"{HOST}:{env.port(side, 'imap')}", "--upstream-tls"]
    else:
        upstream = ["--upstream", f"{HOST}:{env.port(side, 'imap')}", "--upstream-plain"]
    rport = env.redis_port if redis_port is None else redis_port
    last = None
    for _attempt in range(3):
        port, tls_port, http_port = _free_ports(3)
        log = log_dir / f"proxy-{port}.log"
        cmd = [binary, "--listen", f"{HOST}:{port}", "--listen-tls", f"{HOST}:{tls_port}",
               "--cert", str(tls_dir / "server.pem"), "--key", str(tls_dir / "server.key"),
               *upstream, "--upstream-ca", str(env.ca_file),
               "--http", f"{HOST}:{http_port}", "--log-level", "info"]
        if rport:
            cmd += ["--redis", f"{HOST}:{rport}"]
        cmd += list(extra_args)
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        p = ProxyProcess(proc, port, tls_port, http_port, log)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            _wait_ready(f"imapferry-proxy :{port}",
                        lambda: _probe_greeting(port, b"* OK"),
                        lambda: proc.poll() is None, [log], deadline)
            return p
        except HarnessError as e:
            last = e
            p.stop()
            if "cannot listen" not in p.log_text():
                raise
    raise last


# ---------------------------------------------------------------------------
# Command line


def _cmd_start(args):
    start(args.dir)
    return 0


def _cmd_stop(args):
    return 0 if stop(args.dir, keep=args.keep) else 1


def _cmd_populate(args):
    env = Env.load(args.dir)
    s = populate(env, args.side, args.user, args.scale, args.seed, quiet=False)
    print(f"populated {args.side} {args.user} ({args.scale}, seed {args.seed}): "
          f"{s['folders']} folders, {s['messages']} messages, {s['bytes']} bytes "
          f"in {s['seconds']} s")
    return 0


def _cmd_compare(args):
    env = Env.load(args.dir)
    stats = {}
    diffs = compare(env, args.user1, args.side1, args.user2, args.side2, args.map_sep, stats)
    for d in diffs:
        print(d)
    counts = "; ".join(
        f"{side} {user}: {stats['folders' + n]} folders, {stats['messages' + n]} messages, "
        f"{stats['bytes' + n]} bytes"
        for side, user, n in ((args.side1, args.user1, "1"), (args.side2, args.user2, "2")))
    if diffs:
        print(f"DIFFERENT: {len(diffs)} difference(s) ({counts})")
        return 1
    print(f"IDENTICAL ({counts})")
    return 0


def _cmd_deliver(args):
    env = Env.load(args.dir)
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    deliver(env, args.user, data, args.side)
    print(f"delivered {len(data)} bytes to {args.side} {args.user} INBOX over LMTP")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="start the servers under DIR")
    p.add_argument("dir")
    p.set_defaults(func=_cmd_start)
    p = sub.add_parser("stop", help="stop the servers and remove DIR")
    p.add_argument("dir")
    p.add_argument("--keep", action="store_true", help="keep DIR (logs, mail)")
    p.set_defaults(func=_cmd_stop)
    p = sub.add_parser("populate", help="fill an account with a deterministic corpus")
    p.add_argument("dir")
    p.add_argument("--side", choices=SIDES, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--scale", choices=sorted(SCALES), default="small")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=_cmd_populate)
    p = sub.add_parser("compare", help="compare two accounts; exit 1 if they differ")
    p.add_argument("dir")
    p.add_argument("--user1", required=True)
    p.add_argument("--side1", choices=SIDES, required=True)
    p.add_argument("--user2", required=True)
    p.add_argument("--side2", choices=SIDES, required=True)
    p.add_argument("--map-sep", action=argparse.BooleanOptionalAction, default=True,
                   help="translate side 1's hierarchy separator to side 2's (default)")
    p.set_defaults(func=_cmd_compare)
    p = sub.add_parser("deliver", help="deliver a message over LMTP")
    p.add_argument("dir")
    p.add_argument("--user", required=True)
    p.add_argument("--file", required=True, help='message file, "-" for stdin')
    p.add_argument("--side", choices=SIDES, default="src")
    p.set_defaults(func=_cmd_deliver)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except (HarnessError, imaplib.IMAP4.error, smtplib.SMTPException, OSError) as e:
        print(f"ferry_harness {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
