package inbox_test

import (
	"errors"
	"testing"

	"github.com/outboxrelay/outboxrelay/inbox"
)

func TestComparePositions(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		a, b string
		want int
		err  bool
	}{
		{"mysql same", "mysql-bin.000003:1234", "mysql-bin.000003:1234", 0, false},
		{"mysql offset", "mysql-bin.000003:999", "mysql-bin.000003:1234", -1, false},
		{"mysql offset is numeric, not text", "mysql-bin.000003:10000", "mysql-bin.000003:9999", 1, false},
		{"mysql next file", "mysql-bin.000004:4", "mysql-bin.000003:999999", 1, false},
		{"mysql file seq past 999999", "mysql-bin.1000000:4", "mysql-bin.999999:4", 1, false},
		{"mysql gtid suffix ignored", "mysql-bin.000003:1234@0-1-55", "mysql-bin.000003:1234", 0, false},
		{"mysql plus suffix ignored", "mysql-bin.000003:1234+2", "mysql-bin.000003:1235", -1, false},
		{"mysql semicolon suffix ignored", "mysql-bin.000003:1236;x=y", "mysql-bin.000003:1235@1-2-3", 1, false},
		{"postgres", "0/16B3748", "0/16B3749", -1, false},
		{"postgres high half", "1/0", "0/FFFFFFFF", 1, false},
		{"postgres case", "16/b374d848", "16/B374D848", 0, false},
		{"mysql vs postgres", "mysql-bin.000003:1234", "0/16B3748", 0, true},
		{"different binlogs", "mysql-bin.000003:1234", "other-bin.000003:1234", 0, true},
		{"empty", "", "0/1", 0, true},
		{"garbage", "hello", "hello", 0, true},
		{"gtid only", "gtid:0-1-5", "gtid:0-1-6", 0, true},
		{"bad offset", "mysql-bin.000003:x", "mysql-bin.000003:1", 0, true},
		{"bad lsn", "0/XYZ", "0/1", 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := inbox.ComparePositions(c.a, c.b)
			if c.err {
				if !errors.Is(err, inbox.ErrIncomparable) {
					t.Fatalf("ComparePositions(%q, %q) = %d, %v; want an ErrIncomparable error", c.a, c.b, got, err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("ComparePositions(%q, %q) = %d, %v; want %d", c.a, c.b, got, err, c.want)
			}
			// Antisymmetric.
			if back, err := inbox.ComparePositions(c.b, c.a); err != nil || back != -c.want {
				t.Fatalf("ComparePositions(%q, %q) = %d, %v; want %d", c.b, c.a, back, err, -c.want)
			}
		})
	}
}

func TestVersionCompare(t *testing.T) {
	t.Parallel()
	p := func(pos string, i int64) inbox.Version { return inbox.Version{Position: pos, Index: i} }
	cases := []struct {
		name string
		a, b inbox.Version
		want int
	}{
		{"index orders within a transaction", p("binlog.000001:500", 0), p("binlog.000001:500", 1), -1},
		{"equal", p("0/10", 2), p("0/10", 2), 0},
		{"position wins over index", p("0/11", 0), p("0/10", 9), 1},
		{"mysql position wins over index", p("binlog.000001:400", 7), p("binlog.000001:500", 0), -1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if got, err := c.a.Compare(c.b); err != nil || got != c.want {
				t.Fatalf("%v.Compare(%v) = %d, %v; want %d", c.a, c.b, got, err, c.want)
			}
		})
	}
}

// FuzzComparePositions: never panics, and is antisymmetric where it orders.
func FuzzComparePositions(f *testing.F) {
	f.Add("mysql-bin.000003:1234", "mysql-bin.000003:1234@0-1-5")
	f.Add("0/16B3748", "1/0")
	f.Add("a.1:2+3", "a.1:2;")
	f.Add(":", "/")
	f.Fuzz(func(t *testing.T, a, b string) {
		ab, err1 := inbox.ComparePositions(a, b)
		ba, err2 := inbox.ComparePositions(b, a)
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("errors differ: %v / %v", err1, err2)
		}
		if err1 == nil && ab != -ba {
			t.Fatalf("Compare(%q,%q)=%d but Compare(%q,%q)=%d", a, b, ab, b, a, ba)
		}
	})
}
