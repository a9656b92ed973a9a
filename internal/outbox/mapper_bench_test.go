package outbox

import (
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
)

// BenchmarkMap maps outbox rows as the MySQL source hands them out (strings
// for VARCHAR columns) and as the Postgres source does ([]byte): the
// relay's per-record hot path, with -benchmem for its allocations.
func BenchmarkMap(b *testing.B) {
	tbl := &schema.Table{Schema: "shop", Name: "outbox", Columns: []string{"id", "aggregatetype", "aggregateid", "type", "payload", "created_at"}}
	payload := `{"id":"e-000000001","aggregate":"agg-42","note":"` + strings.Repeat("x", 240) + `"}`
	rows := map[string]source.Row{
		"strings": {Table: tbl, Values: []any{"d-000000001", "order", "agg-42", "OrderCreated", payload, "2026-01-01 00:00:00.000000"}},
		"bytes":   {Table: tbl, Values: []any{[]byte("d-000000001"), []byte("order"), []byte("agg-42"), []byte("OrderCreated"), []byte(payload), []byte("2026-01-01 00:00:00+00")}},
	}
	for name, row := range rows {
		b.Run(name, func(b *testing.B) {
			m, err := New(Config{})
			if err != nil {
				b.Fatal(err)
			}
			commit := time.Unix(1700000000, 0)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := m.Map(row, "mysql-bin.000002:385", i, commit); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
