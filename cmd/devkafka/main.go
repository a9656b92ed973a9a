// Command devkafka runs a development Kafka broker (franz-go's kfake, through
// internal/devbroker) and dumps what was published to it, for local runs and
// CI scripts. It is a development tool: never ship it with the relay.
//
//	devkafka serve   [--listen 127.0.0.1:9092] [--partitions 3] [--topic T]...
//	                 [--tls-cert FILE --tls-key FILE] [--sasl MECHANISM:USER:PASSWORD]...
//	devkafka consume [--brokers 127.0.0.1:9092] [--topics REGEX] [--idle 2s] [--max N]
//
// serve prints "devkafka listening on ADDR" once clients can connect and runs
// until SIGINT or SIGTERM. consume prints one line per record (see
// devbroker.Record.String) on stdout, in offset order per partition, and exits
// once no record arrived for --idle or after --max records; its summary goes
// to stderr so stdout stays machine-friendly.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/outboxrelay/outboxrelay/internal/devbroker"
)

const usage = `usage:
  devkafka serve   [--listen 127.0.0.1:9092] [--partitions 3] [--topic T]...
                   [--tls-cert FILE --tls-key FILE] [--sasl MECHANISM:USER:PASSWORD]...
  devkafka consume [--brokers 127.0.0.1:9092] [--topics REGEX] [--idle 2s] [--max N]
`

// errUsage marks mistakes on the command line, which exit with status 2.
var errUsage = errors.New("usage")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "devkafka:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], stdout, stderr)
	case "consume":
		return consume(ctx, args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "devkafka: unknown command %q\n%s", args[0], usage)
		return errUsage
	}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("devkafka "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse reports flag mistakes as errUsage; flag has already explained them.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %q\n", fs.Args())
		fs.Usage()
		return errUsage
	}
	return nil
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	listen := fs.String("listen", "127.0.0.1:9092", "host:port to listen on; port 0 picks a free one")
	partitions := fs.Int("partitions", 3, "partitions of seeded and auto-created topics")
	var topics []string
	fs.Func("topic", "topic to create at start (repeatable)", func(s string) error {
		topics = append(topics, s)
		return nil
	})
	sec := securityFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	opts := devbroker.Options{Addr: *listen, Partitions: *partitions, Topics: topics}
	if err := sec.apply(&opts); err != nil {
		return err
	}

	b, err := devbroker.Start(opts)
	if err != nil {
		return err
	}
	defer b.Close()
	// Scripts wait for this exact line before starting clients.
	fmt.Fprintf(stdout, "devkafka listening on %s\n", b.Addr())
	<-ctx.Done()
	return nil
}

func consume(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("consume", stderr)
	brokers := fs.String("brokers", "127.0.0.1:9092", "comma-separated bootstrap brokers")
	topics := fs.String("topics", ".", "regular expression selecting topics; matches anywhere, anchor with ^…$")
	idle := fs.Duration("idle", 2*time.Second, "exit once no record arrived for this long")
	maxRecords := fs.Int("max", 0, "exit after this many records (0: no limit)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *maxRecords < 0 {
		fmt.Fprintln(stderr, "--max must not be negative")
		return errUsage
	}

	n := 0
	err := devbroker.ConsumeUntilIdle(ctx, splitList(*brokers), *topics, *idle, func(r devbroker.Record) error {
		if _, err := fmt.Fprintln(stdout, r.String()); err != nil {
			return fmt.Errorf("write record: %w", err)
		}
		n++
		if *maxRecords > 0 && n >= *maxRecords {
			return devbroker.ErrStop
		}
		return nil
	})
	fmt.Fprintf(stderr, "devkafka: consumed %d records\n", n)
	// Interrupting a dump is a normal way to end it.
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
