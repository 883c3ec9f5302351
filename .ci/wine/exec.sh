#!/usr/bin/env bash
# go test -exec wrapper: runs a Windows test binary under Wine.
#
#   GOOS=windows go test -exec /abs/path/.ci/wine/exec.sh ./...
#
# go test calls it as `exec.sh /path/to/pkg.test.exe [test flags...]` in the
# package's directory. Wine maps / to Z:, so the cwd and any absolute Unix
# paths among the flags (e.g. -test.coverprofile=/tmp/c.out) resolve inside
# the Windows process as Z:\... and \... on the current drive. Child processes
# that the test starts with os/exec are Windows processes started by Wine
# itself and need no wrapper. Wine returns the Windows exit code, so it is
# exec'd directly and its status is this script's status.
#
# Environment: WINEPREFIX (default ${TMPDIR:-/tmp}/instance-wineprefix, which
# .ci/windows-test.sh creates and equips with the bcryptprimitives.dll shim
# that Go >= 1.22 needs on Wine 8), WINE (the wine loader to use; default
# wine64, else wine).
set -euo pipefail

if [ $# -lt 1 ]; then
	echo "usage: $0 program.exe [args...]" >&2
	exit 2
fi

export WINEPREFIX="${WINEPREFIX:-${TMPDIR:-/tmp}/instance-wineprefix}"
export WINEDEBUG="${WINEDEBUG:--all}"
export WINEARCH="${WINEARCH:-win64}"
# No Mono/Gecko install prompts if the prefix gets (re)initialised.
export WINEDLLOVERRIDES="${WINEDLLOVERRIDES:-mscoree,mshtml=}"

wine="${WINE:-}"
if [ -z "$wine" ]; then
	for cand in wine64 /usr/lib/wine/wine64 wine; do
		if command -v "$cand" >/dev/null 2>&1; then
			wine=$cand
			break
		fi
	done
fi
if [ -z "$wine" ]; then
	echo "exec.sh: no wine64 or wine found (run .ci/windows-test.sh, which installs it)" >&2
	exit 127
fi

# The prefix's system processes (services.exe, winedevice.exe, ...) start
# with the first Wine process of a wineserver and inherit its stdio; if that
# is the test binary, they hold go test's stdout pipe open after it exits and
# go test waits a minute, then fails the package ("Test I/O incomplete").
# Start them here with stdio on /dev/null (about 0.8 s cold, 0.15 s warm);
# .ci/windows-test.sh does it once and sets INSTANCE_WINE_READY=1.
if [ "${INSTANCE_WINE_READY:-}" != 1 ]; then
	"$wine" wineboot </dev/null >/dev/null 2>&1 || true
fi

exec "$wine" "$@"
