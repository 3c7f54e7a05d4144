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

# Tokens whose refresh falls 8 s after the first token: the window below
# (from 2 s to 2 s + IDLE) is idle, and the refresh that follows it shows the
# refresh timer is alive ("0 wake-ups" from a dead timer would look the same).
# Short tokens refresh at half their life, longer ones 60 s before exp.
(( idle <= 170 )) || { echo "IDLE must be at most 170 seconds"; exit 2; }
if (( idle + 8 < 60 )); then life=$(( 2 * (idle + 8) )); else life=$(( idle + 8 + 60 )); fi
"$work/benchissuer" -lifetime "${life}s" > "$work/url" &
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
first=$(cat "$work/tokens/token.jwt")
sleep 2 # let start-up settle

status() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$pid/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
ctx() { echo $(( $(status voluntary_ctxt_switches) + $(status nonvoluntary_ctxt_switches) )); }
c0=$(ctx); t0=$(ticks)
sleep "$idle"
c1=$(ctx); t1=$(ticks)
rss=$(status VmRSS); hwm=$(status VmHWM); threads=$(status Threads)
[ "$(cat "$work/tokens/token.jwt")" = "$first" ] || { echo "the token was refreshed inside the idle window; the window was not idle"; exit 1; }
refreshed=false
for _ in $(seq 300); do
  if [ "$(cat "$work/tokens/token.jwt" 2>/dev/null)" != "$first" ]; then refreshed=true; break; fi
  sleep 0.1
done
$refreshed || { echo "no refresh after the idle window: the refresh timer is dead"; cat "$work/sidecar.log"; exit 1; }
hz=$(getconf CLK_TCK)

printf '%-36s %s\n' "binary size (stripped, static)" "$(awk -v s="$size" 'BEGIN {printf "%.2f MB (%d bytes)", s/1e6, s}') — $static"
printf '%-36s %s\n' "RSS while looping (VmRSS)" "$(awk -v k="$rss" 'BEGIN {printf "%.2f MiB", k/1024}')"
printf '%-36s %s\n' "peak RSS (VmHWM)" "$(awk -v k="$hwm" 'BEGIN {printf "%.2f MiB", k/1024}')"
printf '%-36s %s\n' "threads" "$threads"
printf '%-36s %s\n' "idle window" "${idle}s between refreshes (${life}s tokens; the next refresh was seen after it)"
printf '%-36s %s\n' "context switches in the window" "$((c1 - c0)) ($(awk -v c=$((c1 - c0)) -v s="$idle" 'BEGIN {printf "%.2f/s", c/s}'))"
printf '%-36s %s\n' "CPU time in the window" "$(awk -v t=$((t1 - t0)) -v hz="$hz" 'BEGIN {printf "%.0f ms", t*1000/hz}')"
