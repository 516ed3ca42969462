#!/usr/bin/env bash
# Installs the Debian 12 packages imapferry needs to build, test and run its
# demo (sourced by scripts/test.sh and scripts/demo.sh, or run alone).
# As root it runs apt-get; otherwise it prints the command to run.
set -euo pipefail

FERRY_PKGS=(
  build-essential cmake pkg-config            # toolchain
  libevent-dev libssl-dev libpcre2-dev libhiredis-dev   # libraries
  libcmocka-dev                               # unit tests
  libinih-dev                                 # imapferry-proxy's config file
  zlib1g-dev                                  # COMPRESS=DEFLATE (imapferry-sync --compress1/2)
  dovecot-imapd dovecot-lmtpd redis-server openssl python3 isync   # test servers and clients
  python3-cryptography                        # the harness's OAuth2 token server (JWT check)
  clang clang-format cppcheck                 # fuzzing, style and static checks
  docker-compose                              # validates docker-compose.yml (no engine needed)
  chromium                                    # headless browser for the status page test
)

ferry_missing_pkgs() {
  local p missing=()
  for p in "${FERRY_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  echo "${missing[@]:-}"
}

ferry_install_deps() {
  local missing
  missing=$(ferry_missing_pkgs)
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "imapferry: missing Debian packages: $missing" >&2
    echo "imapferry: run as root, or first: sudo apt-get install -y $missing" >&2
    return 1
  fi
  echo "imapferry: installing: $missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  ferry_install_deps
fi
