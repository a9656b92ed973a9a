package schema

import (
	"fmt"
	"regexp"
	"strings"
)

// Filter decides which tables are outbox tables. Entries are either exact
// "schema.table" names or regular expressions written between slashes
// ("/shop\.outbox_.*/"), matched against the whole "schema.table" name.
type Filter struct {
	exact   map[string]struct{}
	regexps []*regexp.Regexp
}

// NewFilter parses include entries. The error names the bad entry by index
// so config validation can point at the key.
func NewFilter(include []string) (*Filter, error) {
	f := &Filter{exact: make(map[string]struct{})}
	for i, e := range include {
		e = strings.TrimSpace(e)
		switch {
		case len(e) >= 2 && strings.HasPrefix(e, "/") && strings.HasSuffix(e, "/"):
			re, err := regexp.Compile(`^(?:` + e[1:len(e)-1] + `)$`)
			if err != nil {
				return nil, fmt.Errorf("entry %d %q: bad regular expression: %w", i, e, err)
			}
			f.regexps = append(f.regexps, re)
		case strings.Count(e, ".") == 1 && !strings.HasPrefix(e, ".") && !strings.HasSuffix(e, "."):
			f.exact[e] = struct{}{}
		default:
			return nil, fmt.Errorf("entry %d %q: want \"schema.table\" or a /regular expression/", i, e)
		}
	}
	if len(f.exact) == 0 && len(f.regexps) == 0 {
		return nil, fmt.Errorf("no tables: list at least one outbox table")
	}
	return f, nil
}

// Match reports whether schema.table is an outbox table.
func (f *Filter) Match(schemaName, table string) bool {
	name := schemaName + "." + table
	if _, ok := f.exact[name]; ok {
		return true
	}
	for _, re := range f.regexps {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

// ExactOnly reports whether the filter lists names only (no regexps), so
// that a catalog query can be limited to them.
func (f *Filter) ExactOnly() bool { return len(f.regexps) == 0 }

// Exact returns the exact names listed (used to check the tables exist).
func (f *Filter) Exact() []string {
	out := make([]string, 0, len(f.exact))
	for n := range f.exact {
		out = append(out, n)
	}
	return out
}
