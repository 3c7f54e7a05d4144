#!/usr/bin/env bash
# bench-sidecar.sh measures what the sidecar costs per Pod, with public tools:
# the stripped static binary's size, its resident memory while looping
# (/proc/<pid>/status VmRSS and VmHWM), and how often it wakes up while idle
# between refreshes (context switches and CPU ticks from /proc over a window).
# Each figure has its floor beside it, measured in the same run on the same
# issuer: hack/floorsidecar, the least a Go program doing the sidecar's job
# costs (net/http, encoding/json, an atomic write, GOGC=25; no logging,
# metrics, backoff or file watch), built with the same flags.
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
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/floorsidecar" ./hack/floorsidecar
go build -o "$work/benchissuer" ./hack/benchissuer
size=$(stat -c %s "$work/sts-creds-sidecar")
floor_size=$(stat -c %s "$work/floorsidecar")
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
# start NAME BINARY [ARGS]: runs it against the issuer, writing
# $work/NAME/token.jwt; sets its pid in pid_NAME.
start() {
  local name="$1"; shift
  mkdir -p "$work/$name"
  STS_EXCHANGE_URL="$url" STS_SUBJECT_TOKEN_FILE="$work/sa" STS_OUTPUT_FILE="$work/$name/token.jwt" \
    "$@" 2> "$work/$name.log" &
  pids+=($!)
  printf -v "pid_$name" %s $!
  for _ in $(seq 100); do [ -s "$work/$name/token.jwt" ] && break; sleep 0.05; done
  [ -s "$work/$name/token.jwt" ] || { echo "$name: no token written"; cat "$work/$name.log"; exit 1; }
}
start sidecar "$work/sts-creds-sidecar" run
start floor "$work/floorsidecar"
first_sidecar=$(cat "$work/sidecar/token.jwt"); first_floor=$(cat "$work/floor/token.jwt")
sleep 2 # let start-up settle

status() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ctx() { echo $(( $(status "$1" voluntary_ctxt_switches) + $(status "$1" nonvoluntary_ctxt_switches) )); }
c0=$(ctx "$pid_sidecar"); t0=$(ticks "$pid_sidecar"); fc0=$(ctx "$pid_floor"); ft0=$(ticks "$pid_floor")
sleep "$idle"
c1=$(ctx "$pid_sidecar"); t1=$(ticks "$pid_sidecar"); fc1=$(ctx "$pid_floor"); ft1=$(ticks "$pid_floor")
rss=$(status "$pid_sidecar" VmRSS); hwm=$(status "$pid_sidecar" VmHWM); threads=$(status "$pid_sidecar" Threads)
frss=$(status "$pid_floor" VmRSS); fhwm=$(status "$pid_floor" VmHWM); fthreads=$(status "$pid_floor" Threads)
for name in sidecar floor; do
  first="first_$name"
  [ "$(cat "$work/$name/token.jwt")" = "${!first}" ] || { echo "$name: the token was refreshed inside the idle window; the window was not idle"; cat "$work/$name.log"; exit 1; }
done
for name in sidecar floor; do
  first="first_$name"
  refreshed=false
  for _ in $(seq 300); do
    if [ "$(cat "$work/$name/token.jwt" 2>/dev/null)" != "${!first}" ]; then refreshed=true; break; fi
    sleep 0.1
  done
  $refreshed || { echo "$name: no refresh after the idle window: the refresh timer is dead"; cat "$work/$name.log"; exit 1; }
done
hz=$(getconf CLK_TCK)

# row LABEL OURS FLOOR UNIT: ours, the floor and ours/floor.
mib() { awk -v k="$1" 'BEGIN {printf "%.2f MiB", k/1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2fx", a/b; else print "-"}'; }
printf '%-36s %-28s %-28s %s\n' "" "sts-creds-sidecar" "floor (hack/floorsidecar)" "ours / floor"
printf '%-36s %-28s %-28s %s\n' "binary size (stripped, static)" "$(awk -v s="$size" 'BEGIN {printf "%.2f MB", s/1e6}') ($static)" "$(awk -v s="$floor_size" 'BEGIN {printf "%.2f MB", s/1e6}')" "$(ratio "$size" "$floor_size")"
printf '%-36s %-28s %-28s %s\n' "RSS while looping (VmRSS)" "$(mib "$rss")" "$(mib "$frss")" "$(ratio "$rss" "$frss")"
printf '%-36s %-28s %-28s %s\n' "peak RSS (VmHWM)" "$(mib "$hwm")" "$(mib "$fhwm")" "$(ratio "$hwm" "$fhwm")"
printf '%-36s %-28s %-28s\n' "threads" "$threads" "$fthreads"
printf '%-36s %s\n' "idle window" "${idle}s between refreshes (${life}s tokens; both refreshed after it)"
printf '%-36s %-28s %-28s\n' "context switches in the window" "$((c1 - c0)) ($(awk -v c=$((c1 - c0)) -v s="$idle" 'BEGIN {printf "%.2f/s", c/s}'))" "$((fc1 - fc0))"
printf '%-36s %-28s %-28s\n' "CPU time in the window" "$(awk -v t=$((t1 - t0)) -v hz="$hz" 'BEGIN {printf "%.0f ms", t*1000/hz}')" "$(awk -v t=$((ft1 - ft0)) -v hz="$hz" 'BEGIN {printf "%.0f ms", t*1000/hz}')"
