package kinds

import (
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestKinds(t *testing.T) {
	t.Parallel()
	if got := strings.Join(Kinds(), ","); got != "mysql,postgres" {
		t.Fatalf("Kinds() = %s", got)
	}
	for _, kind := range Kinds() {
		c := &Config{Type: kind}
		src, err := c.New(zerolog.Nop())
		if err != nil || src.Kind() != kind {
			t.Errorf("%s: New = %v, %v", kind, src, err)
		}
	}
	for _, tt := range []struct{ typ, want string }{{"", "type: required (mysql or postgres)"}, {"oracle", `type: "oracle" is not one of mysql, postgres`}} {
		if err := (&Config{Type: tt.typ}).Validate(); err == nil || err.Error() != tt.want {
			t.Errorf("Validate(type %q) = %v, want %q", tt.typ, err, tt.want)
		}
	}
	if err := (&Config{Type: "mysql"}).Validate(); err == nil || !strings.Contains(err.Error(), "mysql.server_id: required") {
		t.Errorf("the selected section's errors name their key below source: %v", err)
	}
}

func TestCompare(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		a, b string
		want int
		ok   bool
	}{
		{"binlog.000002:4", "binlog.000001:900", 1, true},
		{"binlog.000001:4@0-1-5", "binlog.000001:4+3", -1, true},
		{"0/16B3748", "0/16B3800", -1, true},
		{"1/0", "0/FFFFFFFF", 1, true},
		{"binlog.000001:4", "0/16B3748", 0, false},
		{"nonsense", "0/1", 0, false},
	} {
		got, err := Compare(tt.a, tt.b)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("Compare(%q, %q) = %d, %v; want %d (ok %v)", tt.a, tt.b, got, err, tt.want, tt.ok)
		}
	}
}
