#!/usr/bin/env bash
# Runs the Go tests as Windows binaries under Wine (Debian 12, Wine 8).
#
#   .ci/windows-test.sh [-C DIR] [go test flags and packages...]
#
# With no arguments it tests ./... of this repository, from any directory.
# -C DIR (first argument only, relative to the caller's directory) runs
# go test in DIR's module instead. Everything else goes to go test, after
# -exec and -count=1: e.g. `.ci/windows-test.sh -v -run TestX ./shm`.
#
# Installs what is missing (wine64, the MinGW-w64 compiler), builds the
# bcryptprimitives.dll shim from .ci/wine/processprng.c (Go >= 1.22 needs
# ProcessPrng, which Wine 8 lacks), sets up a private Wine prefix with it,
# runs the tests through .ci/wine/exec.sh (with a standard-library overlay
# for os.RemoveAll, see step 4) and stops the prefix's wineserver at the
# end. The exit status is go test's.
#
# Environment: WINEPREFIX (default ${TMPDIR:-/tmp}/instance-wineprefix; one
# run at a time per prefix, since the run ends by killing its wineserver),
# WINE_BUILD_DIR (default ${TMPDIR:-/tmp}/instance-wine-build),
# WINE_GO_OVERLAY=0 (no os.RemoveAll overlay).
set -euo pipefail

ci_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$ci_dir/.." && pwd)
export PATH="$PATH:/usr/local/go/bin"

workdir=$repo_root
if [ "${1:-}" = "-C" ]; then
	[ $# -ge 2 ] || { echo "windows-test.sh: -C needs a directory" >&2; exit 2; }
	workdir=$(cd "$2" && pwd)
	shift 2
fi
[ $# -gt 0 ] || set -- ./...

tmp=${TMPDIR:-/tmp}
export WINEPREFIX="${WINEPREFIX:-$tmp/instance-wineprefix}"
export WINEDEBUG="${WINEDEBUG:--all}"
export WINEARCH=win64
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=}" # no Mono/Gecko prompts
build_dir=${WINE_BUILD_DIR:-$tmp/instance-wine-build}

log() { printf '== windows-test: %s\n' "$*" >&2; }

find_wine() {
	local c
	for c in ${WINE:-} wine64 /usr/lib/wine/wine64 wine; do
		if command -v "$c" >/dev/null 2>&1 && "$c" --version >/dev/null 2>&1; then
			WINE=$(command -v "$c")
			return 0
		fi
	done
	return 1
}

find_wineserver() {
	local c
	for c in wineserver /usr/lib/wine/wineserver64 /usr/lib/wine/wineserver; do
		if command -v "$c" >/dev/null 2>&1; then
			WINESERVER=$(command -v "$c")
			return 0
		fi
	done
	return 1
}

# 1. Packages.
missing=()
find_wine || missing+=(wine64)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || missing+=(gcc-mingw-w64-x86-64-win32)
if [ ${#missing[@]} -gt 0 ]; then
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
find_wine || { echo "windows-test.sh: no working wine64/wine after install" >&2; exit 1; }
find_wineserver || { echo "windows-test.sh: no wineserver found" >&2; exit 1; }
export WINE WINESERVER
log "$("$WINE" --version) ($WINE), prefix $WINEPREFIX"

# 2. The bcryptprimitives.dll shim.
mkdir -p "$build_dir"
dll=$build_dir/bcryptprimitives.dll
if [ ! -f "$dll" ] || [ "$ci_dir/wine/processprng.c" -nt "$dll" ]; then
	log "building $dll"
	x86_64-w64-mingw32-gcc -shared -O2 -s -o "$dll.tmp" \
		"$ci_dir/wine/processprng.c" -ladvapi32
	mv "$dll.tmp" "$dll"
fi

# 3. The prefix, with the shim in system32.
# shellcheck disable=SC2317 # called by the EXIT trap
stop_wine() { "$WINESERVER" -k >/dev/null 2>&1 || true; }
trap stop_wine EXIT
if [ ! -f "$WINEPREFIX/system.reg" ]; then
	log "initialising the prefix"
	mkdir -p "$WINEPREFIX"
	"$WINE" wineboot --init >/dev/null 2>&1
	"$WINESERVER" -w
fi
sys32=$WINEPREFIX/drive_c/windows/system32
cmp -s "$dll" "$sys32/bcryptprimitives.dll" || cp "$dll" "$sys32/bcryptprimitives.dll"

# 4. Go's os.RemoveAll (so t.TempDir's cleanup) deletes through
# NtSetInformationFile(FileDispositionInformationEx) and falls back to the
# old way only on the statuses Windows gives; Wine 8 answers
# STATUS_NOT_IMPLEMENTED, and every t.TempDir holding a file would fail with
# "unlinkat ...: Invalid function". An -overlay of the standard library's
# file that adds that status to the fallback cases works around it (nothing
# else changes). WINE_GO_OVERLAY=0 turns it off.
overlay=()
if [ "${WINE_GO_OVERLAY:-1}" != 0 ]; then
	at_src=$(go env GOROOT)/src/internal/syscall/windows/at_windows.go
	at_dst=$build_dir/at_windows.go
	if [ -f "$at_src" ] && grep -q '^[[:space:]]*STATUS_NOT_SUPPORTED:' "$at_src"; then
		sed 's|^\([[:space:]]*\)STATUS_NOT_SUPPORTED:|\1STATUS_NOT_SUPPORTED, NTStatus(0xC0000002) /* STATUS_NOT_IMPLEMENTED (Wine) */:|' \
			"$at_src" >"$at_dst"
		printf '{"Replace":{"%s":"%s"}}\n' "$at_src" "$at_dst" >"$build_dir/overlay.json"
		overlay=(-overlay "$build_dir/overlay.json")
	else
		log "warning: $at_src has changed; no RemoveAll overlay (t.TempDir cleanup may fail under Wine)"
	fi
fi

# 5. The tests. One persistent wineserver serves every test binary of the
# run (and their children). wineboot starts the prefix's system processes
# (services.exe, winedevice.exe, ...) now, with stdio on /dev/null: started
# on demand by the first test binary they would inherit its stdout and hold
# go test's pipe open, which go test then waits out (about a minute per
# package, then fails it). The EXIT trap kills the server and anything left
# over.
"$WINESERVER" -k >/dev/null 2>&1 || true # a server left by an interrupted run
"$WINESERVER" -p
"$WINE" wineboot </dev/null >/dev/null 2>&1 || true
export INSTANCE_WINE_READY=1
cd "$workdir"
log "GOOS=windows go test in $workdir: $*"
rc=0
GOOS=windows GOARCH=amd64 CGO_ENABLED=0 \
	go test "${overlay[@]}" -exec "'$ci_dir/wine/exec.sh'" -count=1 "$@" || rc=$?
exit $rc
