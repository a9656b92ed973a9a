// Package kinds lists the kinds of source the relay is built with and
// composes their configuration sections; source.type selects one. It is
// the one place besides the kinds' own packages that knows them: the
// configuration, the commands and the metrics ask it.
//
// Adding a kind (say, MongoDB change streams) is a package under source/
// implementing source.Config and source.Source, and one field here.
package kinds

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/rs/zerolog"

	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/mysql"
	"github.com/outboxrelay/outboxrelay/source/postgres"
)

// Config is the source section: the kind to read, and one section per
// kind (only the selected one is used).
type Config struct {
	// Type selects the source: "mysql" (MySQL and MariaDB) or "postgres".
	// Required.
	Type string `yaml:"type"`
	// One field per kind, named by its yaml key (= the kind's name).
	MySQL    mysql.Config    `yaml:"mysql"`
	Postgres postgres.Config `yaml:"postgres"`
}

// sections returns the kind sections of c by name, in field order.
func (c *Config) sections() ([]string, map[string]source.Config) {
	v := reflect.ValueOf(c).Elem()
	names := []string{}
	out := map[string]source.Config{}
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		sc, ok := f.Addr().Interface().(source.Config)
		if !ok {
			continue
		}
		name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ",")
		names = append(names, name)
		out[name] = sc
	}
	return names, out
}

// Kinds lists the kinds the relay is built with.
func Kinds() []string {
	names, _ := (&Config{}).sections()
	return names
}

// Selected returns the section of the selected kind.
func (c *Config) Selected() (source.Config, error) {
	names, secs := c.sections()
	if c.Type == "" {
		return nil, fmt.Errorf("type: required (%s)", strings.Join(names, " or "))
	}
	sc, ok := secs[c.Type]
	if !ok {
		return nil, fmt.Errorf("type: %q is not one of %s", c.Type, strings.Join(names, ", "))
	}
	return sc, nil
}

// SetDefaults fills the selected section's defaults.
func (c *Config) SetDefaults() {
	if sc, err := c.Selected(); err == nil {
		sc.SetDefaults()
	}
}

// Validate checks the type and the selected section, each error naming its
// key below source (e.g. "mysql.server_id: required").
func (c *Config) Validate() error {
	sc, err := c.Selected()
	if err != nil {
		return err
	}
	var errs []error
	if err := sc.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			errs = append(errs, fmt.Errorf("%s.%s", c.Type, line))
		}
	}
	return errors.Join(errs...)
}

// New returns the selected kind's source.
func (c *Config) New(log zerolog.Logger) (source.Source, error) {
	sc, err := c.Selected()
	if err != nil {
		return nil, fmt.Errorf("source.%w", err)
	}
	return sc.NewSource(log), nil
}

// OutboxTables lists the selected kind's outbox tables, for logs.
func (c *Config) OutboxTables() []string {
	if sc, err := c.Selected(); err == nil {
		return sc.OutboxTables()
	}
	return nil
}

// Compare orders two position texts of one source, whatever its kind: the
// text form of each kind's positions parses as that kind only, so the
// first kind that can compare both decides. It fails for positions of
// different kinds, or that no kind parses.
func Compare(a, b string) (int, error) {
	names, secs := (&Config{}).sections()
	var errs []error
	for _, name := range names {
		c, err := secs[name].NewSource(zerolog.Nop()).Compare(a, b)
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", name, err))
	}
	return 0, fmt.Errorf("positions %q and %q are not of one source kind: %w", a, b, errors.Join(errs...))
}
