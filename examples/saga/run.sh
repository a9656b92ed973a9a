#!/usr/bin/env bash
# The choreography saga end to end, with failures injected:
#   1. builds outboxrelay, devkafka and the saga services,
#   2. starts a private MariaDB (orders, shipping), a private PostgreSQL
#      (payments) and the dev Kafka broker, on free ports in a temp dir,
#   3. starts one relay per service database and the three consumers,
#   4. places orders; meanwhile kills the payments relay and the shipping
#      consumer with SIGKILL and restarts them, and produces copies of
#      records already delivered (duplicate deliveries),
#   5. waits until the saga settles and checks the final state of every
#      service: every order shipped or cancelled, every effect once.
# Exit status: 0 only if the final state is consistent (saga check).
#
#   examples/saga/run.sh            SAGA_ORDERS=N (default 60)  KEEP=1 keeps the temp dir
set -euo pipefail

cd "$(dirname "$0")/../.."
export PATH="/usr/local/go/bin:$PATH:/usr/sbin:/sbin"
log() { printf '\033[1;34m== %s\033[0m\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }
command -v go >/dev/null || die "Go is not installed (expected /usr/local/go/bin/go)"

orders=${SAGA_ORDERS:-60}
half=$((orders / 2))
work=$(mktemp -d /tmp/outboxrelay-saga.XXXXXX)
declare -A pid=()
stop_proc() { # NAME: SIGTERM, then wait
	local p=${pid[$1]:-}
	[[ -n $p ]] || return 0
	kill -TERM "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	unset "pid[$1]"
}
cleanup() {
	set +e
	for name in "${!pid[@]}"; do stop_proc "$name"; done
	bash scripts/mariadb.sh stop "$work/mariadb" >/dev/null 2>&1
	bash scripts/postgres.sh stop "$work/postgres" >/dev/null 2>&1
	if [[ ${KEEP:-} == 1 ]]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

t0=$SECONDS
log "building outboxrelay, devkafka and saga"
go build -o "$work/bin/outboxrelay" ./cmd/outboxrelay
go build -o "$work/bin/devkafka" ./cmd/devkafka
go build -o "$work/bin/saga" ./examples/saga

log "starting MariaDB, PostgreSQL and the dev Kafka broker"
bash scripts/mariadb.sh start "$work/mariadb" >"$work/mariadb.env" 2>"$work/mariadb.log" &
my=$!
bash scripts/postgres.sh start "$work/postgres" >"$work/postgres.env" 2>"$work/postgres.log" &
pg=$!
"$work/bin/devkafka" serve --listen 127.0.0.1:0 --partitions 3 >"$work/devkafka.out" 2>"$work/devkafka.err" &
pid[devkafka]=$!
wait "$my" || { cat "$work/mariadb.log" >&2; die "MariaDB did not start"; }
wait "$pg" || { cat "$work/postgres.log" >&2; die "PostgreSQL did not start"; }
source "$work/mariadb.env"
source "$work/postgres.env"
for _ in $(seq 100); do grep -q 'listening on' "$work/devkafka.out" 2>/dev/null && break; sleep 0.1; done
broker=$(sed -n 's/^devkafka listening on //p' "$work/devkafka.out")
[[ -n $broker ]] || { cat "$work/devkafka.err" >&2; die "devkafka did not start"; }
pg_base=${RELAYTEST_POSTGRES_DSN%%\?*}
pg_base=${pg_base%/*}
saga() { "$work/bin/saga" "$1" -mysql "$RELAYTEST_MARIADB_ADDR" -postgres "$RELAYTEST_POSTGRES_DSN" -brokers "$broker" "${@:2}"; }

log "creating each service's database, tables (own, outbox, inbox) and the topics"
saga setup

# relay NAME: write NAME's config and start it; waits until it streams.
relay() {
	local name=$1 src ready
	case $name in
	orders | shipping)
		src="  type: mysql
  mysql:
    addr: $RELAYTEST_MARIADB_ADDR
    user: root
    server_id: $([[ $name == orders ]] && echo 5101 || echo 5102)
    tables: [$name.outbox]
    start: current"
		ready='streaming binlog' ;;
	payments)
		src="  type: postgres
  postgres:
    dsn: \"$pg_base/payments?sslmode=disable\"
    slot: saga_payments
    publication: saga_payments
    tables: [public.outbox]"
		ready='streaming replication slot' ;;
	esac
	cat >"$work/relay-$name.yaml" <<YAML
source:
$src
kafka:
  brokers: [$broker]
checkpoint:
  file:
    path: $work/checkpoint-$name.json
log:
  format: console
YAML
	local before=0
	[[ -f $work/relay-$name.log ]] && before=$(grep -c "$ready" "$work/relay-$name.log" || true)
	"$work/bin/outboxrelay" run --config "$work/relay-$name.yaml" >>"$work/relay-$name.log" 2>&1 &
	pid[relay-$name]=$!
	for _ in $(seq 200); do
		(($(grep -c "$ready" "$work/relay-$name.log" || true) > before)) && return 0
		kill -0 "${pid[relay-$name]}" 2>/dev/null || break
		sleep 0.1
	done
	cat "$work/relay-$name.log" >&2
	die "the $name relay did not start"
}

consumer() { # NAME
	# The binary itself in the background, not the saga function (that
	# would be a subshell: $! its pid, and SIGKILL/SIGTERM would miss the
	# consumer and leave it running).
	"$work/bin/saga" serve -mysql "$RELAYTEST_MARIADB_ADDR" -postgres "$RELAYTEST_POSTGRES_DSN" -brokers "$broker" \
		-service "$1" >>"$work/consumer-$1.log" 2>&1 &
	pid[consumer-$1]=$!
}

kill9() { # NAME: SIGKILL, as a crash
	kill -KILL "${pid[$1]}"
	wait "${pid[$1]}" 2>/dev/null || true
	unset "pid[$1]"
}

log "starting one relay per service database, and the three consumers"
for s in orders payments shipping; do relay "$s"; done
for s in orders payments shipping; do consumer "$s"; done

log "placing orders o-0001 … o-$(printf %04d "$half") while crashing things"
saga place -first 1 -count "$half" -interval 40ms &
placing=$!
sleep 0.7
log "SIGKILL the payments relay (records after its last checkpoint will be sent again)"
kill9 relay-payments
sleep 0.5
log "SIGKILL the shipping consumer (records after its last offset commit will be delivered again)"
kill9 consumer-shipping
sleep 1
log "restarting both"
relay payments
consumer shipping
wait "$placing"

log "injecting duplicate deliveries: copies of records already consumed"
for topic in outbox.event.order outbox.event.payment; do
	for i in $(seq 60); do
		saga redeliver -topic "$topic" -count 5 && break
		((i < 60)) || die "could not redeliver on $topic"
		sleep 0.5
	done
done

log "placing orders $((half + 1)) … $orders"
saga place -first $((half + 1)) -count $((orders - half)) -interval 10ms

log "waiting for the saga to settle"
saga wait -orders "$orders" -timeout 150s || true

log "stopping relays and consumers (SIGTERM)"
for name in "${!pid[@]}"; do [[ $name == devkafka ]] || stop_proc "$name"; done

log "what the consumers skipped (from their logs)"
for s in orders payments shipping; do
	printf '  %-8s %3d duplicates, %3d stale, %3d retried attempts\n' "$s" \
		"$(grep -c 'skipped duplicate' "$work/consumer-$s.log" || true)" \
		"$(grep -c 'skipped stale' "$work/consumer-$s.log" || true)" \
		"$(grep -c 'retrying' "$work/consumer-$s.log" || true)" >&2
done

log "checking the final state of every service"
status=0
# 5 copies on the order topic reach payments; 5 on the payment topic reach
# orders and shipping: at least 15 redeliveries must have been skipped.
saga check -orders "$orders" -min-duplicates 15 || status=$?
echo "run.sh: $((SECONDS - t0)) s, exit $status" >&2
exit "$status"
