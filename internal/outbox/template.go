package outbox

import (
	"fmt"
	"strings"
)

// template is a topic template split into literal text and column
// references: "outbox.event.${aggregatetype}" → ["outbox.event.", col].
type template struct {
	parts []part
}

type part struct {
	lit    string
	column string // set for a reference
}

func parseTemplate(s string) (template, error) {
	var t template
	if s == "" {
		return t, fmt.Errorf("empty")
	}
	for s != "" {
		i := strings.Index(s, "${")
		if i < 0 {
			t.parts = append(t.parts, part{lit: s})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, part{lit: s[:i]})
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return t, fmt.Errorf("%q: unclosed ${", s)
		}
		col := s[i+2 : i+j]
		if col == "" {
			return t, fmt.Errorf("%q: empty ${}", s)
		}
		t.parts = append(t.parts, part{column: col})
		s = s[i+j+1:]
	}
	return t, nil
}

// columns lists the columns the template refers to.
func (t template) columns() []string {
	var cols []string
	for _, p := range t.parts {
		if p.column != "" {
			cols = append(cols, p.column)
		}
	}
	return cols
}
