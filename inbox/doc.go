// Package inbox is the consumer's half of the Transactional Outbox: an
// idempotent consumer (the Inbox pattern) for Go services that read
// outboxrelay's Kafka records with sarama and apply them to a MySQL/MariaDB or
// PostgreSQL database through database/sql.
//
// Handle runs the service's function inside the service's own transaction,
// after recording the record's event id (header "id") in an inbox table whose
// primary key is that id. The effect and the inbox row commit or roll back
// together, so:
//   - a redelivered record (same id) finds its row and is skipped (Duplicate);
//   - a failed function rolls back the inbox row too, so the record is
//     retried, never lost;
//   - two consumers handling one record at once serialise on the row lock:
//     one applies it, the other waits, then sees it as a Duplicate.
//
// With Config.CheckVersion, Handle also keeps, per (scope, aggregate), the
// (position, index) of the last event applied — the relay's
// "outboxrelay-position" and "outboxrelay-index" headers — and skips an event
// at or below it as Stale. This still holds after old inbox rows are pruned.
//
// The order of commits is the caller's contract: commit the database
// transaction first, and only then mark the Kafka offset (GroupHandler does
// exactly that). A consumer that dies between the two gets the record again
// and skips it as a Duplicate; the reverse order could lose it.
//
// The package owns its two tables (Config.Table, Config.VersionTable) and
// nothing else: it never begins, commits or rolls back the caller's
// transaction in Handle, never touches the caller's other tables, and knows
// the relay only through the record headers — it must not import the relay's
// internal packages (the header names are copied in headers.go).
// See docs/consumers.md.
package inbox
