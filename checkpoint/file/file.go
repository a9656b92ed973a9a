// Package file stores the checkpoint in a local JSON file, replaced
// atomically (temp file, fsync, rename, fsync of the directory) so that a
// crash at any moment leaves either the old or the new checkpoint.
package file

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/outboxrelay/outboxrelay/checkpoint"
)

// Config of the file store.
type Config struct {
	// Path of the checkpoint file. Its directory must exist and be writable.
	Path string `yaml:"path"`
}

// Validate names the field at fault.
func (c Config) Validate() error {
	if c.Path == "" {
		return errors.New("path: required")
	}
	return nil
}

// Store is a checkpoint.Store on the local file system.
type Store struct {
	path string
}

// New returns a store for cfg.Path. It does not touch the file yet.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Store{path: cfg.Path}, nil
}

// Load reads the checkpoint; checkpoint.ErrNotFound if the file is absent.
func (s *Store) Load(context.Context) (checkpoint.Checkpoint, error) {
	var cp checkpoint.Checkpoint
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return cp, checkpoint.ErrNotFound
	}
	if err != nil {
		return cp, checkpoint.Permanent(fmt.Errorf("read checkpoint: %w", err))
	}
	if err := json.Unmarshal(b, &cp); err != nil {
		return cp, checkpoint.Permanent(fmt.Errorf("checkpoint file %s is corrupt (%v): restore it from a backup or set a position with `outboxrelay checkpoint set`", s.path, err))
	}
	if cp.Source == "" || cp.Position == "" {
		return cp, checkpoint.Permanent(fmt.Errorf("checkpoint file %s lacks source or position", s.path))
	}
	return cp, nil
}

// Save writes cp atomically and durably.
func (s *Store) Save(_ context.Context, cp checkpoint.Checkpoint) error {
	b, err := json.MarshalIndent(cp, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, filepath.Base(s.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("save checkpoint: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save checkpoint: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	// The rename is durable only once the directory entry is.
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("save checkpoint: open dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("save checkpoint: fsync dir: %w", err)
	}
	return nil
}

// Close releases nothing; it exists to satisfy checkpoint.Store.
func (s *Store) Close() error { return nil }
