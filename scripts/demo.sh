#!/usr/bin/env bash
# imapferry's main command on its embedded default (README "Quick start"):
# installs what is missing, builds, starts a local source and destination
# Dovecot and a Redis on free loopback ports and fills the source account
# alice with a realistic corpus. Ctrl-C stops everything and removes the
# temporary directory.
#
# Then it copies alice to the destination with imapferry-sync, compares the
# two accounts byte for byte, runs the sync again (nothing to do), and keeps
# the servers running for you to try. The proxy and live replication join
# the demo as they are built (issues 5-6).
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

cat <<TXT

The source and the destination keep running (alice / alice-pw on both):
  source:      imap 127.0.0.1:$FERRY_SRC_IMAP_PORT (STARTTLS)   imaps 127.0.0.1:$FERRY_SRC_IMAPS_PORT   lmtp 127.0.0.1:$FERRY_SRC_LMTP_PORT
  destination: imap 127.0.0.1:$FERRY_DST_IMAP_PORT (STARTTLS)   imaps 127.0.0.1:$FERRY_DST_IMAPS_PORT
  redis:       127.0.0.1:$FERRY_REDIS_PORT
  CA file:     $FERRY_CA_FILE      master user: $FERRY_MASTER_USER / $FERRY_MASTER_PASS

Change something on the source, then sync again and compare:
  openssl s_client -quiet -CAfile $FERRY_CA_FILE -connect 127.0.0.1:$FERRY_SRC_IMAPS_PORT
    a LOGIN alice alice-pw
    b SELECT INBOX
    c STORE 1 +FLAGS (\\Flagged)
  python3 $harness deliver $dir --user alice --file some-message.eml    (LMTP delivery)
  ${sync[*]}
  python3 $harness compare $dir --user1 alice --side1 src --user2 alice --side2 dst

Press Ctrl-C to stop the servers.
TXT
while :; do sleep 3600; done
