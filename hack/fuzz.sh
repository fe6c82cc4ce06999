#!/usr/bin/env bash
# Run every `Fuzz*` target in the module for a bounded time each (argument: duration, default 20s).
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-20s}
found=0
while IFS= read -r file; do
	pkg=./$(dirname "$file")
	for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/'); do
		found=$((found + 1))
		echo "--- fuzz $pkg $target ($fuzztime)"
		go test -run='^$' -fuzz="^${target}\$" -fuzztime="$fuzztime" "$pkg"
	done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | sort)
[ "$found" -gt 0 ] || { echo "no fuzz targets found" >&2; exit 1; }
echo "fuzzed $found targets for $fuzztime each"
