// Command outboxrelay relays transactional outbox rows from a database's
// replication log to Kafka. See `outboxrelay help` and docs/.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/outboxrelay/outboxrelay/internal/cli"
)

func main() {
	ctx, stop := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first SIGTERM/SIGINT stops the relay gracefully: it stops
		// reading, waits up to relay.shutdown_timeout for Kafka to
		// acknowledge what is in flight and writes the final checkpoint.
		<-sigs
		stop()
		// A second one exits at once. The checkpoint is still consistent:
		// it only ever records acknowledged work, and each write replaces
		// the file atomically; records in flight are sent again on the
		// next start (at-least-once).
		s := <-sigs
		fmt.Fprintf(os.Stderr, "outboxrelay: second %v: exiting now without waiting for in-flight records; they will be sent again after the checkpoint on the next start\n", s)
		code := 1
		if n, ok := s.(syscall.Signal); ok {
			code = 128 + int(n)
		}
		os.Exit(code)
	}()
	code := cli.Stdio(ctx)
	stop()
	os.Exit(code)
}
