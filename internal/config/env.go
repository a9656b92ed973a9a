package config

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

var (
	durationType  = reflect.TypeOf(time.Duration(0))
	pipelinesType = reflect.TypeOf([]Pipeline(nil))
)

// applyEnv sets each config key named by an OUTBOXRELAY_* variable. The
// names come from the yaml keys, joined by "_" and upper-cased; a variable
// that names no key is an error, so a typo cannot go unnoticed.
func applyEnv(c *Config, environ []string) error {
	fields := map[string]reflect.Value{}
	keys := map[string]string{}
	collect(reflect.ValueOf(c).Elem(), "", fields, keys)
	var unknown []string
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) {
			continue
		}
		f, ok := fields[name]
		if !ok {
			unknown = append(unknown, name)
			continue
		}
		if err := set(f, val); err != nil {
			// The value may be a secret: name the key, not the value.
			return fmt.Errorf("%s (%s): %w", keys[name], name, err)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("unknown environment variable(s) %s: no such config key (see docs/configuration.md)", strings.Join(unknown, ", "))
	}
	return nil
}

// EnvNames lists every key with its environment variable, for the docs.
func EnvNames() map[string]string {
	var c Config
	fields := map[string]reflect.Value{}
	keys := map[string]string{}
	collect(reflect.ValueOf(&c).Elem(), "", fields, keys)
	out := make(map[string]string, len(keys))
	for env, key := range keys {
		out[key] = env
	}
	return out
}

func collect(v reflect.Value, path string, fields map[string]reflect.Value, keys map[string]string) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		parts := strings.Split(sf.Tag.Get("yaml"), ",")
		tag := parts[0]
		if len(parts) > 1 && parts[1] == "inline" && sf.Type.Kind() == reflect.Struct {
			collect(v.Field(i), path, fields, keys)
			continue
		}
		if tag == "" || tag == "-" || !sf.IsExported() {
			continue
		}
		key := tag
		if path != "" {
			key = path + "." + tag
		}
		fv := v.Field(i)
		// The pipelines have no environment overrides (their items have
		// no key of their own to derive a variable from).
		if fv.Type() == pipelinesType {
			continue
		}
		if fv.Kind() == reflect.Struct && fv.Type() != durationType {
			collect(fv, key, fields, keys)
			continue
		}
		env := EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		fields[env] = fv
		keys[env] = key
	}
}

func set(f reflect.Value, s string) error {
	if f.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("not a duration (e.g. 500ms, 30s)")
		}
		f.SetInt(int64(d))
		return nil
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(s)
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, err := strconv.ParseInt(s, 10, f.Type().Bits())
		if err != nil {
			return fmt.Errorf("not an integer")
		}
		f.SetInt(n)
	case reflect.Uint, reflect.Uint64, reflect.Uint32, reflect.Uint16:
		n, err := strconv.ParseUint(s, 10, f.Type().Bits())
		if err != nil {
			return fmt.Errorf("not a non-negative integer")
		}
		f.SetUint(n)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("not a boolean")
		}
		f.SetBool(b)
	case reflect.Slice:
		if f.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported list type")
		}
		var items []string
		for _, it := range strings.Split(s, ",") {
			if it = strings.TrimSpace(it); it != "" {
				items = append(items, it)
			}
		}
		f.Set(reflect.ValueOf(items))
	default:
		return fmt.Errorf("unsupported type %s", f.Type())
	}
	return nil
}
