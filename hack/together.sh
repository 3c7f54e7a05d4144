#!/usr/bin/env bash
# together.sh runs commands at the same time, each line of their output
# prefixed with the command's name, and fails when any of them fails:
#
#   hack/together.sh NAME[:NICE]=COMMAND...
#
# e.g. hack/together.sh 'e2e=make test-integration' 'unit:19=make test-unit'
#
# NICE (0 to 19) lowers a command's CPU priority: `make test` runs the unit
# tests at 19 beside the e2e suites, so that they take only the CPU the
# suites leave idle and never delay what the suites time. (nice ranks
# processes within one session's autogroup; these all share the caller's.)
# Every command's exit status is printed when all are done.
set -uo pipefail

[ "$#" -gt 0 ] || { echo "usage: $0 NAME[:NICE]=COMMAND..." >&2; exit 2; }

names=() pids=() status_dir="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$status_dir"' EXIT
trap 'exit 130' INT TERM

width=0
for spec in "$@"; do
  name="${spec%%=*}"; name="${name%%:*}"
  [ "${#name}" -gt "$width" ] && width="${#name}"
done

i=0
for spec in "$@"; do
  head="${spec%%=*}" cmd="${spec#*=}"
  if [ "$head" = "$spec" ] || [ -z "$cmd" ]; then
    echo "together.sh: '$spec' is not NAME[:NICE]=COMMAND" >&2
    exit 2
  fi
  name="${head%%:*}" nice=0
  [ "$name" != "$head" ] && nice="${head#*:}"
  case "$nice" in
    [0-9]|1[0-9]) ;;
    *) echo "together.sh: nice '$nice' of $name is not 0 to 19" >&2; exit 2 ;;
  esac
  prefix="$(printf "%-${width}s | " "$name")"
  (
    nice -n "$nice" bash -c "$cmd" 2>&1 | sed -u "s/^/$prefix/"
    echo "${PIPESTATUS[0]}" >"$status_dir/$i"
  ) &
  names+=("$name") pids+=("$!")
  i=$((i + 1))
done

failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || true
  rc="$(cat "$status_dir/$i" 2>/dev/null || echo 1)"
  echo "together: ${names[$i]} exited $rc"
  [ "$rc" = 0 ] || failed=1
done
exit "$failed"
