# Helpers shared by scripts/mariadb.sh and scripts/postgres.sh: process
# checks, waiting, and free-port picking. Sourced, not run.

now_us() { local t=${EPOCHREALTIME/./}; echo "$((10#$t))"; }
elapsed() { local d=$(($(now_us) - $1)); printf '%d.%03ds' $((d / 1000000)) $(((d % 1000000) / 1000)); }

# alive PID: the process exists and is not a zombie (PID 1 may not reap).
alive() {
	local pid=$1 stat
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

wait_gone() { # SECONDS PID...
	local deadline=$(($(now_us) + $1 * 1000000)) p
	shift
	for p in "$@"; do
		while alive "$p"; do
			(($(now_us) < deadline)) || return 1
			sleep 0.05
		done
	done
}

# port_in_use PORT: any TCP socket (listening, connected, TIME_WAIT) uses
# PORT locally; used when picking a fresh port.
port_in_use() {
	local p=$1 hex
	if command -v ss >/dev/null 2>&1; then
		[[ -n $(ss -Htan "( sport = :$p )" 2>/dev/null) ]] && return 0
	else
		printf -v hex ':%04X ' "$p"
		grep -qs -- "$hex" /proc/net/tcp /proc/net/tcp6 && return 0
	fi
	(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && return 0
	return 1
}

# port_listening PORT: something listens on PORT (TIME_WAIT leftovers of a
# killed server do not count: servers bind with SO_REUSEADDR).
port_listening() {
	local p=$1 hex sl laddr st rest f
	if command -v ss >/dev/null 2>&1; then
		[[ -n $(ss -Hltn "( sport = :$p )" 2>/dev/null) ]] && return 0
	else
		printf -v hex ':%04X' "$p"
		for f in /proc/net/tcp /proc/net/tcp6; do
			[[ -r $f ]] || continue
			while read -r sl laddr _ st rest; do
				[[ $laddr == *"$hex" && $st == 0A ]] && return 0
			done <"$f"
		done
	fi
	return 1
}

# pick_port: a free port in 20000-32767 (below Linux's ephemeral range), not
# handed out to another start in the last 2 minutes (claims are shared with
# mariadb.sh through a small file under flock).
pick_port() {
	local claims="${TMPDIR:-/tmp}/outboxrelay-port-claims.$EUID" now p t i
	now=$(date +%s)
	{
		command -v flock >/dev/null 2>&1 && flock -w 10 9
		local -A recent=()
		local kept=""
		if [[ -s $claims ]]; then
			while read -r p t; do
				[[ $p =~ ^[0-9]+$ && $t =~ ^[0-9]+$ ]] || continue
				((now - t < 120)) || continue
				recent[$p]=1
				kept+="$p $t"$'\n'
			done <"$claims"
		fi
		for ((i = 0; i < 500; i++)); do
			p=$((20000 + (RANDOM * 32768 + RANDOM) % 12768))
			[[ -z ${recent[$p]:-} ]] || continue
			port_in_use "$p" && continue
			printf '%s%s %s\n' "$kept" "$p" "$now" >"$claims.tmp.$$" && mv -f "$claims.tmp.$$" "$claims"
			echo "$p"
			return 0
		done
		return 1
	} 9>>"$claims.lock"
}
