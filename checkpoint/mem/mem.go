// Package mem is a checkpoint store in memory: the checkpoint of a replay,
// which must never touch the relay's, and of tests. It keeps nothing
// across processes.
package mem

import (
	"context"
	"sync"

	"github.com/outboxrelay/outboxrelay/checkpoint"
)

// Store keeps one checkpoint in memory. The zero value holds none.
type Store struct {
	mu sync.Mutex
	cp *checkpoint.Checkpoint
}

// At returns a store holding cp.
func At(cp checkpoint.Checkpoint) *Store { return &Store{cp: &cp} }

// Load implements checkpoint.Store.
func (s *Store) Load(context.Context) (checkpoint.Checkpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cp == nil {
		return checkpoint.Checkpoint{}, checkpoint.ErrNotFound
	}
	return *s.cp, nil
}

// Save implements checkpoint.Store.
func (s *Store) Save(_ context.Context, cp checkpoint.Checkpoint) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cp = &cp
	return nil
}

// Close implements checkpoint.Store.
func (s *Store) Close() error { return nil }

var _ checkpoint.Store = (*Store)(nil)
