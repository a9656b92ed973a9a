package mem

import (
	"context"
	"errors"
	"testing"

	"github.com/outboxrelay/outboxrelay/checkpoint"
)

func TestStore(t *testing.T) {
	t.Parallel()
	var s Store
	if _, err := s.Load(context.Background()); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("empty store: %v", err)
	}
	if err := s.Save(context.Background(), checkpoint.Checkpoint{Source: "x", Position: "1"}); err != nil {
		t.Fatal(err)
	}
	if cp, err := s.Load(context.Background()); err != nil || cp.Position != "1" {
		t.Fatalf("Load = %+v, %v", cp, err)
	}
	if cp, _ := At(checkpoint.Checkpoint{Position: "7"}).Load(context.Background()); cp.Position != "7" {
		t.Fatalf("At: %+v", cp)
	}
}
