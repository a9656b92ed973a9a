// Package schema owns table identity and column metadata shared by every
// source: which tables are outbox tables (Filter) and what their columns are
// (Table). It must not talk to a database itself; sources fill it in.
package schema

// Table is the layout of one table as the source saw it when the row was
// written. A new layout (DDL, a new Relation message) is a new *Table, so a
// *Table can key caches.
type Table struct {
	Schema  string
	Name    string
	Columns []string
	// Types are the columns' SQL types as the catalog names them
	// (lower-case: "varchar", "longtext", "bytea"), when the source read
	// them from the catalog; nil for layouts taken from the log.
	Types []string
}

// FullName is "schema.name", the form used in config and in errors.
func (t *Table) FullName() string { return t.Schema + "." + t.Name }

// Index returns the position of the named column, or -1.
func (t *Table) Index(column string) int {
	for i, c := range t.Columns {
		if c == column {
			return i
		}
	}
	return -1
}
