#!/usr/bin/env bash
# Benchmark outboxrelay against the raw log rate of each database on this
# machine (issue 7; results and method in docs/performance.md).
#
#   scripts/bench.sh [--quick] [--rows N] [--big-rows N] [--live-rate N] [--live-for DUR]
#                    [--repeat N] [--sources mysql,postgres] [--phases raw,drain,live,noise,big,eos,single]
#                    [--kafka KEY=VALUE,...] [--noise-cleanup]
#                    [--profile DIR] [--out FILE] [--relay BINARY] [--keep]
#
# One command on a fresh Debian 12 machine with Go: builds the relay
# (cmd/outboxrelay), the development broker (cmd/devkafka) and the harness
# (cmd/bench, a development command never linked into the relay), starts private MariaDB and
# PostgreSQL servers (scripts/mariadb.sh, scripts/postgres.sh: they install
# the servers, mysqlbinlog and pg_recvlogical with apt-get when missing), runs
# every phase and prints one markdown table (also written to --out).
#
#   default  500k-row backlogs, 60 s live phase, 1M-row transaction (~10 min on 2 cores)
#   --quick  100k-row backlogs, 20 s live phase, 200k-row transaction (~3 min)
#   phases:  raw (the databases' own readers), drain (the relay over a backlog),
#            live (a fixed rate), noise (90% other tables), big (one large
#            transaction), eos (exactly-once drain against at-least-once on one
#            backlog, and a live phase exactly-once), single (single-row
#            transactions, both modes)
#   --profile DIR  also drains each backlog once more with the relay profiled,
#                  and profiles the live phase's relay (pprof CPU + allocs,
#                  DIR/<source>-<phase>.{cpu,allocs}.pprof); in the eos and
#                  single phases every drain runs profiled (DIR/<name>-<run>.*)
#   --repeat N     runs of each raw reader and relay drain per backlog (default 3;
#                  the table shows medians and the min–max spread)
#   --kafka K=V,.. extra settings for the relay's kafka section (experiments)
#   --relay BINARY measure this outboxrelay build instead of the work tree's
#                  (before/after comparisons; it must log the commit-to-ack
#                  summary of internal/relay/observe.go)
#
# Server settings for the bench (on top of the scripts' test settings): the
# MariaDB writers' commits are not made durable (innodb_flush_log_at_trx_commit=2,
# sync_binlog=0; PostgreSQL already runs with fsync=off), which only speeds
# up writing the backlogs: reading the log is what is measured.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"
if [[ -d ${HOME:-/nonexistent}/go/bin ]]; then PATH="$PATH:$HOME/go/bin"; fi
log() { printf '[bench.sh] %s\n' "$*" >&2; }

ARGS=() KEEP=0 OUT="" PROFILE="" RELAY=""
while (($#)); do
	case $1 in
	--quick) ARGS+=(--rows 100000 --big-rows 200000 --live-for 20s) ;;
	--noise-cleanup) ARGS+=(--noise-cleanup) ;;
	--rows | --big-rows | --live-rate | --live-for | --live-tx | --sources | --phases | --max-tx | --payload | --noise | --seed | --partitions | --kafka | --repeat)
		(($# >= 2)) || { log "$1 needs a value"; exit 2; }
		ARGS+=("$1" "$2")
		shift
		;;
	--profile)
		(($# >= 2)) || { log "$1 needs a value"; exit 2; }
		mkdir -p "$2"
		PROFILE=$(cd "$2" && pwd -P)
		shift
		;;
	--out)
		(($# >= 2)) || { log "$1 needs a value"; exit 2; }
		OUT=$2
		shift
		;;
	--relay)
		(($# >= 2)) || { log "$1 needs a value"; exit 2; }
		[[ -x $2 ]] || { log "$2 is not an executable"; exit 2; }
		RELAY=$(cd "$(dirname "$2")" && pwd -P)/$(basename "$2")
		shift
		;;
	--keep) KEEP=1 ;;
	-h | --help)
		sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		log "unknown argument $1 (see --help)"
		exit 2
		;;
	esac
	shift
done
command -v go >/dev/null 2>&1 || { log "go not found: install Go first"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/outboxrelay-bench.XXXXXX")
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	bash "$ROOT/scripts/mariadb.sh" stop "$WORK/mariadb" >/dev/null 2>&1 || log "warning: stopping MariaDB failed"
	bash "$ROOT/scripts/postgres.sh" stop "$WORK/postgres" >/dev/null 2>&1 || log "warning: stopping PostgreSQL failed"
	if ((KEEP)); then log "kept $WORK (relay and broker logs per phase)"; else rm -rf "$WORK"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "building outboxrelay, devkafka and the bench harness"
mkdir -p "$WORK/bin"
go build -o "$WORK/bin/outboxrelay" ./cmd/outboxrelay
go build -o "$WORK/bin/devkafka" ./cmd/devkafka
go build -o "$WORK/bin/bench" ./cmd/bench
if [[ -n $RELAY ]]; then
	log "measuring $RELAY instead of the work tree's relay"
	cp "$RELAY" "$WORK/bin/outboxrelay"
fi

log "starting private MariaDB and PostgreSQL servers (in $WORK)"
export MARIADB_EXTRA_ARGS="--innodb-flush-log-at-trx-commit=2 --sync-binlog=0 --max-binlog-size=1073741824 ${MARIADB_EXTRA_ARGS:-}"
# Not synchronous_commit=off: walsenders only send WAL that is flushed, so
# commits would wait for the WAL writer (wal_writer_delay, 200 ms) before
# any logical replication client sees them.
export POSTGRES_EXTRA_CONF="max_wal_size = 4GB
${POSTGRES_EXTRA_CONF:-}"
bash scripts/mariadb.sh start "$WORK/mariadb" >"$WORK/mariadb.env" &
MY=$!
bash scripts/postgres.sh start "$WORK/postgres" >"$WORK/postgres.env" &
PG=$!
wait "$MY" || { log "MariaDB failed to start"; exit 1; }
wait "$PG" || { log "PostgreSQL failed to start"; exit 1; }
# shellcheck disable=SC1091
source "$WORK/mariadb.env"
# shellcheck disable=SC1091
source "$WORK/postgres.env"
# The client tools the raw phases use come with the server packages.
command -v mysqlbinlog >/dev/null 2>&1 || command -v mariadb-binlog >/dev/null 2>&1 || log "warning: mysqlbinlog not found"
command -v pg_recvlogical >/dev/null 2>&1 || log "warning: pg_recvlogical not found"

[[ -n $PROFILE ]] && ARGS+=(--profile "$PROFILE")
TABLE="$WORK/table.md"
"$WORK/bin/bench" run --bin "$WORK/bin" --work "$WORK/run" --table "$TABLE" "${ARGS[@]}"
if [[ -n $OUT ]]; then cp "$TABLE" "$OUT"; fi
