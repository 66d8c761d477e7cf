#!/usr/bin/env bash
# Native tier: builds the packet-layer tests, the mirror capture's BPF
# program tests (libpcap), the replication-logic tests, the replication
# state machine on crafted segments (processor_test), the active-mode
# (takeover) translation tests (the engine's, and the kernel's against it:
# needs root and the built addon's BPF object) and the fuzz target under
# AddressSanitizer + UBSan into build/native/, runs them, then fuzzes the
# parser for S seconds (libFuzzer when clang++ can link it, otherwise the
# standalone driver built with g++). Exits non-zero on any failure.
#
#   bash test/native/run.sh [--fuzz-seconds S]     (default 20)
#
# Needs g++; clang and libclang-rt-14-dev (from scripts/setup.sh) for libFuzzer.
set -euo pipefail

fuzz_seconds=20
while [ $# -gt 0 ]; do
  case "$1" in
    --fuzz-seconds) fuzz_seconds="$2"; shift 2 ;;
    *) echo "usage: $0 [--fuzz-seconds S]" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$root/build/native"
mkdir -p "$out"
src="$root/test/native"
common=(-std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -I"$root/addon" -Wall -Wextra)
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# Every source compiled once, as many at a time as there are CPUs (with the sanitizers a
# compile takes seconds: the tests share most of theirs), then each test linked from the
# objects it needs.
obj="$out/obj"
mkdir -p "$obj"
tests=(packet_test capture_test replication_test active_mode_test compare_test udp_ledger_test udp_compare_test processor_test
  active_mode_kernel_test)
engine=(packet incoming_capture stream_buffer recovery_active_mode recovery_active_mode_kernel event_queue flow_table incoming_tun
  output_compare udp_ledger udp_compare relay_ports incoming_processor incoming_injection outgoing_processor ip_reassembly)
echo "native: building ${#tests[@]} tests (g++)"
jobs=$(nproc)
running=0
build_failed=0
for f in "${tests[@]/#/$src/}" "${engine[@]/#/$root/addon/}"; do
  g++ "${common[@]}" -c "$f.cc" -o "$obj/$(basename "$f").o" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || build_failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || build_failed=1
  running=$((running - 1))
done
[ "$build_failed" -eq 0 ] || { echo "native: a source did not compile" >&2; exit 1; }
# link NAME OBJECT... [-lLIB...]
link() {
  local name=$1 args=() a
  shift
  for a in "$@"; do case "$a" in -l*) args+=("$a") ;; *) args+=("$obj/$a.o") ;; esac; done
  g++ "${common[@]}" "${args[@]}" -o "$out/$name"
}
# Active mode (the engine's translator, which also drives the kernel's).
active=(recovery_active_mode recovery_active_mode_kernel packet event_queue flow_table stream_buffer incoming_tun)
link packet_test packet_test packet
link capture_test capture_test incoming_capture packet -lpcap
link replication_test replication_test stream_buffer
link active_mode_test active_mode_test "${active[@]}" -lbpf
link compare_test compare_test output_compare
link udp_ledger_test udp_ledger_test udp_ledger output_compare
link udp_compare_test udp_compare_test udp_compare relay_ports output_compare
link processor_test processor_test incoming_processor incoming_injection outgoing_processor output_compare udp_ledger udp_compare relay_ports \
  ip_reassembly "${active[@]}" -lbpf
link active_mode_kernel_test active_mode_kernel_test "${active[@]}" -lbpf

# libFuzzer needs clang++ and its compiler-rt; probe by linking an empty target.
fuzz_mode=standalone
if command -v clang++ >/dev/null 2>&1; then
  probe="$out/.fuzz_probe"
  printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' > "$probe.cc"
  if clang++ -fsanitize=fuzzer "$probe.cc" -o "$probe" >/dev/null 2>&1; then fuzz_mode=libfuzzer; fi
  rm -f "$probe" "$probe.cc"
fi
if [ "$fuzz_mode" = libfuzzer ]; then
  echo "native: building fuzz_packet (clang++ libFuzzer)"
  clang++ "${common[@]}" -fsanitize=fuzzer "$src/fuzz_packet.cc" "$root/addon/packet.cc" "$root/addon/relay_ports.cc" \
    "$root/addon/output_compare.cc" -o "$out/fuzz_packet"
else
  echo "native: building fuzz_packet (g++ standalone driver; install clang libclang-rt-14-dev for libFuzzer)"
  g++ "${common[@]}" -DT2CP_STANDALONE_FUZZ "$src/fuzz_packet.cc" "$root/addon/packet.cc" "$root/addon/relay_ports.cc" \
    "$root/addon/output_compare.cc" -o "$out/fuzz_packet"
fi

status=0
log="$out/packet_test.log"
"$out/packet_test" > "$log" 2>&1 || status=$?
grep -v '^ok ' "$log" || true  # failures and the summary; the full list stays in the log
summary="$(tail -n 1 "$log")"
if [ "$status" -ne 0 ]; then
  echo "native: packet_test failed (exit $status); see $log" >&2
  echo "packet_test: $summary"
  exit 1
fi

# The other tests' failures are reported at the end: the parser is fuzzed anyway.
# run_test NAME [ARGS]: runs build/native/NAME, keeps its exit status and summary line.
declare -A test_status test_summary
later=(capture_test replication_test compare_test udp_ledger_test udp_compare_test processor_test active_mode_test active_mode_kernel_test)
run_test() {
  local name="$1" st=0 tlog="$out/$1.log"
  shift
  "$out/$name" "$@" > "$tlog" 2>&1 || st=$?
  grep -v '^ok ' "$tlog" || true
  test_status[$name]=$st
  test_summary[$name]="$(tail -n 1 "$tlog")"
  [ "$st" -eq 0 ] || echo "native: $name failed (exit $st); see $tlog" >&2
}
run_test capture_test
run_test replication_test
run_test compare_test
run_test udp_ledger_test
run_test udp_compare_test
run_test processor_test
run_test active_mode_test
# The kernel's translator (BPF, run by the kernel) against the engine's.
run_test active_mode_kernel_test "$root/build/Release/recovery_active_mode.bpf.o"
summaries() {
  echo "packet_test: $summary"
  for name in "${later[@]}"; do echo "$name: ${test_summary[$name]}"; done
}

corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
"$out/packet_test" --write-corpus "$corpus"

echo "native: fuzzing the parser for ${fuzz_seconds}s ($fuzz_mode)"
fuzz_status=0
if [ "$fuzz_mode" = libfuzzer ]; then
  # Crash inputs land in build/native/ as crash-*; replay with: fuzz_packet FILE
  "$out/fuzz_packet" -max_total_time="$fuzz_seconds" -rss_limit_mb=1024 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$out/" "$corpus" > "$out/fuzz.log" 2>&1 || fuzz_status=$?
else
  "$out/fuzz_packet" --seconds "$fuzz_seconds" "$corpus" > "$out/fuzz.log" 2>&1 || fuzz_status=$?
fi
if [ "$fuzz_status" -eq 0 ]; then
  grep -E '^(Done [0-9]+ runs|stat::average_exec_per_sec|fuzz_packet standalone:)' "$out/fuzz.log" || true
else
  echo "native: fuzz_packet failed (exit $fuzz_status); see $out/fuzz.log" >&2
  tail -n 40 "$out/fuzz.log" >&2
  summaries
  exit 1
fi

summaries
for name in "${later[@]}"; do [ "${test_status[$name]}" -eq 0 ] || exit 1; done
