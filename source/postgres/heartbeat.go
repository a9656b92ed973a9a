package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
)

// heartbeat emits a non-transactional logical message every interval on a
// normal connection, so that the slot's stream sees WAL (and the relay can
// move its flush position) even when the database is idle. Failures are
// logged once per outage; the stream itself is what the relay depends on.
func heartbeat(ctx context.Context, cfg *pgx.ConnConfig, every time.Duration, log zerolog.Logger) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = conn.Close(cctx)
			cancel()
		}
	}()
	failing := false
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		err := func() error {
			if conn == nil {
				c, err := pgx.ConnectConfig(ctx, cfg)
				if err != nil {
					return err
				}
				conn = c
			}
			_, err := conn.Exec(ctx, "SELECT pg_logical_emit_message(false, '"+HeartbeatPrefix+"', now()::text)")
			return err
		}()
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing {
				log.Warn().Err(err).Msg("heartbeat failed; retrying on the next interval")
				failing = true
			}
			if conn != nil {
				_ = conn.Close(ctx)
				conn = nil
			}
		case err == nil && failing:
			log.Info().Msg("heartbeat recovered")
			failing = false
		}
	}
}
