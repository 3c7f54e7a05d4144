#!/usr/bin/env bash
# bench-sidecar.sh measures what the sidecar costs per Pod, with public tools:
# the stripped static binary's size, its resident memory while looping
# (/proc/<pid>/status VmRSS and VmHWM), and how often it wakes up while idle
# between refreshes (context switches and CPU ticks from /proc over a window).
#
#   sidecar/hack/bench-sidecar.sh [IDLE_SECONDS]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
idle="${1:-30}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/sts-creds-sidecar" ./cmd/sts-creds-sidecar
go build -o "$work/benchissuer" ./hack/benchissuer
size=$(stat -c %s "$work/sts-creds-sidecar")
static=$(file "$work/sts-creds-sidecar" 2>/dev/null | grep -o 'statically linked' || echo "see ldd")

# 10-minute tokens: a refresh every ~8 minutes, so the window below is idle.
"$work/benchissuer" -lifetime 10m > "$work/url" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.05; done
url=$(head -1 "$work/url")
echo "subject-token" > "$work/sa"
mkdir -p "$work/tokens"
STS_EXCHANGE_URL="$url" STS_SUBJECT_TOKEN_FILE="$work/sa" STS_OUTPUT_FILE="$work/tokens/token.jwt" \
  "$work/sts-creds-sidecar" run 2> "$work/sidecar.log" &
pid=$!
pids+=($pid)
for _ in $(seq 100); do [ -s "$work/tokens/token.jwt" ] && break; sleep 0.05; done
[ -s "$work/tokens/token.jwt" ] || { echo "no token written"; cat "$work/sidecar.log"; exit 1; }
sleep 2 # let start-up settle

status() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$pid/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
ctx() { echo $(( $(status voluntary_ctxt_switches) + $(status nonvoluntary_ctxt_switches) )); }
c0=$(ctx); t0=$(ticks)
sleep "$idle"
c1=$(ctx); t1=$(ticks)
rss=$(status VmRSS); hwm=$(status VmHWM); threads=$(status Threads)
hz=$(getconf CLK_TCK)

printf '%-36s %s\n' "binary size (stripped, static)" "$(awk -v s="$size" 'BEGIN {printf "%.2f MB (%d bytes)", s/1e6, s}') — $static"
printf '%-36s %s\n' "RSS while looping (VmRSS)" "$(awk -v k="$rss" 'BEGIN {printf "%.2f MiB", k/1024}')"
printf '%-36s %s\n' "peak RSS (VmHWM)" "$(awk -v k="$hwm" 'BEGIN {printf "%.2f MiB", k/1024}')"
printf '%-36s %s\n' "threads" "$threads"
printf '%-36s %s\n' "idle window" "${idle}s between refreshes"
printf '%-36s %s\n' "context switches in the window" "$((c1 - c0)) ($(awk -v c=$((c1 - c0)) -v s="$idle" 'BEGIN {printf "%.2f/s", c/s}'))"
printf '%-36s %s\n' "CPU time in the window" "$(awk -v t=$((t1 - t0)) -v hz="$hz" 'BEGIN {printf "%.0f ms", t*1000/hz}')"
