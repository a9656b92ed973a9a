package inbox

import "fmt"

// Dialect is the SQL dialect of the consumer's database. Use MySQL (also
// for MariaDB) or Postgres; the zero value is invalid.
type Dialect struct{ name string }

var (
	MySQL    = Dialect{"mysql"}    // MySQL 5.7+/8.x and MariaDB 10.5+, InnoDB
	Postgres = Dialect{"postgres"} // PostgreSQL 12+
)

func (d Dialect) String() string {
	if d.name == "" {
		return "<no dialect>"
	}
	return d.name
}

// statements are the dialect's SQL, with the table names filled in.
type statements struct {
	// claim inserts the inbox row, or counts a duplicate on it (see
	// Inbox.claim for how each dialect reports which).
	claim string
	// ensureVersion creates the (scope, aggregate) row if missing, so that
	// lockVersion always has a row to lock (locking a missing row takes a
	// gap lock on MySQL, where two such transactions deadlock on insert).
	ensureVersion string
	lockVersion   string
	setVersion    string
	prune         string
	ddl           []string
}

func (d Dialect) statements(table, versionTable string) (statements, error) {
	switch d {
	case MySQL:
		return statements{
			// ON DUPLICATE KEY UPDATE, not INSERT IGNORE: IGNORE waits for a
			// concurrent claimer with a shared lock, and when that claimer
			// rolls back, every waiter holds one and then all of them
			// deadlock on the insert. The update locks exclusively, and
			// changes a column so that a duplicate affects 2 rows (1 is an
			// insert) whether or not the driver sets CLIENT_FOUND_ROWS.
			claim:         "INSERT INTO " + table + " (event_id, topic, kafka_partition, kafka_offset) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE duplicates = duplicates + 1",
			ensureVersion: "INSERT INTO " + versionTable + " (scope, aggregate_id, source_position, source_index) VALUES (?, ?, '', -1) ON DUPLICATE KEY UPDATE scope = scope",
			lockVersion:   "SELECT source_position, source_index FROM " + versionTable + " WHERE scope = ? AND aggregate_id = ? FOR UPDATE",
			setVersion:    "UPDATE " + versionTable + " SET source_position = ?, source_index = ? WHERE scope = ? AND aggregate_id = ?",
			prune:         "DELETE FROM " + table + " WHERE received_at < NOW(6) - INTERVAL ? MICROSECOND ORDER BY received_at LIMIT ?",
			ddl: []string{
				"CREATE TABLE IF NOT EXISTS " + table + ` (
  event_id VARBINARY(255) NOT NULL PRIMARY KEY,
  topic VARCHAR(255) NOT NULL,
  kafka_partition INT NOT NULL,
  kafka_offset BIGINT NOT NULL,
  duplicates INT NOT NULL DEFAULT 0,
  received_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  KEY ` + indexName(table) + ` (received_at)
) ENGINE=InnoDB`,
				"CREATE TABLE IF NOT EXISTS " + versionTable + ` (
  scope VARBINARY(255) NOT NULL,
  aggregate_id VARBINARY(255) NOT NULL,
  source_position VARCHAR(255) NOT NULL,
  source_index BIGINT NOT NULL,
  updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (scope, aggregate_id)
) ENGINE=InnoDB`,
			},
		}, nil
	case Postgres:
		return statements{
			// ON CONFLICT rather than catching a unique violation: a failed
			// statement would abort the caller's transaction. DO UPDATE
			// counts duplicates as on MySQL; RETURNING tells the cases apart.
			claim:         "INSERT INTO " + table + " AS i (event_id, topic, kafka_partition, kafka_offset) VALUES ($1, $2, $3, $4) ON CONFLICT (event_id) DO UPDATE SET duplicates = i.duplicates + 1 RETURNING i.duplicates",
			ensureVersion: "INSERT INTO " + versionTable + " (scope, aggregate_id, source_position, source_index) VALUES ($1, $2, '', -1) ON CONFLICT (scope, aggregate_id) DO NOTHING",
			lockVersion:   "SELECT source_position, source_index FROM " + versionTable + " WHERE scope = $1 AND aggregate_id = $2 FOR UPDATE",
			setVersion:    "UPDATE " + versionTable + " SET source_position = $1, source_index = $2, updated_at = now() WHERE scope = $3 AND aggregate_id = $4",
			prune:         "DELETE FROM " + table + " WHERE ctid IN (SELECT ctid FROM " + table + " WHERE received_at < now() - make_interval(secs => $1::double precision) LIMIT $2)",
			ddl: []string{
				"CREATE TABLE IF NOT EXISTS " + table + ` (
  event_id text PRIMARY KEY,
  topic text NOT NULL,
  kafka_partition integer NOT NULL,
  kafka_offset bigint NOT NULL,
  duplicates integer NOT NULL DEFAULT 0,
  received_at timestamptz NOT NULL DEFAULT now()
)`,
				"CREATE INDEX IF NOT EXISTS " + indexName(table) + " ON " + table + " (received_at)",
				"CREATE TABLE IF NOT EXISTS " + versionTable + ` (
  scope bytea NOT NULL,
  aggregate_id bytea NOT NULL,
  source_position text NOT NULL,
  source_index bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, aggregate_id)
)`,
			},
		}, nil
	}
	return statements{}, fmt.Errorf("inbox: Config.Dialect: want inbox.MySQL or inbox.Postgres, got %v", d)
}

// indexName is the received_at index of table, without its schema (an
// index lives in its table's schema on Postgres, in its table on MySQL).
func indexName(table string) string {
	for i := len(table) - 1; i >= 0; i-- {
		if table[i] == '.' {
			table = table[i+1:]
			break
		}
	}
	return table + "_received_at"
}
