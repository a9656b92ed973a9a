package outbox

import (
	"strings"
	"testing"
	"time"
)

// TestCleanupConfig: defaults, and each bad value names its key.
func TestCleanupConfig(t *testing.T) {
	t.Parallel()
	var c Config
	c.SetDefaults()
	if cl := c.Cleanup; cl.Enabled || cl.Retention != 24*time.Hour || cl.BatchSize != 1000 || cl.Interval != time.Minute || cl.Column != "created_at" {
		t.Errorf("defaults: %+v", cl)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		mod  func(*Cleanup)
		want string
	}{
		{func(c *Cleanup) { c.BatchSize = 20000 }, "cleanup.batch_size: 20000"},
		{func(c *Cleanup) { c.Retention = -time.Second }, "cleanup.retention: -1s"},
		{func(c *Cleanup) { c.Interval = time.Millisecond }, "cleanup.interval: 1ms"},
	} {
		c := Config{}
		c.SetDefaults()
		bad.mod(&c.Cleanup)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("want %q, got %v", bad.want, err)
		}
	}
}

// TestIDColumn: a table's own id column wins over the default mapping's.
func TestIDColumn(t *testing.T) {
	t.Parallel()
	c := Config{Tables: map[string]Mapping{"s.other": {Columns: Columns{ID: "event_id"}}}}
	c.Columns.ID = "uuid"
	c.SetDefaults()
	if got := c.IDColumn("s.other"); got != "event_id" {
		t.Errorf("s.other: %s", got)
	}
	if got := c.IDColumn("s.outbox"); got != "uuid" {
		t.Errorf("s.outbox: %s", got)
	}
}
