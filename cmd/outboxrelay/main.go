// Command outboxrelay relays transactional outbox rows from a database's
// replication log to Kafka. See `outboxrelay help` and docs/.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/outboxrelay/outboxrelay/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Stdio(ctx)
	stop()
	os.Exit(code)
}
