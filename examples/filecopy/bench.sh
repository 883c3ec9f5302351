#!/usr/bin/env bash
# Compares filecopy with cp on a 1 GiB file, in one run of BenchmarkVsCp
# (see filecopy_test.go), and prints the median times and the ratios:
#
#   bash examples/filecopy/bench.sh          # 5 copies each
#   REPS=9 bash examples/filecopy/bench.sh
#
# filecopy_vs_cp_ratio is filecopy's time over cp's, both as they run by
# default (neither syncs); filecopy_sync_vs_cp_fsync_ratio compares
# filecopy -sync with cp followed by an fsync of the copy, at the same
# durability. Needs 3 GiB free in the temporary directory.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PATH:/usr/local/go/bin"
out=$(go test -count=1 -run '^$' -bench '^BenchmarkVsCp$' -benchtime "${REPS:-5}x" .)
if ! grep -q '_ratio: ' <<<"$out"; then
	printf '%s\n' "$out" >&2
	echo "bench.sh: no ratio in the benchmark's output" >&2
	exit 1
fi
grep -E 'medians:' <<<"$out" | sed 's/^ *[a-z_]*\.go:[0-9]*: //'
grep -oE '[a-z_]+_ratio: [0-9.]+' <<<"$out"
