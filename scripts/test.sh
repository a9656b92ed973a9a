#!/usr/bin/env bash
# Run the whole test suite: private MariaDB + PostgreSQL servers, gofmt, go vet,
# go test -race. Works as root on a fresh Debian 12 machine (installs the
# database servers and a C compiler for -race with apt-get when missing).
#
#   scripts/test.sh [go test flags...]     e.g. scripts/test.sh -run TestRelay -v
#
# Extra arguments go to `go test` (before ./..., so they override the
# defaults). With CI=true a database server that fails to start is fatal;
# otherwise the script warns and the Go integration tests that need it skip
# (their RELAYTEST_* variables are unset). Step timings go to stderr.
# Exit status: go test's if it failed, else 1 if gofmt or go vet failed, else 0.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)

log() { printf '[test.sh] %s\n' "$*" >&2; }
loud() {
	printf '\n[test.sh] ###############################################################\n' >&2
	printf '[test.sh] ### %s\n' "$@" >&2
	printf '[test.sh] ###############################################################\n\n' >&2
}

now_us() { local t=${EPOCHREALTIME/./}; echo "$((10#$t))"; }
fmt_us() { printf '%d.%03ds' $(($1 / 1000000)) $((($1 % 1000000) / 1000)); }
T_ALL=$(now_us)
TIMINGS=()
T_STEP=0
step() { T_STEP=$(now_us); log "==> $*"; }
step_done() { # NAME STATUS
	local d=$(($(now_us) - T_STEP))
	TIMINGS+=("$(printf '%-14s %9s  %s' "$1" "$(fmt_us "$d")" "$2")")
	log "<== $1: $2 in $(fmt_us "$d")"
}

# ---------------------------------------------------------------- toolchain
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"
if [[ -d ${HOME:-/nonexistent}/go/bin ]]; then PATH="$PATH:$HOME/go/bin"; fi
if ! command -v go >/dev/null 2>&1; then
	loud "go not found (looked in PATH and /usr/local/go/bin): install Go first"
	exit 1
fi
log "$(go version)"

# go test -race needs cgo, hence a C compiler.
if ! command -v gcc >/dev/null 2>&1 && ! command -v cc >/dev/null 2>&1; then
	if ((EUID == 0)) && command -v apt-get >/dev/null 2>&1; then
		step "installing gcc (needed by go test -race)"
		(
			command -v flock >/dev/null 2>&1 && flock -w 900 9
			apt-get update -qq >&2 &&
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
					-o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0 gcc libc6-dev >&2
		) 9>>"${TMPDIR:-/tmp}/outboxrelay-apt.lock" || { loud "apt-get install gcc failed"; exit 1; }
		step_done "install gcc" ok
	else
		loud "no C compiler found: go test -race needs gcc"
		exit 1
	fi
fi
export CGO_ENABLED=1

# ---------------------------------------------------------------- servers
WORK=$(mktemp -d "${TMPDIR:-/tmp}/outboxrelay-test.XXXXXX")
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	bash "$ROOT/scripts/mariadb.sh" stop "$WORK/mariadb" 2>/dev/null || log "warning: stopping MariaDB failed"
	bash "$ROOT/scripts/postgres.sh" stop "$WORK/postgres" 2>/dev/null || log "warning: stopping PostgreSQL failed"
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "starting private MariaDB and PostgreSQL servers (in $WORK)"
# Both at once: they are independent (apt installs serialise on a lock).
bash "$ROOT/scripts/mariadb.sh" start "$WORK/mariadb" >"$WORK/mariadb.env" 2>"$WORK/mariadb.start.log" &
MY_PID=$!
bash "$ROOT/scripts/postgres.sh" start "$WORK/postgres" >"$WORK/postgres.env" 2>"$WORK/postgres.start.log" &
PG_PID=$!
MY_RC=0 PG_RC=0
wait "$MY_PID" || MY_RC=$?
wait "$PG_PID" || PG_RC=$?
cat "$WORK/mariadb.start.log" "$WORK/postgres.start.log" >&2
SERVERS_OK=1
if ((MY_RC == 0)); then
	# shellcheck disable=SC1091
	source "$WORK/mariadb.env"
else
	SERVERS_OK=0
	unset RELAYTEST_MARIADB_ADDR RELAYTEST_MARIADB_USER RELAYTEST_MARIADB_PASSWORD RELAYTEST_MARIADB_DIR
	if [[ ${CI:-} == true ]]; then
		loud "MariaDB failed to start (exit $MY_RC): see the log above" "CI=true: aborting"
		exit 1
	fi
	loud "WARNING: MariaDB failed to start (exit $MY_RC): MariaDB integration tests will SKIP"
fi
if ((PG_RC == 0)); then
	# shellcheck disable=SC1091
	source "$WORK/postgres.env"
else
	SERVERS_OK=0
	unset RELAYTEST_POSTGRES_DSN RELAYTEST_POSTGRES_DIR
	if [[ ${CI:-} == true ]]; then
		loud "PostgreSQL failed to start (exit $PG_RC): see the log above" "CI=true: aborting"
		exit 1
	fi
	loud "WARNING: PostgreSQL failed to start (exit $PG_RC): PostgreSQL integration tests will SKIP"
fi
step_done "servers" "$( ((SERVERS_OK)) && echo ok || echo 'PARTIAL (see warnings)')"
env | grep '^RELAYTEST_' | sort >&2 || true

# ---------------------------------------------------------------- checks
FAILED=()

step "gofmt -l"
GOFMT_OUT=$(gofmt -l . 2>&1) || GOFMT_OUT+=$'\n(gofmt exited non-zero)'
if [[ -n $GOFMT_OUT ]]; then
	loud "gofmt: these files need formatting (run gofmt -w):"
	printf '%s\n' "$GOFMT_OUT" >&2
	FAILED+=(gofmt)
	step_done gofmt FAILED
else
	step_done gofmt ok
fi

step "go vet ./..."
if go vet ./...; then
	step_done "go vet" ok
else
	FAILED+=("go vet")
	step_done "go vet" FAILED
fi

step "go test -race -count=1 -timeout 20m $* ./..."
TEST_RC=0
go test -race -count=1 -timeout 20m "$@" ./... || TEST_RC=$?
if ((TEST_RC == 0)); then
	step_done "go test" ok
else
	FAILED+=("go test")
	step_done "go test" "FAILED (exit $TEST_RC)"
fi

# ---------------------------------------------------------------- summary
{
	echo
	echo "[test.sh] timings:"
	printf '[test.sh]   %s\n' "${TIMINGS[@]}"
	printf '[test.sh]   %-14s %9s\n' total "$(fmt_us $(($(now_us) - T_ALL)))"
} >&2
if ((${#FAILED[@]})); then
	loud "FAILED: ${FAILED[*]}"
	((TEST_RC != 0)) && exit "$TEST_RC"
	exit 1
fi
log "all checks passed"
exit 0
