package outbox

import (
	"fmt"
	"regexp"
	"sort"
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

// pattern is a regexp matching every name the template can produce.
func (t template) pattern() *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, p := range t.parts {
		if p.column != "" {
			b.WriteString(".+")
		} else {
			b.WriteString(regexp.QuoteMeta(p.lit))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// Targets lists the topics the mapping can produce to — the topic
// template, per-table overrides and the dead-letter topic: fixed names,
// and patterns for templates that refer to columns.
func (c *Config) Targets() (topics []string, patterns []*regexp.Regexp) {
	templates := map[string]bool{c.Topic: true}
	for _, m := range c.Tables {
		if m.Topic != "" {
			templates[m.Topic] = true
		}
	}
	if c.OnBadRow == PolicyDeadLetter && c.DeadLetterTopic != "" {
		templates[c.DeadLetterTopic] = true
	}
	names := make([]string, 0, len(templates))
	for s := range templates {
		names = append(names, s)
	}
	sort.Strings(names)
	for _, s := range names {
		t, err := parseTemplate(s)
		switch {
		case err != nil:
			continue // Validate reports it
		case len(t.columns()) == 0:
			topics = append(topics, s)
		default:
			patterns = append(patterns, t.pattern())
		}
	}
	return topics, patterns
}
