#!/usr/bin/env bash
# imapferry's main command on its embedded default (README "Quick start"):
# installs what is missing, builds, starts a local source and destination
# Dovecot and a Redis on free loopback ports, fills the source account
# alice with a realistic corpus, and prints how to connect. Ctrl-C stops
# everything and removes the temporary directory.
#
# Today it shows the servers and the shared IMAP library at work; the proxy
# and the live replication join the demo as they are built (issues 5-6).
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

cat <<TXT

The source (alice / alice-pw) is filled; the destination is empty.
  source:      imap 127.0.0.1:$FERRY_SRC_IMAP_PORT (STARTTLS)   imaps 127.0.0.1:$FERRY_SRC_IMAPS_PORT
  destination: imap 127.0.0.1:$FERRY_DST_IMAP_PORT (STARTTLS)   imaps 127.0.0.1:$FERRY_DST_IMAPS_PORT
  redis:       127.0.0.1:$FERRY_REDIS_PORT
  CA file:     $FERRY_CA_FILE      master user: $FERRY_MASTER_USER / $FERRY_MASTER_PASS

Try:
  openssl s_client -quiet -CAfile $FERRY_CA_FILE -connect 127.0.0.1:$FERRY_SRC_IMAPS_PORT
    a LOGIN alice alice-pw
    b LIST "" "*"
  python3 $harness compare $dir --user1 alice --side1 src --user2 alice --side2 dst
    (lists every message the destination still lacks)

Press Ctrl-C to stop the servers.
TXT
while :; do sleep 3600; done
