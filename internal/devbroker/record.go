package devbroker

import (
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Record is one consumed Kafka record. Key and Value are nil for null.
type Record struct {
	Topic     string
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	// Headers keep their order and duplicates, as on the wire.
	Headers   []Header
	Timestamp time.Time
}

// Header is one record header.
type Header struct {
	Key   string
	Value string
}

func newRecord(r *kgo.Record) Record {
	rec := Record{
		Topic:     r.Topic,
		Partition: r.Partition,
		Offset:    r.Offset,
		Key:       r.Key,
		Value:     r.Value,
		Timestamp: r.Timestamp,
	}
	if len(r.Headers) > 0 {
		rec.Headers = make([]Header, len(r.Headers))
		for i, h := range r.Headers {
			rec.Headers[i] = Header{Key: h.Key, Value: string(h.Value)}
		}
	}
	return rec
}

// Header returns the value of the first header named key.
func (r Record) Header(key string) (string, bool) {
	for _, h := range r.Headers {
		if h.Key == key {
			return h.Value, true
		}
	}
	return "", false
}

// String renders the record on one line for people and grep:
//
//	topic=t partition=0 offset=3 key=k headers={id=1, type=created} value={"a": 1}
//
// Keys and headers that would be ambiguous (spaces, separators, non-UTF-8)
// are Go-quoted; the value, being last, only when it is not printable text.
// Null keys and values print as <null>.
func (r Record) String() string {
	var b strings.Builder
	b.WriteString("topic=")
	b.WriteString(token(r.Topic))
	b.WriteString(" partition=")
	b.WriteString(strconv.FormatInt(int64(r.Partition), 10))
	b.WriteString(" offset=")
	b.WriteString(strconv.FormatInt(r.Offset, 10))
	b.WriteString(" key=")
	if r.Key == nil {
		b.WriteString("<null>")
	} else {
		b.WriteString(token(string(r.Key)))
	}
	b.WriteString(" headers={")
	for i, h := range r.Headers {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(token(h.Key))
		b.WriteByte('=')
		b.WriteString(token(h.Value))
	}
	b.WriteString("} value=")
	switch {
	case r.Value == nil:
		b.WriteString("<null>")
	case printable(string(r.Value)) && string(r.Value) != "<null>":
		b.Write(r.Value)
	default:
		b.WriteString(strconv.Quote(string(r.Value)))
	}
	return b.String()
}

// token returns s bare when it cannot be mistaken for a separator or for
// <null>, quoted otherwise.
func token(s string) string {
	if s != "" && s != "<null>" && printable(s) && !strings.ContainsFunc(s, func(c rune) bool {
		return unicode.IsSpace(c) || strings.ContainsRune(`=,{}"`, c)
	}) {
		return s
	}
	return strconv.Quote(s)
}

// printable reports whether s is valid UTF-8 without control characters, so
// printing it verbatim cannot break the line or the terminal.
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(c rune) bool {
		return unicode.IsControl(c) || c == utf8.RuneError
	})
}
