// Package postgres is the PostgreSQL source: it streams a logical
// replication slot with the pgoutput plugin (protocol version 1, so only
// committed transactions ever arrive), decodes the INSERTs of outbox tables,
// and hands out committed transactions with the LSN at which each ends. It
// reports back to the server, as the slot's flush position, only what the
// relay has acknowledged as durable.
//
// It owns the replication connection, the slot and publication checks, and
// LSN positions; it must not know about mapping, Kafka or checkpoint storage.
//
// # Setup
//
// At start the relay checks wal_level = logical (PostgreSQL 14 or later),
// resolves source.postgres.tables against the catalog (ordinary and
// partitioned tables; partitions are published through their root), and
// makes sure the publication covers those tables and publishes inserts, and
// that the slot is a pgoutput slot of this database. With create: auto it
// creates a missing publication (FOR TABLE …, publish = 'insert') and slot;
// with create: never, and for problems it must not fix itself (a publication
// lacking a table, a lost slot), it stops with the SQL to run.
//
// The slot's flush position only ever moves to what the relay has
// checkpointed. When the outbox is quiet but the database is busy, the
// server's keepalives (and heartbeat messages) let the relay checkpoint the
// WAL end as a transaction without rows, so the slot does not hold WAL back.
//
// # Rows
//
// Column values are handed out raw, as pgoutput sends them: nil for NULL,
// the text form's bytes for every type except bytea, whose hex text form is
// decoded to the raw bytes. Nothing else is decoded (no pgtype), so a json
// or text payload reaches Kafka byte for byte. (jsonb normalises its text:
// use json, text or bytea for payloads whose bytes matter.)
//
// # Table-less outbox: logical decoding messages
//
// An application may skip the outbox table and write events as
// transactional logical decoding messages:
//
//	SELECT pg_logical_emit_message(true, 'outbox', '{
//	  "id": "4f1c…", "aggregatetype": "order", "aggregateid": "42",
//	  "type": "OrderCreated", "payload": {"total": 9.99}
//	}');
//
// A message whose prefix is listed in message_prefixes becomes one row of a
// synthetic table named "message.<prefix>" whose columns are the top-level
// keys of the JSON object in the content, in their order. A string value
// becomes its unquoted bytes, null becomes NULL, and any other value (an
// object, array, number or boolean) its JSON text exactly as written, so
// "payload": {...} reaches Kafka as that object's bytes. The row is then
// mapped like an outbox table's row, with the configured column names.
//
// The message commits or rolls back with its transaction; non-transactional
// messages (pg_logical_emit_message(false, …)) and other prefixes are
// ignored. Content that is not a JSON object stops the relay with an error
// naming the prefix and LSN.
package postgres
