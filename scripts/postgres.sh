#!/usr/bin/env bash
# Start/stop a PRIVATE PostgreSQL server (logical decoding enabled) for
# development and tests.
#
#   scripts/postgres.sh start DIR [PORT]   start (initialising DIR/data if needed)
#   scripts/postgres.sh stop DIR           pg_ctl stop -m fast (then SIGKILL); idempotent
#   scripts/postgres.sh kill DIR           SIGKILL the postmaster and its children (crash tests)
#   scripts/postgres.sh status DIR         exit 0 if the server in DIR is running
#
# `start` prints only shell export lines on stdout, so callers do
#   eval "$(scripts/postgres.sh start "$dir")"
# and get RELAYTEST_POSTGRES_DSN and RELAYTEST_POSTGRES_DIR. Diagnostics go to
# stderr. Without PORT, the port remembered in DIR/port is reused, otherwise a
# free one is picked. $POSTGRES_EXTRA_CONF holds extra postgresql.conf lines
# (e.g. "wal_level=replica"); they win over the defaults set here.
# $POSTGRES_START_TIMEOUT (seconds, default 30) bounds the wait for readiness.
#
# POSTGRES_TLS=1 makes a server that requires TLS over TCP: ssl=on with a
# private CA and certificates in DIR/tls (scripts/lib/tls.sh), pg_hba
# `hostssl` lines only, with scram-sha-256 passwords (the postgres role gets
# the password relaytest-tls). `start` then prints RELAYTEST_POSTGRES_TLS_DSN
# (sslmode=verify-full against the CA), _CA, _CLIENT_CERT, _CLIENT_KEY and
# _DIR instead, so such a server never stands in for the plaintext one. A
# DIR made with it keeps TLS on later starts.
#
# PostgreSQL refuses to run as root: as root, initdb/pg_ctl run as the
# `postgres` OS user, DIR is chowned to it and every parent of DIR gets o+x.
# Never touches the system cluster (5432, /var/lib/postgresql).
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin:/usr/bin:/bin"

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/tls.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tls.sh"

# The postgres role's password on a TLS server (a private test server).
TLS_PASSWORD=relaytest-tls

# ---------------------------------------------------------------- processes

# instance_pids DATA: every live postgres process working in DATA (the
# postmaster and its children all chdir to the data directory).
instance_pids() {
	local data=$1 p comm
	for p in /proc/[0-9]*; do
		comm=""
		{ read -r comm <"$p/comm"; } 2>/dev/null || continue
		[[ $comm == postgres || $comm == postmaster ]] || continue
		[[ $(readlink "$p/cwd" 2>/dev/null) == "$data" ]] || continue
		alive "${p#/proc/}" && echo "${p#/proc/}"
	done
	return 0
}

# postmaster_pid DIR: print the pid of the postmaster running on DIR/data.
postmaster_pid() {
	local data=$1/data pid=""
	[[ -f $data/postmaster.pid ]] || return 1
	{ read -r pid <"$data/postmaster.pid"; } 2>/dev/null || return 1
	alive "$pid" || return 1
	[[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$data" ]] || return 1
	echo "$pid"
}

# ---------------------------------------------------------------- install/init

PGBIN=""
find_pgbin() {
	local d
	d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
	[[ -n $d && -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] || return 1
	PGBIN=$d
}

ensure_installed() {
	find_pgbin && return 0
	log "PostgreSQL server binaries not found: installing postgresql"
	local sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null 2>&1 || die "postgresql is not installed and not running as root"
		sudo=(sudo -n)
	fi
	local t0
	t0=$(now_us)
	(
		command -v flock >/dev/null 2>&1 && flock -w 900 9
		find_pgbin && exit 0
		"${sudo[@]}" apt-get update -qq >&2 &&
			"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				-o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0 postgresql >&2
	) 9>>"${TMPDIR:-/tmp}/outboxrelay-apt.lock" || die "apt-get install postgresql failed"
	find_pgbin || die "PostgreSQL binaries still missing after installing postgresql"
	log "installed postgresql in $(elapsed "$t0")"
}

AS_ROOT=0
((EUID == 0)) && AS_ROOT=1

# as_pg DIR CMD...: run CMD in DIR as the postgres OS user when we are root.
as_pg() {
	local dir=$1
	shift
	if ((AS_ROOT)); then
		(cd "$dir" && runuser -u postgres -- "$@")
	else
		(cd "$dir" && "$@")
	fi
}

# prepare_dir DIR: as root, let the postgres user own DIR and reach it.
prepare_dir() {
	local dir=$1 a mode
	((AS_ROOT)) || return 0
	id -u postgres >/dev/null 2>&1 || die "OS user 'postgres' does not exist"
	chown postgres: "$dir"
	a=$(dirname "$dir")
	while [[ $a != / ]]; do
		mode=$(stat -Lc %A "$a")
		if [[ ${mode:9:1} != [xt] ]]; then
			log "chmod o+x $a (so the postgres user can reach $dir)"
			chmod o+x "$a"
		fi
		a=$(dirname "$a")
	done
}

init_datadir() {
	local dir=$1 data=$1/data version locale key cache t0
	version=$("$PGBIN/postgres" --version)
	locale=C
	if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then locale=C.UTF-8; fi
	key=$(printf '%s|%s|%s' "$version" "$locale" "$EUID" | cksum | cut -d' ' -f1)
	cache="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/outboxrelay/postgres-datadir-$key"
	t0=$(now_us)
	rm -rf "$data.tmp"
	if [[ -f $cache/PG_VERSION ]]; then
		cp -a "$cache" "$data.tmp"
		((AS_ROOT)) && chown -R postgres: "$data.tmp"
		chmod 700 "$data.tmp"
		mv "$data.tmp" "$data"
		log "copied pristine datadir from $cache in $(elapsed "$t0")"
		return 0
	fi
	if ! as_pg "$dir" "$PGBIN/initdb" -D "$data.tmp" --auth=trust --no-sync -E UTF8 \
		-U postgres --locale="$locale" --no-instructions >"$dir/initdb.log" 2>&1; then
		tail -n 30 "$dir/initdb.log" >&2
		die "initdb failed (log: $dir/initdb.log)"
	fi
	mv "$data.tmp" "$data"
	log "initialised datadir with initdb in $(elapsed "$t0")"
	# Cache a pristine copy; another process may race us: rename is atomic.
	if mkdir -p "$(dirname "$cache")" 2>/dev/null; then
		local tmp="$cache.tmp.$$"
		if cp -a "$data" "$tmp" 2>/dev/null && mv -T "$tmp" "$cache" 2>/dev/null; then
			log "cached pristine datadir in $cache"
		fi
		rm -rf "$tmp"
	fi
}

# socket_dir DIR: DIR unless the socket path would be too long for a unix
# socket (107 bytes); then a short private dir under /tmp, remembered in
# DIR/socketdir.
socket_dir() {
	local dir=$1 s
	if ((${#dir} + 20 <= 100)); then
		echo "$dir"
		return 0
	fi
	s=$(cat "$dir/socketdir" 2>/dev/null || true)
	if [[ -z $s || ! -d $s ]]; then
		s=$(mktemp -d "${TMPDIR:-/tmp}/orp-XXXXXX")
		chmod 755 "$s"
		((AS_ROOT)) && chown postgres: "$s"
		echo "$s" >"$dir/socketdir"
	fi
	echo "$s"
}

write_config() { # DIR PORT SOCKDIR
	local data=$1/data
	{
		echo "# Written by scripts/postgres.sh on every start: edits are lost."
		echo "listen_addresses = '127.0.0.1'"
		echo "port = $2"
		echo "unix_socket_directories = '$3'"
		echo "wal_level = logical"
		echo "max_replication_slots = 20"
		echo "max_wal_senders = 20"
		echo "max_prepared_transactions = 20"
		echo "wal_keep_size = 0"
		echo "fsync = off"
		if tls_on "$1"; then
			echo "ssl = on"
			echo "ssl_ca_file = '$1/tls/ca.pem'"
			echo "ssl_cert_file = '$1/tls/server.pem'"
			echo "ssl_key_file = '$1/tls/server.key'"
		fi
		if [[ -n ${POSTGRES_EXTRA_CONF:-} ]]; then
			echo "# from \$POSTGRES_EXTRA_CONF"
			printf '%s\n' "$POSTGRES_EXTRA_CONF"
		fi
	} >"$data/outboxrelay.conf"
	if ! grep -qx "include_if_exists = 'outboxrelay.conf'" "$data/postgresql.conf"; then
		printf '\n# outboxrelay test settings (scripts/postgres.sh)\n%s\n' \
			"include_if_exists = 'outboxrelay.conf'" >>"$data/postgresql.conf"
	fi
	if tls_on "$1"; then
		# No plain `host` line: a connection without TLS finds no entry.
		cat >"$data/pg_hba.conf" <<'EOF'
# Written by scripts/postgres.sh: private test server requiring TLS over TCP.
# TYPE  DATABASE        USER    ADDRESS         METHOD
local   all             all                     trust
hostssl all             all     127.0.0.1/32    scram-sha-256
hostssl all             all     ::1/128         scram-sha-256
local   replication     all                     trust
hostssl replication     all     127.0.0.1/32    scram-sha-256
hostssl replication     all     ::1/128         scram-sha-256
EOF
	else
		cat >"$data/pg_hba.conf" <<'EOF'
# Written by scripts/postgres.sh: private test server, trust everything local.
# TYPE  DATABASE        USER    ADDRESS         METHOD
local   all             all                     trust
host    all             all     127.0.0.1/32    trust
host    all             all     ::1/128         trust
local   replication     all                     trust
host    replication     all     127.0.0.1/32    trust
host    replication     all     ::1/128         trust
EOF
	fi
	((AS_ROOT)) && chown postgres: "$data/outboxrelay.conf" "$data/pg_hba.conf" "$data/postgresql.conf"
	return 0
}

# ---------------------------------------------------------------- commands

print_exports() { # DIR PORT
	if tls_on "$1"; then
		# Quoted: the URL holds '&'.
		printf "export RELAYTEST_POSTGRES_TLS_DSN='postgres://postgres:%s@127.0.0.1:%s/postgres?sslmode=verify-full&sslrootcert=%s'\n" \
			"$TLS_PASSWORD" "$2" "$1/tls/ca.pem"
		printf 'export RELAYTEST_POSTGRES_TLS_CA=%q\n' "$1/tls/ca.pem"
		printf 'export RELAYTEST_POSTGRES_TLS_CLIENT_CERT=%q\n' "$1/tls/client.pem"
		printf 'export RELAYTEST_POSTGRES_TLS_CLIENT_KEY=%q\n' "$1/tls/client.key"
		printf 'export RELAYTEST_POSTGRES_TLS_DIR=%q\n' "$1"
		return 0
	fi
	# Unquoted on purpose (exact format callers may parse): bash and dash do
	# not glob the value of an assignment argument to export.
	printf 'export RELAYTEST_POSTGRES_DSN=postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable\n' "$2"
	printf 'export RELAYTEST_POSTGRES_DIR=%q\n' "$1"
}

# tls_on DIR: the server in DIR requires TLS.
tls_on() { [[ -s $1/tls/ca.pem ]]; }

# setup_tls DIR: with POSTGRES_TLS=1, make the certificates, readable by
# the server only.
setup_tls() {
	local dir=$1
	[[ ${POSTGRES_TLS:-} == 1 ]] || return 0
	make_certs "$dir/tls"
	if ((AS_ROOT)); then chown -R postgres: "$dir/tls"; fi
	return 0
}

# set_tls_password DIR: give the postgres role its password (over the
# unix socket, which pg_hba trusts).
set_tls_password() {
	local dir=$1 sock
	tls_on "$dir" || return 0
	sock=$(socket_dir "$dir")
	as_pg "$dir" "$PGBIN/psql" -X -q -h "$sock" -p "$(cat "$dir/port")" -U postgres -d postgres \
		-c "ALTER ROLE postgres PASSWORD '$TLS_PASSWORD'" >/dev/null || die "could not set the postgres role's password"
}

is_ready() { # PORT
	"$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -t 2 >/dev/null 2>&1
}

# kill_instance DIR: SIGKILL the postmaster and every process of the instance.
kill_instance() {
	local data=$1/data pids
	mapfile -t pids < <(
		postmaster_pid "$1" || true
		instance_pids "$data"
	)
	((${#pids[@]})) || return 0
	kill -KILL "${pids[@]}" 2>/dev/null || true
	wait_gone 10 "${pids[@]}" || die "postgres processes survived SIGKILL: ${pids[*]}"
}

cmd_start() {
	local dir=${1:?usage: postgres.sh start DIR [PORT]} port=${2:-} auto=0 pid
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd -P)
	ensure_installed
	prepare_dir "$dir"
	setup_tls "$dir"

	if pid=$(postmaster_pid "$dir"); then
		local cur
		cur=$(cat "$dir/port" 2>/dev/null || true)
		[[ -z $port || $port == "$cur" ]] || die "server already running in $dir on port $cur (asked for $port)"
		is_ready "$cur" || die "postmaster pid $pid in $dir is running but not ready on port $cur"
		log "already running in $dir (pid $pid, port $cur)"
		print_exports "$dir" "$cur"
		return 0
	fi

	if [[ -z $port && -s $dir/port ]]; then
		port=$(tr -dc '0-9' <"$dir/port")
	fi
	[[ -n $port ]] || auto=1
	[[ -f $dir/data/PG_VERSION ]] || init_datadir "$dir"

	# Leftovers of a killed postmaster: orphaned children still attached to
	# the old shared memory make the new postmaster refuse to start.
	local left
	left=$(instance_pids "$dir/data")
	if [[ -n $left ]]; then
		# shellcheck disable=SC2086
		if ! wait_gone 5 $left; then
			log "killing leftover postgres processes: $(echo $left)"
			# shellcheck disable=SC2086
			kill -KILL $left 2>/dev/null || true
			# shellcheck disable=SC2086
			wait_gone 10 $left || die "leftover postgres processes survived SIGKILL"
		fi
	fi
	local sock attempt t0 timeout=${POSTGRES_START_TIMEOUT:-30} logf=$dir/postgres.log
	sock=$(socket_dir "$dir")
	# No live process of this instance is left, so its lock files are stale.
	# Postgres would refuse them itself if the pid in them is a zombie (kill
	# -0 succeeds on zombies, and PID 1 here reaps orphans only lazily) or
	# has been reused.
	rm -f "$dir/data/postmaster.pid" "$sock"/.s.PGSQL.* "$dir"/.s.PGSQL.*
	for attempt in 1 2 3 4 5; do
		if ((auto)); then
			port=$(pick_port) || die "could not find a free port"
		elif port_listening "$port"; then
			die "port $port is already in use by another listener"
		fi
		write_config "$dir" "$port" "$sock"
		local logoff=0
		[[ -f $logf ]] && logoff=$(stat -c %s "$logf")
		t0=$(now_us)
		if as_pg "$dir" "$PGBIN/pg_ctl" start -D "$dir/data" -l "$logf" -w -t "$timeout" -s >&2 &&
			is_ready "$port"; then
			echo "$port" >"$dir/port"
			set_tls_password "$dir"
			pid=$(postmaster_pid "$dir" || echo '?')
			log "started postgres (pid $pid) on 127.0.0.1:$port in $(elapsed "$t0"), dir $dir"
			print_exports "$dir" "$port"
			return 0
		fi
		local newlog=""
		[[ -f $logf ]] && newlog=$(tail -c +"$((logoff + 1))" "$logf")
		if [[ -n $(instance_pids "$dir/data") ]]; then
			log "postgres did not become ready on port $port within ${timeout}s: killing it"
			kill_instance "$dir"
		elif ((auto)) && grep -q 'Address already in use' <<<"$newlog"; then
			log "port $port was taken meanwhile; retrying with another port"
			continue
		else
			log "postgres exited during startup"
		fi
		{
			echo "---- tail of $logf ----"
			tail -n 40 <<<"$newlog"
		} >&2
		die "failed to start postgres in $dir"
	done
	die "failed to start postgres in $dir: no free port after several attempts"
}

cmd_stop() {
	local dir=${1:?usage: postgres.sh stop DIR} pid
	[[ -d $dir ]] || return 0
	dir=$(cd "$dir" && pwd -P)
	if ! pid=$(postmaster_pid "$dir"); then
		[[ -z $(instance_pids "$dir/data") ]] || kill_instance "$dir"
		log "not running in $dir"
		return 0
	fi
	find_pgbin || die "PostgreSQL binaries not found"
	local t0 timeout=${POSTGRES_STOP_TIMEOUT:-30}
	t0=$(now_us)
	if ! as_pg "$dir" "$PGBIN/pg_ctl" stop -D "$dir/data" -m fast -w -t "$timeout" -s >&2; then
		log "pg_ctl stop failed or timed out: SIGKILL"
	fi
	kill_instance "$dir"
	# A short socket dir made because DIR is too long is made again on start.
	if [[ -s $dir/socketdir ]]; then
		local s
		s=$(cat "$dir/socketdir")
		[[ $s == "${TMPDIR:-/tmp}"/orp-* ]] && rm -rf "$s"
		rm -f "$dir/socketdir"
	fi
	log "stopped postgres (pid $pid) in $(elapsed "$t0")"
}

cmd_kill() {
	local dir=${1:?usage: postgres.sh kill DIR} pid
	[[ -d $dir ]] || return 0
	dir=$(cd "$dir" && pwd -P)
	pid=$(postmaster_pid "$dir") || pid='?'
	kill_instance "$dir"
	log "killed postgres (postmaster pid $pid) and its children"
}

cmd_status() {
	local dir=${1:?usage: postgres.sh status DIR} pid
	[[ -d $dir ]] || return 1
	dir=$(cd "$dir" && pwd -P)
	pid=$(postmaster_pid "$dir") || { log "not running in $dir"; return 1; }
	log "running in $dir (pid $pid, port $(cat "$dir/port" 2>/dev/null || echo '?'))"
}

case "${1:-}" in
start | stop | kill | status)
	cmd=$1
	shift
	"cmd_$cmd" "$@"
	;;
*)
	echo "usage: $0 {start DIR [PORT]|stop DIR|kill DIR|status DIR}" >&2
	exit 2
	;;
esac
