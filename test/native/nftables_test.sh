#!/usr/bin/env bash
# Native test of addon/outgoing_nftables.cc: builds it under ASan/UBSan and
# runs it as root in a scratch network namespace (lo up, VIP 198.18.1.10 on
# lo). The namespace is always deleted, whatever happens. Last line of output:
# "N passed, N failed".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

if [ "$(id -u)" -ne 0 ]; then
  echo "nftables_test.sh: needs root (network namespaces, nftables)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

mkdir -p build/native
g++ -std=c++17 -O1 -g -Wall -Wextra -Wno-unused-parameter \
  -fsanitize=address,undefined -fno-omit-frame-pointer \
  -Iaddon addon/nft_batch.cc addon/outgoing_nftables.cc test/native/nftables_test.cc \
  -lmnl -o build/native/nftables_test

NS="t2nf$RANDOM$$"
cleanup() { ip netns del "$NS" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" addr add 198.18.1.10/32 dev lo
ip -n "$NS" addr add 198.18.0.2/32 dev lo   # phones of the relay test
ip -n "$NS" addr add 198.18.0.3/32 dev lo

# A test failure must still reach the trap and the caller's exit code.
rc=0
ip netns exec "$NS" env UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  build/native/nftables_test || rc=$?
exit "$rc"
