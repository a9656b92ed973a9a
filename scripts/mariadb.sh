#!/usr/bin/env bash
# Start/stop a PRIVATE MariaDB server for development and tests.
#
#   scripts/mariadb.sh start DIR [PORT]   start (initialising DIR/data if needed)
#   scripts/mariadb.sh stop DIR           graceful stop (SIGTERM, 30 s, SIGKILL); idempotent
#   scripts/mariadb.sh kill DIR           SIGKILL the server (crash tests)
#   scripts/mariadb.sh status DIR         exit 0 if the server in DIR is running
#
# `start` prints only shell export lines on stdout, so callers do
#   eval "$(scripts/mariadb.sh start "$dir")"
# and get RELAYTEST_MARIADB_ADDR, _USER, _PASSWORD and _DIR. Diagnostics go to
# stderr. Without PORT, the port remembered in DIR/port is reused, otherwise a
# free one is picked. Extra server flags come from $MARIADB_EXTRA_ARGS
# (word-split, e.g. "--binlog-row-image=MINIMAL"). $MARIADB_START_TIMEOUT
# (seconds, default 30) bounds the wait for readiness.
#
# MARIADB_TLS=1 makes a server that requires TLS (require_secure_transport):
# a private CA and certificates are made in DIR/tls (scripts/lib/tls.sh),
# and `start` prints RELAYTEST_MARIADB_TLS_ADDR, _USER, _PASSWORD, _DIR and
# _CA (the CA certificate), _CLIENT_CERT and _CLIENT_KEY instead, so such a
# server never stands in for the plaintext one. A DIR made with it keeps
# TLS on later starts.
#
# Never touches the system server (3306, /var/lib/mysql): everything lives in DIR.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin:/usr/bin:/bin"

log() { printf 'mariadb.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck source=lib/tls.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/tls.sh"

# ---------------------------------------------------------------- processes

# server_pid DIR: print the pid of the mariadbd running on DIR, if any.
server_pid() {
	local dir=$1 pid
	[[ -f $dir/mariadbd.pid ]] || return 1
	pid=$(tr -dc '0-9' <"$dir/mariadbd.pid" 2>/dev/null) || return 1
	alive "$pid" || return 1
	# Guard against pid reuse: it must be a mariadbd using this datadir.
	tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "--datadir=$dir/data" || return 1
	echo "$pid"
}

# ---------------------------------------------------------------- install/init

ensure_installed() {
	command -v mariadbd >/dev/null 2>&1 && command -v mariadb-install-db >/dev/null 2>&1 && return 0
	log "mariadbd not found: installing mariadb-server"
	local sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null 2>&1 || die "mariadb-server is not installed and not running as root"
		sudo=(sudo -n)
	fi
	local t0
	t0=$(now_us)
	(
		command -v flock >/dev/null 2>&1 && flock -w 900 9
		command -v mariadbd >/dev/null 2>&1 && exit 0
		"${sudo[@]}" apt-get update -qq >&2 &&
			"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				-o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0 mariadb-server >&2
	) 9>>"${TMPDIR:-/tmp}/outboxrelay-apt.lock" || die "apt-get install mariadb-server failed"
	command -v mariadbd >/dev/null 2>&1 || die "mariadbd still missing after installing mariadb-server"
	log "installed mariadb-server in $(elapsed "$t0")"
}

init_datadir() {
	local dir=$1 data=$1/data version key cache t0
	version=$(mariadbd --version 2>/dev/null | head -n1)
	key=$(printf '%s|%s' "$version" "$EUID" | cksum | cut -d' ' -f1)
	cache="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/outboxrelay/mariadb-datadir-$key"
	t0=$(now_us)
	if [[ -d $cache/mysql ]]; then
		rm -rf "$data.tmp"
		cp -a "$cache" "$data.tmp" && mv "$data.tmp" "$data"
		log "copied pristine datadir from $cache in $(elapsed "$t0")"
		return 0
	fi
	rm -rf "$data.tmp"
	mkdir -p "$data.tmp"
	local user=()
	((EUID == 0)) && user=(--user=root)
	if ! mariadb-install-db --no-defaults "${user[@]}" --datadir="$data.tmp" \
		--auth-root-authentication-method=normal --skip-test-db \
		--skip-name-resolve >"$dir/install-db.log" 2>&1; then
		tail -n 30 "$dir/install-db.log" >&2
		die "mariadb-install-db failed (log: $dir/install-db.log)"
	fi
	mv "$data.tmp" "$data"
	log "initialised datadir with mariadb-install-db in $(elapsed "$t0")"
	# Cache a pristine copy; another process may race us: rename is atomic.
	if mkdir -p "$(dirname "$cache")" 2>/dev/null; then
		local tmp="$cache.tmp.$$"
		if cp -a "$data" "$tmp" 2>/dev/null && mv -T "$tmp" "$cache" 2>/dev/null; then
			log "cached pristine datadir in $cache"
		fi
		rm -rf "$tmp"
	fi
}

# ---------------------------------------------------------------- commands

print_exports() { # DIR PORT
	if tls_on "$1"; then
		printf 'export RELAYTEST_MARIADB_TLS_ADDR=127.0.0.1:%s\n' "$2"
		printf 'export RELAYTEST_MARIADB_TLS_USER=root\n'
		printf 'export RELAYTEST_MARIADB_TLS_PASSWORD=\n'
		printf 'export RELAYTEST_MARIADB_TLS_DIR=%q\n' "$1"
		printf 'export RELAYTEST_MARIADB_TLS_CA=%q\n' "$1/tls/ca.pem"
		printf 'export RELAYTEST_MARIADB_TLS_CLIENT_CERT=%q\n' "$1/tls/client.pem"
		printf 'export RELAYTEST_MARIADB_TLS_CLIENT_KEY=%q\n' "$1/tls/client.key"
		return 0
	fi
	printf 'export RELAYTEST_MARIADB_ADDR=127.0.0.1:%s\n' "$2"
	printf 'export RELAYTEST_MARIADB_USER=root\n'
	printf 'export RELAYTEST_MARIADB_PASSWORD=\n'
	printf 'export RELAYTEST_MARIADB_DIR=%q\n' "$1"
}

# tls_on DIR: the server in DIR requires TLS.
tls_on() { [[ -s $1/tls/ca.pem ]]; }

# setup_tls DIR: the server flags (TLS_ARGS) and client flags (TLS_CLIENT)
# for TLS, after making the certificates when MARIADB_TLS=1 asks for them.
TLS_ARGS=()
TLS_CLIENT=()
setup_tls() {
	local dir=$1
	[[ ${MARIADB_TLS:-} == 1 ]] && make_certs "$dir/tls"
	tls_on "$dir" || return 0
	TLS_ARGS=(--ssl-ca="$dir/tls/ca.pem" --ssl-cert="$dir/tls/server.pem" --ssl-key="$dir/tls/server.key"
		--require-secure-transport=ON)
	TLS_CLIENT=(--ssl --ssl-ca="$dir/tls/ca.pem")
}

socket_path() { # DIR: DIR/mysql.sock unless that is too long for a unix socket
	local dir=$1 sock=$1/mysql.sock
	if ((${#sock} > 100)); then
		sock="${TMPDIR:-/tmp}/orm-$(printf '%s' "$dir" | cksum | cut -d' ' -f1).sock"
	fi
	echo "$sock"
}

ping_server() { # PORT
	mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P"$1" -uroot "${TLS_CLIENT[@]}" \
		--connect-timeout=2 -N -B -e 'SELECT 1' >/dev/null 2>&1
}

cmd_start() {
	local dir=${1:?usage: mariadb.sh start DIR [PORT]} port=${2:-} auto=0 pid
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd -P)
	ensure_installed
	setup_tls "$dir"

	if pid=$(server_pid "$dir"); then
		local cur
		cur=$(cat "$dir/port" 2>/dev/null || true)
		[[ -z $port || $port == "$cur" ]] || die "server already running in $dir on port $cur (asked for $port)"
		ping_server "$cur" || die "server pid $pid in $dir is running but not answering on port $cur"
		log "already running in $dir (pid $pid, port $cur)"
		print_exports "$dir" "$cur"
		return 0
	fi

	if [[ -z $port && -s $dir/port ]]; then
		port=$(tr -dc '0-9' <"$dir/port")
	fi
	if [[ -z $port ]]; then
		auto=1
	fi
	[[ -d $dir/data ]] || init_datadir "$dir"

	local sock extra=() attempt t0 timeout=${MARIADB_START_TIMEOUT:-30}
	sock=$(socket_path "$dir")
	# shellcheck disable=SC2206 # word splitting of extra flags is intended
	extra=(${MARIADB_EXTRA_ARGS:-})
	local user=()
	((EUID == 0)) && user=(--user=root)

	for attempt in 1 2 3 4 5; do
		if ((auto)); then
			port=$(pick_port) || die "could not find a free port"
		elif port_listening "$port"; then
			die "port $port is already in use by another listener"
		fi
		t0=$(now_us)
		local errlog=$dir/mariadbd.err logoff=0
		[[ -f $errlog ]] && logoff=$(stat -c %s "$errlog")
		rm -f "$sock" "$sock.lock"
		local setsid=()
		command -v setsid >/dev/null 2>&1 && setsid=(setsid)
		# A tmpdir of its own: at start mariadbd deletes every #sql* file
		# in its tmpdir, which with the default (/tmp) would pull the
		# on-disk temporary tables from under every other server's queries.
		mkdir -p "$dir/tmp"
		"${setsid[@]}" mariadbd --no-defaults "${user[@]}" \
			--datadir="$dir/data" \
			--tmpdir="$dir/tmp" \
			--socket="$sock" \
			--port="$port" \
			--bind-address=127.0.0.1 \
			--skip-name-resolve \
			--server-id=1 \
			--log-bin="$dir/data/mysql-bin" \
			--binlog-format=ROW \
			--binlog-row-image=FULL \
			--binlog-row-metadata=FULL \
			--character-set-server=utf8mb4 \
			--collation-server=utf8mb4_unicode_ci \
			--pid-file="$dir/mariadbd.pid" \
			--log-error="$errlog" \
			"${TLS_ARGS[@]}" \
			"${extra[@]}" \
			</dev/null >"$dir/mariadbd.out" 2>&1 &
		pid=$!
		disown "$pid" 2>/dev/null || true # no "Killed" job notices from bash
		echo "$pid" >"$dir/mariadbd.pid"

		local deadline=$((t0 + timeout * 1000000)) ok=0
		while :; do
			if ping_server "$port"; then ok=1; break; fi
			alive "$pid" || break
			(($(now_us) < deadline)) || break
			sleep 0.1
		done
		if ((ok)) && alive "$pid"; then
			echo "$port" >"$dir/port"
			log "started mariadbd (pid $pid) on 127.0.0.1:$port in $(elapsed "$t0"), dir $dir"
			print_exports "$dir" "$port"
			return 0
		fi
		local newlog=""
		[[ -f $errlog ]] && newlog=$(tail -c +"$((logoff + 1))" "$errlog")
		if alive "$pid"; then
			kill -KILL "$pid" 2>/dev/null || true
			wait_gone 10 "$pid" || true
			log "mariadbd did not accept connections on port $port within ${timeout}s"
		elif ((auto)) && grep -q 'Address already in use' <<<"$newlog"; then
			log "port $port was taken meanwhile; retrying with another port"
			continue
		else
			log "mariadbd exited during startup"
		fi
		{
			echo "---- tail of $errlog ----"
			tail -n 40 <<<"$newlog"
			[[ -s $dir/mariadbd.out ]] && { echo "---- tail of $dir/mariadbd.out ----"; tail -n 10 "$dir/mariadbd.out"; }
		} >&2
		die "failed to start mariadbd in $dir"
	done
	die "failed to start mariadbd in $dir: no free port after several attempts"
}

cmd_stop() {
	local dir=${1:?usage: mariadb.sh stop DIR} pid
	[[ -d $dir ]] || return 0
	dir=$(cd "$dir" && pwd -P)
	pid=$(server_pid "$dir") || { log "not running in $dir"; return 0; }
	local t0
	t0=$(now_us)
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_gone "${MARIADB_STOP_TIMEOUT:-30}" "$pid"; then
		log "mariadbd (pid $pid) did not stop within ${MARIADB_STOP_TIMEOUT:-30}s: SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone 10 "$pid" || die "mariadbd (pid $pid) survived SIGKILL"
	fi
	log "stopped mariadbd (pid $pid) in $(elapsed "$t0")"
}

cmd_kill() {
	local dir=${1:?usage: mariadb.sh kill DIR} pid
	[[ -d $dir ]] || return 0
	dir=$(cd "$dir" && pwd -P)
	pid=$(server_pid "$dir") || { log "not running in $dir"; return 0; }
	kill -KILL "$pid" 2>/dev/null || true
	wait_gone 10 "$pid" || die "mariadbd (pid $pid) survived SIGKILL"
	log "killed mariadbd (pid $pid)"
}

cmd_status() {
	local dir=${1:?usage: mariadb.sh status DIR} pid
	[[ -d $dir ]] || return 1
	dir=$(cd "$dir" && pwd -P)
	pid=$(server_pid "$dir") || { log "not running in $dir"; return 1; }
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
