package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// decodeYAML decodes the first YAML document of b into c. Before decoding
// it walks the document against c's type, so that every mistake is
// reported as yaml.v3 cannot: with the line, the full key path and, for an
// unknown key, the closest known one ("did you mean server_id?"). Values of
// secret keys (password, token, dsn) never appear in a message.
func decodeYAML(b []byte, c *Config) error {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&doc); err != nil {
		// An empty file decodes to the zero config, which then fails
		// validation with useful messages rather than "EOF".
		if errors.Is(err, io.EOF) {
			return nil
		}
		return errors.New(strings.TrimPrefix(err.Error(), "yaml: ")) // a syntax error: "line 3: …"
	}
	w := walker{seen: map[walked]bool{}}
	if len(doc.Content) > 0 {
		w.walk(doc.Content[0], reflect.TypeOf(c).Elem(), "")
	}
	if len(w.errs) > 0 {
		sort.SliceStable(w.errs, func(i, j int) bool { return w.errs[i].line < w.errs[j].line })
		msgs := make([]string, len(w.errs))
		for i, e := range w.errs {
			msgs[i] = e.String()
		}
		return errors.New(strings.Join(msgs, "\n"))
	}
	// The walk found nothing; yaml.v3 decodes, still refusing unknown keys
	// in case the walk and the decoder ever disagree.
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return errors.New(scrubYAMLError(err.Error()))
	}
	return nil
}

// yamlValue matches the values yaml.v3 quotes in its messages.
var yamlValue = regexp.MustCompile("`[^`]*`")

// scrubYAMLError shortens a yaml.v3 error and drops the values it quotes,
// which may be secrets.
func scrubYAMLError(s string) string {
	s = strings.ReplaceAll(s, "yaml: unmarshal errors:\n  ", "")
	s = strings.ReplaceAll(s, "\n  ", "\n")
	return yamlValue.ReplaceAllString(strings.TrimPrefix(s, "yaml: "), "a value")
}

// fieldError is one mistake in the file.
type fieldError struct {
	line int
	path string
	msg  string
}

func (e fieldError) String() string {
	return fmt.Sprintf("line %d: %s: %s", e.line, e.path, e.msg)
}

type walked struct {
	n *yaml.Node
	t reflect.Type
}

// walker checks a YAML tree against a Go type, collecting every mistake.
type walker struct {
	errs []fieldError
	// seen stops a node reached again through an alias from being walked
	// (and reported) again, and bounds the work of alias-heavy input.
	seen map[walked]bool
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

func (w *walker) fail(n *yaml.Node, path, format string, args ...any) {
	w.errs = append(w.errs, fieldError{line: n.Line, path: orTop(path), msg: fmt.Sprintf(format, args...)})
}

func (w *walker) walk(n *yaml.Node, t reflect.Type, path string) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if w.seen[walked{n, t}] {
		return
	}
	w.seen[walked{n, t}] = true
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value leaves the zero value (the default)
	}
	switch {
	case t == reflect.TypeOf(yaml.Node{}):
		return
	case reflect.PointerTo(t).Implements(unmarshalerType):
		// The type parses itself: its own message is the best there is.
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			w.fail(n, path, "%s", scrubYAMLError(err.Error()))
		}
		return
	case t == durationType:
		w.scalar(n, t, path)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if w.want(n, yaml.MappingNode, path) {
			w.mapping(n, t, path)
		}
	case reflect.Map:
		if !w.want(n, yaml.MappingNode, path) {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			w.walk(n.Content[i+1], t.Elem(), mapKeyPath(path, k))
		}
		w.duplicates(n, path)
	case reflect.Slice, reflect.Array:
		if !w.want(n, yaml.SequenceNode, path) {
			return
		}
		for i, item := range n.Content {
			w.walk(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Interface:
		return // anything goes
	default:
		w.scalar(n, t, path)
	}
}

// want reports whether n is of kind k, else records what was expected.
func (w *walker) want(n *yaml.Node, k yaml.Kind, path string) bool {
	if n.Kind == k {
		return true
	}
	what := map[yaml.Kind]string{yaml.MappingNode: "a mapping of keys", yaml.SequenceNode: "a list"}[k]
	if n.Kind == yaml.ScalarNode {
		hint := ""
		if k == yaml.SequenceNode && !isSecret(path) {
			hint = fmt.Sprintf(" (write [%s])", n.Value)
		}
		w.fail(n, path, "%s is not %s%s", shown(path, n.Value), what, hint)
		return false
	}
	w.fail(n, path, "want %s, not %s", what, kindName(n.Kind))
	return false
}

// mapping checks the keys of a struct's mapping and walks their values.
func (w *walker) mapping(n *yaml.Node, t reflect.Type, path string) {
	fields := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Value == "<<" && k.Tag == "!!merge" {
			w.merge(v, t, path)
			continue
		}
		key := join(path, k.Value)
		ft, ok := fields[k.Value]
		if !ok {
			w.fail(k, key, "unknown key%s", suggest(k.Value, path, t))
			continue
		}
		w.walk(v, ft, key)
	}
	w.duplicates(n, path)
}

// merge walks the mapping(s) a "<<" key merges into a struct.
func (w *walker) merge(v *yaml.Node, t reflect.Type, path string) {
	for v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	if v.Kind == yaml.SequenceNode {
		for _, m := range v.Content {
			w.merge(m, t, path)
		}
		return
	}
	w.walk(v, t, path)
}

// duplicates reports a key set twice in one mapping.
func (w *walker) duplicates(n *yaml.Node, path string) {
	first := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Value == "<<" && k.Tag == "!!merge" {
			continue
		}
		if line, ok := first[k.Value]; ok {
			w.fail(k, join(path, k.Value), "set twice (first at line %d)", line)
			continue
		}
		first[k.Value] = k.Line
	}
}

// scalar checks a value for a string, number, boolean or duration field.
func (w *walker) scalar(n *yaml.Node, t reflect.Type, path string) {
	want := scalarWant(t)
	if n.Kind != yaml.ScalarNode {
		w.fail(n, path, "want %s, not %s", want, kindName(n.Kind))
		return
	}
	v := shown(path, n.Value)
	isInt := t != durationType && t.Kind() >= reflect.Int && t.Kind() <= reflect.Uintptr
	if isInt && n.Tag != "!!int" {
		// yaml.v3 would truncate 1.5 into 1: refuse it.
		if n.Tag == "!!float" {
			w.fail(n, path, "%s is not a whole number (want %s)", v, want)
		} else {
			w.fail(n, path, "%s is not a number (want %s)", v, want)
		}
		return
	}
	if err := n.Decode(reflect.New(t).Interface()); err == nil {
		return
	}
	switch {
	case t == durationType:
		w.fail(n, path, "%s is not a duration (want a number with a unit: 500ms, 30s, 5m)", v)
	case isInt && strings.HasPrefix(n.Value, "-") && t.Kind() >= reflect.Uint:
		w.fail(n, path, "%s is negative (want %s)", v, want)
	case isInt:
		w.fail(n, path, "%s is out of range (want %s)", v, want)
	default:
		w.fail(n, path, "%s is not %s", v, want)
	}
}

// scalarWant names what a field of type t accepts.
func scalarWant(t reflect.Type) string {
	if t == durationType {
		return "a duration such as 500ms or 30s"
	}
	switch k := t.Kind(); {
	case k == reflect.Bool:
		return "a boolean (true or false)"
	case k >= reflect.Int && k <= reflect.Int64:
		return fmt.Sprintf("an integer from %d to %d", int64(-1)<<(t.Bits()-1), int64(1)<<(t.Bits()-1)-1)
	case k >= reflect.Uint && k <= reflect.Uintptr:
		if t.Bits() == 64 {
			return "an unsigned integer"
		}
		return fmt.Sprintf("an unsigned integer up to %d", uint64(math.MaxUint64)>>(64-t.Bits()))
	case k == reflect.Float32 || k == reflect.Float64:
		return "a number"
	case k == reflect.String:
		return "a string"
	}
	return t.String()
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return "a single value"
}

// yamlFields maps the keys of struct t to their field types, as yaml.v3
// reads them: the tag's name, or the lower-cased field name; ",inline"
// structs contribute their keys.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		parts := strings.Split(sf.Tag.Get("yaml"), ",")
		if parts[0] == "-" || !sf.IsExported() {
			continue
		}
		if len(parts) > 1 && parts[1] == "inline" && sf.Type.Kind() == reflect.Struct {
			for k, ft := range yamlFields(sf.Type) {
				out[k] = ft
			}
			continue
		}
		name := parts[0]
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		out[name] = sf.Type
	}
	return out
}

// suggest says which key was probably meant by the unknown key: a sibling
// at a small edit distance, or the same key one level down (a key indented
// at the wrong level: source.tables for source.mysql.tables). Without
// either it lists the keys allowed here.
func suggest(key, path string, t reflect.Type) string {
	fields := yamlFields(t)
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	best, bestD := "", math.MaxInt
	for _, k := range names {
		if d := editDistance(norm(key), norm(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if bestD <= max(1, min(3, len(key)/3)) {
		return fmt.Sprintf(" (did you mean %s?)", best)
	}
	var below []string
	for _, k := range names {
		ft := fields[k]
		if ft.Kind() == reflect.Struct && ft != durationType {
			if _, ok := yamlFields(ft)[key]; ok {
				below = append(below, join(join(path, k), key))
			}
		}
	}
	if len(below) > 0 {
		return fmt.Sprintf(" (did you mean %s?)", strings.Join(below, " or "))
	}
	return fmt.Sprintf(" (known keys here: %s)", strings.Join(names, ", "))
}

// editDistance is the optimal-string-alignment distance: insertions,
// deletions, substitutions and swaps of neighbours each cost 1.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

// isSecret reports whether the key at path holds a secret, whose value no
// message may show.
func isSecret(path string) bool {
	last := strings.ToLower(path[strings.LastIndexAny(path, ".[")+1:])
	for _, s := range []string{"password", "token", "dsn"} {
		if strings.HasSuffix(last, s) {
			return true
		}
	}
	return false
}

// shown is a value as messages print it: quoted and shortened, or, for a
// secret, not at all.
func shown(path, v string) string {
	if isSecret(path) {
		return "the value (not shown: a secret)"
	}
	if r := []rune(v); len(r) > 40 {
		v = string(r[:40]) + "…"
	}
	return strconv.Quote(v)
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapKeyPath names an entry of a map keyed by user data (outbox.tables
// is keyed by table names, which contain dots).
func mapKeyPath(path, key string) string {
	return fmt.Sprintf("%s[%s]", path, strconv.Quote(key))
}

func orTop(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}
