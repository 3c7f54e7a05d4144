#!/usr/bin/env bash
# Fails when a GitHub workflow uses an action by tag or branch instead of a
# full commit SHA (with the tag in a comment, for readers and Dependabot),
# or when a Dockerfile's builder image is not pinned by digest. A tag can be
# moved to other code; a workflow with id-token: write and packages: write
# must run only the code it was reviewed with.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
while IFS= read -r line; do
  file=${line%%:*}; rest=${line#*:}; num=${rest%%:*}; text=${rest#*:}
  ref=$(sed -E 's/.*uses:[[:space:]]*["'\'']?([^"'\''[:space:]]+).*/\1/' <<<"$text")
  case "$ref" in
    ./*|docker://*) continue ;;  # local actions and images by digest are checked elsewhere
  esac
  if ! [[ "$ref" =~ ^[A-Za-z0-9_.-]+/[A-Za-z0-9_./-]+@[0-9a-f]{40}$ ]] || ! [[ "$text" =~ \#[[:space:]]*v[0-9] ]]; then
    echo "$file:$num: pin by full commit SHA with the tag in a comment (uses: owner/action@<40-hex sha> # vX.Y.Z): $ref"
    bad=1
  fi
done < <(grep -nE '^[[:space:]]*(-[[:space:]]*)?uses:' .github/workflows/*.y*ml | sed -E 's/^([^:]+):([0-9]+):/\1:\2:/')
for f in */Dockerfile; do
  if grep -E '^FROM ' "$f" | grep -v '^FROM scratch' | grep -qvE '@sha256:[0-9a-f]{64}'; then
    echo "$f: pin every base image but scratch by digest (image:tag@sha256:<digest>)"
    bad=1
  fi
done
if [ "$bad" -ne 0 ]; then exit 1; fi
echo "every workflow action is pinned by commit SHA and every builder image by digest"
