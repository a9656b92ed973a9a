package e2e

import (
	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/source/kinds"
)

// compareFor orders positions of a source kind as the kind itself does.
func compareFor(kind string) func(a, b string) (int, error) {
	src, err := (&kinds.Config{Type: kind}).New(zerolog.Nop())
	if err != nil {
		panic(err)
	}
	return src.Compare
}

var (
	mysqlCompare    = compareFor("mysql")
	postgresCompare = compareFor("postgres")
)
