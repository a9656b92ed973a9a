package schema

// Cache keeps the current layout of each table by "schema.name". A layout
// that did not change keeps its *Table, so that downstream caches keyed by
// *Table (the mapping's column indexes) stay valid; a changed one (DDL, a
// new Relation message) gets a new *Table. It is not safe for concurrent
// use: each source keeps its own on its reading goroutine.
type Cache struct {
	tables map[string]*Table
}

// NewCache returns an empty cache.
func NewCache() *Cache { return &Cache{tables: make(map[string]*Table)} }

// Layout returns the table with these columns, reusing the cached *Table
// when the columns are unchanged. columns is copied only when new.
func (c *Cache) Layout(schemaName, name string, columns []string) *Table {
	key := schemaName + "." + name
	if t := c.tables[key]; t != nil && equal(t.Columns, columns) {
		return t
	}
	t := &Table{Schema: schemaName, Name: name, Columns: append([]string(nil), columns...)}
	c.tables[key] = t
	return t
}

// Get returns the cached layout, or nil.
func (c *Cache) Get(schemaName, name string) *Table { return c.tables[schemaName+"."+name] }

// Forget drops every cached layout (after DDL whose effect is unknown).
func (c *Cache) Forget() { clear(c.tables) }

// Len is the number of cached tables.
func (c *Cache) Len() int { return len(c.tables) }

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
