package inbox

import (
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/IBM/sarama"
)

// Header names outboxrelay writes on every record. They match the relay's
// own (internal/outbox HeaderID, HeaderType, HeaderPosition, HeaderIndex);
// they are copied rather than imported because a consumer must not depend
// on the relay's internals.
const (
	HeaderID       = "id"                   // the outbox event id
	HeaderType     = "type"                 // the event type
	HeaderPosition = "outboxrelay-position" // the source-log position of the event's transaction
	HeaderIndex    = "outboxrelay-index"    // the event's index within its transaction (decimal)
)

// maxIDLen bounds event ids and aggregate keys: both are primary-key
// columns of 255 bytes (VARBINARY(255) on MySQL, where a longer key would
// be truncated, not refused).
const maxIDLen = 255

// Event is a record as the inbox sees it, handed to Func.
type Event struct {
	ID        string // header "id"
	Type      string // header "type" ("" when absent)
	Aggregate []byte // the record key: the outbox row's aggregate id
	// Version is the record's place in its source log; HasVersion is
	// false when the position headers are absent.
	Version    Version
	HasVersion bool
	Message    *sarama.ConsumerMessage // the record itself
}

// ParseEvent reads the outboxrelay headers of msg. A missing or unusable
// event id is an error wrapping ErrBadRecord: without it nothing can be
// deduplicated. Position headers are read but only checked when the
// version check needs them.
func ParseEvent(msg *sarama.ConsumerMessage) (Event, error) {
	ev := Event{Aggregate: msg.Key, Message: msg}
	var pos, idx []byte
	var havePos, haveIdx, haveID, haveType bool
	for _, h := range msg.Headers {
		if h == nil {
			continue
		}
		// The first header of a name wins, as the relay writes each once.
		switch string(h.Key) {
		case HeaderID:
			if !haveID {
				ev.ID, haveID = string(h.Value), true
			}
		case HeaderType:
			if !haveType {
				ev.Type, haveType = string(h.Value), true
			}
		case HeaderPosition:
			if !havePos {
				pos, havePos = h.Value, true
			}
		case HeaderIndex:
			if !haveIdx {
				idx, haveIdx = h.Value, true
			}
		}
	}
	switch {
	case !haveID || ev.ID == "":
		return ev, badRecord(msg, "no %q header (not a record of outboxrelay?)", HeaderID)
	case len(ev.ID) > maxIDLen:
		return ev, badRecord(msg, "event id is %d bytes, longer than %d", len(ev.ID), maxIDLen)
	case !utf8.ValidString(ev.ID) || containsNUL(ev.ID):
		// Postgres text refuses both; refusing them everywhere keeps the
		// two dialects alike.
		return ev, badRecord(msg, "event id %q is not UTF-8 text", ev.ID)
	}
	if havePos && haveIdx {
		i, err := strconv.ParseInt(string(idx), 10, 64)
		if err != nil || i < 0 {
			return ev, badRecord(msg, "header %s %q is not a non-negative decimal", HeaderIndex, idx)
		}
		ev.Version, ev.HasVersion = Version{Position: string(pos), Index: i}, true
	}
	return ev, nil
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

func badRecord(msg *sarama.ConsumerMessage, format string, args ...any) error {
	return &RecordError{Topic: msg.Topic, Partition: msg.Partition, Offset: msg.Offset, Reason: fmt.Sprintf(format, args...)}
}
