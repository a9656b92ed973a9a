//go:build !failpoints

// Package failpoint lets the crash tests kill the relay at chosen points:
// after a record is handed to the producer but before Kafka acknowledged
// it, after acknowledgements but before the checkpoint is saved, and right
// after a checkpoint was saved. It is compiled in only with the build tag
// `failpoints`; release builds get these empty functions, which the
// compiler removes.
package failpoint

// Inject may kill the process at the named point (build tag failpoints).
func Inject(string) {}

// Enabled reports whether failpoints are compiled in.
const Enabled = false
