package schema

import "testing"

func TestCacheKeepsUnchangedLayouts(t *testing.T) {
	t.Parallel()
	c := NewCache()
	cols := []string{"id", "payload"}
	a := c.Layout("shop", "outbox", cols)
	cols[0] = "mutated" // the cache copied the columns
	if b := c.Layout("shop", "outbox", []string{"id", "payload"}); b != a {
		t.Fatal("an unchanged layout got a new *Table")
	}
	if a.Columns[0] != "id" {
		t.Fatalf("cache kept the caller's slice: %v", a.Columns)
	}
	b := c.Layout("shop", "outbox", []string{"id", "payload", "tenant"}) // ALTER TABLE ADD COLUMN
	if b == a || len(b.Columns) != 3 {
		t.Fatal("a changed layout kept the old *Table")
	}
	if c.Get("shop", "outbox") != b || c.Get("shop", "other") != nil {
		t.Fatal("Get")
	}
	if other := c.Layout("billing", "outbox", []string{"id", "payload"}); other == a || other.FullName() != "billing.outbox" {
		t.Fatal("tables of another schema share a layout")
	}
	c.Forget()
	if c.Len() != 0 || c.Get("shop", "outbox") != nil {
		t.Fatal("Forget kept layouts")
	}
}
