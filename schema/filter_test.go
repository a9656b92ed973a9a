package schema

import (
	"strings"
	"testing"
)

func TestFilter(t *testing.T) {
	t.Parallel()
	f, err := NewFilter([]string{"shop.outbox", `/billing\.outbox_[a-z]+/`})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		schema, table string
		want          bool
	}{
		{"shop", "outbox", true},
		{"shop", "outbox2", false},
		{"shopx", "outbox", false},
		{"billing", "outbox_eu", true},
		{"billing", "outbox_eu2", false}, // regexps match the whole name
		{"xbilling", "outbox_eu", false},
		{"billing", "outbox_", false},
	}
	for _, tt := range tests {
		if got := f.Match(tt.schema, tt.table); got != tt.want {
			t.Errorf("Match(%s.%s) = %v, want %v", tt.schema, tt.table, got, tt.want)
		}
	}
}

func TestFilterErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   []string
		want string
	}{
		{nil, "no tables"},
		{[]string{"outbox"}, `entry 0 "outbox"`},
		{[]string{"a.b", "a.b.c"}, `entry 1 "a.b.c"`},
		{[]string{"/a(/"}, "bad regular expression"},
	} {
		_, err := NewFilter(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewFilter(%q) = %v, want error containing %q", tt.in, err, tt.want)
		}
	}
}
