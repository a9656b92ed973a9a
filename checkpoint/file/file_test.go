package file

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outboxrelay/outboxrelay/checkpoint"
)

func TestStoreRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cp.json")
	s, err := New(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Load on empty: %v, want ErrNotFound", err)
	}
	for _, pos := range []string{"mysql-bin.000001:4", "mysql-bin.000002:1200@0-1-9"} {
		want := checkpoint.Checkpoint{Source: "mysql", Position: pos, UpdatedAt: time.Now().UTC().Truncate(time.Second)}
		if err := s.Save(ctx, want); err != nil {
			t.Fatal(err)
		}
		got, err := s.Load(ctx)
		if err != nil || got.Position != want.Position || got.Source != want.Source || !got.UpdatedAt.Equal(want.UpdatedAt) {
			t.Fatalf("Load = %+v, %v; want %+v", got, err, want)
		}
	}
	// No temp files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("dir has %d entries, want only the checkpoint", len(entries))
	}
}

func TestStoreCorrupt(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cp.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, _ := New(Config{Path: path})
	_, err := s.Load(context.Background())
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Load of corrupt file: %v", err)
	}
}

func TestLockIsExclusive(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "cp.json")
	a, _ := New(Config{Path: path})
	b, _ := New(Config{Path: path})
	unlock, err := a.Lock()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Lock(); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "locked by process") {
		t.Fatalf("second Lock: %v, want ErrLocked naming the holder", err)
	}
	unlock()
	unlock2, err := b.Lock()
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlock2()
}
