// Package preflight is the shared vocabulary of `outboxrelay check`: one
// Check per thing an operator must get right before the relay can stream,
// each with what was found and the exact fix. The checks themselves live
// next to the code that depends on them (source/mysql, source/postgres,
// sink/kafka); this package must not know any database or broker.
package preflight

import "fmt"

// Check is the outcome of one preflight check.
type Check struct {
	// Name is stable, for machines: "mysql.binlog_row_image".
	Name string `json:"name"`
	// OK is false when the relay cannot work (or will stop) as things are.
	OK bool `json:"ok"`
	// Warning marks an OK check that still deserves attention (e.g. WAL
	// retention without a limit). It never fails the check command.
	Warning bool `json:"warning,omitempty"`
	// Detail says what was found.
	Detail string `json:"detail"`
	// Fix is the exact change to make (SQL, a setting, a command) when the
	// check failed or warns.
	Fix string `json:"fix,omitempty"`
}

// Pass returns a passing check.
func Pass(name, format string, args ...any) Check {
	return Check{Name: name, OK: true, Detail: fmt.Sprintf(format, args...)}
}

// Fail returns a failing check with its fix.
func Fail(name, detail, fix string) Check {
	return Check{Name: name, Detail: detail, Fix: fix}
}

// Warn returns a passing check that deserves attention.
func Warn(name, detail, fix string) Check {
	return Check{Name: name, OK: true, Warning: true, Detail: detail, Fix: fix}
}

// AllOK reports whether every check passed.
func AllOK(checks []Check) bool {
	for _, c := range checks {
		if !c.OK {
			return false
		}
	}
	return true
}
