package inbox

import (
	"errors"

	"github.com/go-sql-driver/mysql"
)

// IsRetryable reports whether err is a transaction conflict that the
// database resolved by aborting this transaction — a deadlock, a lock wait
// timeout or a serialization failure — so that running the same
// transaction again is expected to succeed. Process retries these itself;
// callers of Handle, who own the transaction, should roll back and retry.
//
// On MySQL/MariaDB it happens even to plain duplicates: when a claimer
// rolls back while others wait for its inbox row, InnoDB lets the waiters
// deadlock each other and picks victims.
func IsRetryable(err error) bool {
	var my *mysql.MySQLError
	if errors.As(err, &my) {
		switch my.Number {
		case 1213, // ER_LOCK_DEADLOCK
			1205: // ER_LOCK_WAIT_TIMEOUT
			return true
		}
		return false
	}
	// pgx's *pgconn.PgError and lib/pq's *pq.Error both have SQLState().
	var pg interface{ SQLState() string }
	if errors.As(err, &pg) {
		switch pg.SQLState() {
		case "40001", // serialization_failure
			"40P01": // deadlock_detected
			return true
		}
	}
	return false
}
