#!/usr/bin/env bash
# The outboxrelay demo, end to end, on a fresh machine:
#   1. builds outboxrelay and the development broker (devkafka, kfake-based),
#   2. starts a private MariaDB (scripts/mariadb.sh) and devkafka,
#   3. creates shop.orders and shop.outbox, prints the relay's config
#      (secrets masked) and starts the relay,
#   4. writes orders with their outbox events in transactions — including one
#      rolled back and one whose outbox row is inserted and deleted again —,
#   5. prints the Kafka records that arrived, each with what it is, and the
#      relay's checkpoint,
#   6. stops the relay with SIGTERM and cleans everything up.
#
#   scripts/demo.sh                  MariaDB binlog
#   scripts/demo.sh --postgres       PostgreSQL logical replication (pgoutput)
#   scripts/demo.sh --exactly-once   (with either) records and the position in
#                                    one Kafka transaction; the consumer reads
#                                    with isolation.level=read_committed
set -euo pipefail

db=mariadb
eos=""
for arg in "$@"; do
	case "$arg" in
	--postgres) db=postgres ;;
	--mariadb) ;;
	--exactly-once) eos=1 ;;
	*) echo "usage: scripts/demo.sh [--postgres] [--exactly-once]" >&2; exit 2 ;;
	esac
done

cd "$(dirname "$0")/.."

# mask_secrets: the config on stdin with passwords, tokens and DSN
# passwords replaced by ***.
mask_secrets() {
	sed -E -e 's/^([[:space:]]*([a-z_]*_)?(password|token):[[:space:]]*)[^[:space:]].*/\1"***"/' \
		-e 's#(://[^:/@"]*):[^@/"]*@#\1:***@#'
}

# explain: each record from devkafka consume, followed by what it is.
explain() {
	local rec note
	while IFS= read -r rec; do
		printf '%s\n' "$rec"
		case $rec in
		*CustomerNotified*) note="table-less: a pg_logical_emit_message(true, 'outbox', '{…}') event — no outbox table, no row; the message's JSON keys act as the columns (id, aggregatetype, aggregateid, type, payload)" ;;
		*OrderCreated*Zoë*) note="order 1: the order and its event committed together" ;;
		*OrderCreated*Ada*) note="order 2, first of two events in one transaction (same key: same partition, in order)" ;;
		*OrderPaid*) note="order 2, second event: after OrderCreated on the same partition" ;;
		*CustomerOrdered*) note="outbox row inserted and deleted in one transaction: delivered all the same, once" ;;
		*) note="" ;;
		esac
		if [[ -n $note ]]; then printf '  ↳ %s\n' "$note"; fi
	done
}
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
log() {
	if [[ -t 2 ]]; then printf '\033[1;34m== %s\033[0m\n' "$*" >&2; else printf '== %s\n' "$*" >&2; fi
}

command -v go >/dev/null || { echo "demo: Go is not installed (expected /usr/local/go/bin/go)" >&2; exit 1; }

work=$(mktemp -d /tmp/outboxrelay-demo.XXXXXX)
relay_pid="" broker_pid=""
cleanup() {
	set +e
	[[ -n $relay_pid ]] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
	[[ -n $broker_pid ]] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
	bash scripts/mariadb.sh stop "$work/mariadb" >/dev/null 2>&1
	bash scripts/postgres.sh stop "$work/postgres" >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT

log "building outboxrelay and devkafka (the first build takes a minute or more)…"
# The version names the commit even where Go cannot stamp it (a git
# worktree, -buildvcs=false).
version=$(git describe --always --dirty 2>/dev/null || echo unknown)
go build -ldflags "-X github.com/outboxrelay/outboxrelay/internal/cli.Version=$version" -o "$work/bin/outboxrelay" ./cmd/outboxrelay
go build -o "$work/bin/devkafka" ./cmd/devkafka
"$work/bin/outboxrelay" version | head -1 >&2

log "starting the development Kafka broker"
"$work/bin/devkafka" serve --listen 127.0.0.1:0 --partitions 3 >"$work/devkafka.out" 2>"$work/devkafka.err" &
broker_pid=$!
for _ in $(seq 100); do grep -q 'listening on' "$work/devkafka.out" 2>/dev/null && break; sleep 0.1; done
broker=$(sed -n 's/^devkafka listening on //p' "$work/devkafka.out")
[[ -n $broker ]] || { cat "$work/devkafka.err" >&2; echo "demo: devkafka did not start" >&2; exit 1; }
echo "broker at $broker" >&2

if [[ $db == mariadb ]]; then
	log "starting a private MariaDB (binlog ROW, FULL row image and metadata)"
	eval "$(bash scripts/mariadb.sh start "$work/mariadb")"
	host=${RELAYTEST_MARIADB_ADDR%:*} port=${RELAYTEST_MARIADB_ADDR##*:}
	sql() { mariadb --protocol=tcp -h "$host" -P "$port" -u root --default-character-set=utf8mb4 "$@"; }
	log "creating shop.orders and shop.outbox"
	sql <<'SQL'
CREATE DATABASE shop;
CREATE TABLE shop.orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer VARCHAR(64) NOT NULL, total DECIMAL(10,2) NOT NULL);
CREATE TABLE shop.outbox (
  id VARCHAR(36) NOT NULL PRIMARY KEY,
  aggregatetype VARCHAR(255) NOT NULL,
  aggregateid VARCHAR(255) NOT NULL,
  type VARCHAR(255) NOT NULL,
  payload LONGTEXT,
  created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6));
SQL
	source_yaml="  type: mysql
  mysql:
    addr: $RELAYTEST_MARIADB_ADDR
    user: root
    server_id: 4001
    tables: [shop.outbox]
    start: current"
	ready='streaming binlog'
	write_orders() {
		sql shop <<'SQL'
-- Order 1: the order and its event commit together.
BEGIN;
INSERT INTO orders (customer, total) VALUES ('Zoë', 42.50);
INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
  VALUES (UUID(), 'order', LAST_INSERT_ID(), 'OrderCreated', '{"customer":"Zoë","total":42.50}');
COMMIT;
-- Order 2: two events in one transaction (same key: same partition, in order).
BEGIN;
INSERT INTO orders (customer, total) VALUES ('Ada', 7.00);
SET @o = LAST_INSERT_ID();
INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
  VALUES (UUID(), 'order', @o, 'OrderCreated', '{"customer":"Ada","total":7.00}'),
         (UUID(), 'order', @o, 'OrderPaid', '{"amount":7.00}');
COMMIT;
-- Rolled back: neither the order nor its event may appear.
BEGIN;
INSERT INTO orders (customer, total) VALUES ('Rollback', 1.00);
INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
  VALUES (UUID(), 'order', LAST_INSERT_ID(), 'OrderCreated', '{"customer":"Rollback"}');
ROLLBACK;
-- Insert + delete in one transaction (keeps the outbox table empty): the
-- event is still delivered, exactly once.
BEGIN;
INSERT INTO orders (customer, total) VALUES ('Grace', 99.90);
INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload)
  VALUES ('11111111-2222-3333-4444-555555555555', 'customer', 'grace', 'CustomerOrdered', '{"customer":"Grace","total":99.90}');
DELETE FROM outbox WHERE id = '11111111-2222-3333-4444-555555555555';
COMMIT;
SQL
	}
else
	log "starting a private PostgreSQL (wal_level=logical)"
	eval "$(bash scripts/postgres.sh start "$work/postgres")"
	sql() { psql -q -v ON_ERROR_STOP=1 "$RELAYTEST_POSTGRES_DSN" "$@"; }
	log "creating shop.orders and shop.outbox"
	sql <<'SQL'
CREATE SCHEMA shop;
CREATE TABLE shop.orders (id bigserial PRIMARY KEY, customer text NOT NULL, total numeric(10,2) NOT NULL);
CREATE TABLE shop.outbox (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  aggregatetype text NOT NULL,
  aggregateid text NOT NULL,
  type text NOT NULL,
  payload json,
  created_at timestamptz NOT NULL DEFAULT now());
SQL
	source_yaml="  type: postgres
  postgres:
    dsn: \"$RELAYTEST_POSTGRES_DSN\"
    slot: demo
    publication: demo
    tables: [shop.outbox]"
	ready='streaming replication slot'
	write_orders() {
		# (stdout: psql would print the SELECT's result table)
		sql >/dev/null <<'SQL'
-- Order 1: the order and its event commit together.
BEGIN;
WITH o AS (INSERT INTO shop.orders (customer, total) VALUES ('Zoë', 42.50) RETURNING id)
INSERT INTO shop.outbox (aggregatetype, aggregateid, type, payload)
  SELECT 'order', id::text, 'OrderCreated', '{"customer":"Zoë","total":42.50}' FROM o;
COMMIT;
-- Order 2: two events in one transaction (same key: same partition, in order).
BEGIN;
WITH o AS (INSERT INTO shop.orders (customer, total) VALUES ('Ada', 7.00) RETURNING id)
INSERT INTO shop.outbox (aggregatetype, aggregateid, type, payload)
  SELECT 'order', id::text, t, p::json FROM o,
    (VALUES (1, 'OrderCreated', '{"customer":"Ada","total":7.00}'), (2, 'OrderPaid', '{"amount":7.00}')) AS v(n, t, p) ORDER BY n;
COMMIT;
-- Rolled back: neither the order nor its event may appear.
BEGIN;
INSERT INTO shop.outbox (aggregatetype, aggregateid, type, payload) VALUES ('order', '999', 'OrderCreated', '{"customer":"Rollback"}');
ROLLBACK;
-- Insert + delete in one transaction: delivered exactly once.
BEGIN;
INSERT INTO shop.orders (customer, total) VALUES ('Grace', 99.90);
INSERT INTO shop.outbox (id, aggregatetype, aggregateid, type, payload)
  VALUES ('11111111-2222-3333-4444-555555555555', 'customer', 'grace', 'CustomerOrdered', '{"customer":"Grace","total":99.90}');
DELETE FROM shop.outbox WHERE id = '11111111-2222-3333-4444-555555555555';
COMMIT;
-- Table-less: a transactional logical message needs no outbox table at all
-- (source.postgres.message_prefixes: [outbox]).
BEGIN;
SELECT pg_logical_emit_message(true, 'outbox', '{"id":"22222222-3333-4444-5555-666666666666","aggregatetype":"customer","aggregateid":"grace","type":"CustomerNotified","payload":{"channel":"email"}}');
COMMIT;
SQL
	}
	source_yaml="$source_yaml
    message_prefixes: [outbox]"
fi

if [[ -n $eos ]]; then
	# Exactly-once: the position lives in Kafka (no file), committed in
	# the same Kafka transaction as the records it covers.
	store_yaml="checkpoint:
  type: kafka
relay:
  name: demo
  delivery: exactly-once"
else
	store_yaml="checkpoint:
  file:
    path: $work/checkpoint.json"
fi
cat >"$work/relay.yaml" <<YAML
source:
$source_yaml
kafka:
  brokers: [$broker]
$store_yaml
log:
  format: console
YAML

log "the relay's configuration (relay.yaml; secrets masked)"
mask_secrets <"$work/relay.yaml"

log "starting the relay: outboxrelay run --config relay.yaml"
"$work/bin/outboxrelay" run --config "$work/relay.yaml" 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 100); do grep -q "$ready" "$work/relay.log" && break; sleep 0.1; done
grep -q "$ready" "$work/relay.log" || { cat "$work/relay.log" >&2; echo "demo: the relay did not start" >&2; exit 1; }

log "writing orders and their outbox events"
write_orders
expected=4
[[ $db == postgres ]] && expected=5

log "records in Kafka (devkafka consume --topics 'outbox\\.event\\..*', isolation.level=read_committed)"
cat <<'LEGEND'
Each record: topic=outbox.event.<aggregatetype> partition=<from the key: murmur2, as Java's client> offset=<in the partition>
  key=<aggregateid> headers={id=<event id>, type=<event type>, outboxrelay-position=<log position of its
  transaction>, outboxrelay-index=<its place in the transaction>} value=<payload, bytes unchanged>
LEGEND
"$work/bin/devkafka" consume --brokers "$broker" --topics '^outbox\.event\..*' --idle 3s --max "$expected" | explain
echo "  (not here: the rolled-back order — never committed, so never in the log)"
if [[ -n $eos ]]; then
	echo "  exactly-once: these records became visible when the relay committed its Kafka transaction" \
		"(every relay.commit_interval, 100ms) together with its position; a read_uncommitted consumer" \
		"would also see records of transactions a crashed relay left open, which the next one aborts."
	log "the relay's position record (devkafka consume --topics 'outboxrelay\\.positions')"
	"$work/bin/devkafka" consume --brokers "$broker" --topics '^outboxrelay\.positions$' --idle 2s >&2 || true
fi

if [[ -n $eos ]]; then
	log "stopping the relay with SIGTERM (commits what it sent with its position, exits 0)"
else
	log "stopping the relay with SIGTERM (drains, writes the final checkpoint, exits 0)"
fi
kill -TERM "$relay_pid"
status=0
wait "$relay_pid" || status=$?
relay_pid=""
echo "relay exit status: $status" >&2

log "the relay's checkpoint: outboxrelay checkpoint show"
"$work/bin/outboxrelay" checkpoint show --config "$work/relay.yaml"

log "relay log"
cat "$work/relay.log" >&2
[[ $status -eq 0 ]]
