#!/usr/bin/env bash
# imapferry's main command on its embedded default (README "Quick start"):
# installs what is missing, builds, starts a local source and destination
# Dovecot and a Redis on free loopback ports and fills the source account
# alice with a realistic corpus. Ctrl-C stops everything and removes the
# temporary directory.
#
# Then it copies alice to the destination with imapferry-sync (the imapsync
# drop-in), compares the two accounts byte for byte and runs the sync again
# (nothing to do). Then live replication: imapferry-proxy in front of the
# source, imapferry-sync --daemon consuming its marks; a message appended
# through the proxy shows up on the destination, and everything keeps
# running for you to try with a real mail client.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
ferry_install_deps

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
dir=$(mktemp -d /tmp/imapferry-demo.XXXXXX)
harness=tests/harness/ferry_harness.py
cleanup() { python3 "$harness" stop "$dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM

python3 "$harness" start "$dir"
python3 "$harness" populate "$dir" --side src --user alice --scale small
# shellcheck disable=SC1091
. "$dir/env"

sync=(build/sync/imapferry-sync
      --host1 127.0.0.1 --port1 "$FERRY_SRC_IMAP_PORT" --user1 alice --password1 alice-pw
      --host2 127.0.0.1 --port2 "$FERRY_DST_IMAP_PORT" --user2 alice --password2 alice-pw
      --sslargs1 SSL_ca_file="$FERRY_CA_FILE" --sslargs2 SSL_ca_file="$FERRY_CA_FILE"
      --syncduplicates --logdir "$dir/LOG_imapsync" --tmpdir "$dir" --pidfile "$dir/sync.pid")

echo
echo "==== imapferry-sync: copy alice from the source to the destination (first run)"
"${sync[@]}" | grep -E '^(Host[12]: success|Folder |\+\+\+\+ Statistics|Messages transferred|Transfer time|The sync|Exiting)' || true
echo
echo "==== the two accounts compared byte for byte (flags, INTERNALDATE, folders, subscriptions)"
python3 "$harness" compare "$dir" --user1 alice --side1 src --user2 alice --side2 dst | tail -n 1
echo
echo "==== a second run: nothing changed, so no folder is even opened"
"${sync[@]}" | grep -E '^(Messages transferred|Transfer time|The sync|Exiting)' || true

echo
echo "==== live replication: imapferry-proxy in front of the source, imapferry-sync --daemon behind it"
proxy_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
http_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
build/proxy/imapferry-proxy --listen 127.0.0.1:"$proxy_port" \
  --cert "$dir/tls/server.pem" --key "$dir/tls/server.key" \
  --upstream 127.0.0.1:"$FERRY_SRC_IMAP_PORT" --upstream-tls --upstream-ca "$FERRY_CA_FILE" \
  --redis 127.0.0.1:"$FERRY_REDIS_PORT" --log-file "$dir/proxy.log" &
echo alice > "$dir/users"
build/sync/imapferry-sync --daemon --redis 127.0.0.1:"$FERRY_REDIS_PORT" --users "$dir/users" \
  --poll 30 --http 127.0.0.1:"$http_port" --tmpdir "$dir" \
  --host1 127.0.0.1 --port1 "$FERRY_SRC_IMAP_PORT" --authuser1 "$FERRY_MASTER_USER" \
  --password1 "$FERRY_MASTER_PASS" --sslargs1 SSL_ca_file="$FERRY_CA_FILE" \
  --host2 127.0.0.1 --port2 "$FERRY_DST_IMAP_PORT" --authuser2 "$FERRY_MASTER_USER" \
  --password2 "$FERRY_MASTER_PASS" --sslargs2 SSL_ca_file="$FERRY_CA_FILE" \
  >"$dir/daemon.log" 2>&1 &
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  python3 "$harness" stop "$dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM
sleep 2
FERRY_PROXY_PORT=$proxy_port FERRY_CA_FILE=$FERRY_CA_FILE FERRY_DST_IMAP_PORT=$FERRY_DST_IMAP_PORT \
python3 - <<'PY'
import imaplib, os, ssl, time
ctx = ssl.create_default_context(cafile=os.environ["FERRY_CA_FILE"])
msg = (b"From: demo@example.org\r\nTo: alice@example.org\r\nSubject: sent through the proxy\r\n"
       b"Message-Id: <demo-%d@example.org>\r\n\r\nHello from the demo.\r\n" % int(time.time()))
p = imaplib.IMAP4("127.0.0.1", int(os.environ["FERRY_PROXY_PORT"]))
p.starttls(ssl_context=ctx)
p.login("alice", "alice-pw")
p.append("INBOX", None, None, msg)
t0 = time.monotonic()
p.logout()
print("appended one message to alice's INBOX through the proxy")
mid = msg.split(b"Message-Id: ")[1].split(b"\r\n")[0].decode()
while time.monotonic() - t0 < 30:
    d = imaplib.IMAP4("127.0.0.1", int(os.environ["FERRY_DST_IMAP_PORT"]))
    d.starttls(ssl_context=ctx)
    d.login("alice", "alice-pw")
    d.select("INBOX", readonly=True)
    found = d.search(None, "HEADER", "Message-Id", mid)[1][0].split()
    d.logout()
    if found:
        print(f"... and it is on the destination {time.monotonic() - t0:.2f} s later")
        break
    time.sleep(0.1)
else:
    print("not replicated within 30 s: see the daemon log")
PY

cat <<TXT

Everything keeps running (alice / alice-pw everywhere):
  the proxy:   imap 127.0.0.1:$proxy_port (STARTTLS, CA file below): point a mail client here;
               every change it makes is replicated to the destination within a second
  source:      imap 127.0.0.1:$FERRY_SRC_IMAP_PORT (STARTTLS)   imaps 127.0.0.1:$FERRY_SRC_IMAPS_PORT   lmtp 127.0.0.1:$FERRY_SRC_LMTP_PORT
  destination: imap 127.0.0.1:$FERRY_DST_IMAP_PORT (STARTTLS)   imaps 127.0.0.1:$FERRY_DST_IMAPS_PORT
  redis:       127.0.0.1:$FERRY_REDIS_PORT      daemon metrics: http://127.0.0.1:$http_port/metrics
  CA file:     $FERRY_CA_FILE      master user: $FERRY_MASTER_USER / $FERRY_MASTER_PASS
  logs:        $dir/proxy.log  $dir/daemon.log

Try it:
  openssl s_client -quiet -starttls imap -CAfile $FERRY_CA_FILE -connect 127.0.0.1:$proxy_port
    a LOGIN alice alice-pw
    b SELECT INBOX
    c STORE 1 +FLAGS (\\Flagged)
  python3 $harness deliver $dir --user alice --file some-message.eml    (LMTP, bypassing the proxy:
                                                                          found by the daemon's poll, 30 s)
  python3 $harness compare $dir --user1 alice --side1 src --user2 alice --side2 dst

Press Ctrl-C to stop everything.
TXT
while :; do sleep 3600; done
