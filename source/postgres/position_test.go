package postgres

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

func TestParsePosition(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    pglogrepl.LSN
		rows    int
		text    string // String() of the result; "" means in
		wantErr bool
	}{
		{in: "0/0", want: 0},
		{in: "16/B374D848", want: 0x16_B374D848},
		{in: "16/b374d848", want: 0x16_B374D848, text: "16/B374D848"},
		{in: "FFFFFFFF/FFFFFFFF", want: ^pglogrepl.LSN(0)},
		{in: " 0/1A ", want: 0x1A, text: "0/1A"},
		{in: "00000001/00000002", want: 1<<32 | 2, text: "1/2"},
		{in: "", wantErr: true},
		{in: "16", wantErr: true},
		{in: "16/", wantErr: true},
		{in: "/16", wantErr: true},
		{in: "1/2/3", wantErr: true},
		{in: "1/2x", wantErr: true},
		{in: "+1/2", wantErr: true},
		{in: "0x1/2", wantErr: true},
		{in: "1/-2", wantErr: true},
		{in: "100000000/0", wantErr: true},
		{in: "mysql-bin.000001:4", wantErr: true},
		{in: "16/B374D848+2048", want: 0x16_B374D848, rows: 2048},
		{in: "0/1a+1", want: 0x1A, rows: 1, text: "0/1A+1"},
		{in: "1/2+0", wantErr: true},
		{in: "1/2+", wantErr: true},
		{in: "1/2+x", wantErr: true},
		{in: "1/2+01", wantErr: true},
		{in: "1/2+-3", wantErr: true},
		{in: "1/2+3+4", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParsePosition(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParsePosition(%q) = %v, want error", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePosition(%q): %v", tt.in, err)
			}
			if got.Rows != tt.rows {
				t.Fatalf("ParsePosition(%q).Rows = %d, want %d", tt.in, got.Rows, tt.rows)
			}
			if got.LSN != tt.want {
				t.Fatalf("ParsePosition(%q) = %X, want %X", tt.in, uint64(got.LSN), uint64(tt.want))
			}
			text := tt.text
			if text == "" {
				text = tt.in
			}
			if got.String() != text {
				t.Fatalf("String() = %q, want %q", got.String(), text)
			}
		})
	}
}

func TestPositionCompare(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want int
	}{
		{"0/10", "0/10", 0},
		{"0/10", "0/11", -1},
		{"0/FFFFFFFF", "1/0", -1}, // the high half dominates
		{"2/0", "1/FFFFFFFF", 1},
		{"A/1", "9/1", 1}, // hex, not text order
		{"0/10+5", "0/10+5", 0},
		{"0/10", "0/10+1", -1},    // a boundary at L comes before rows of the transaction committing at L
		{"0/10+9", "0/10+10", -1}, // rows, not text order
		{"0/10+999", "0/11", -1},  // the LSN dominates
	}
	for _, tt := range tests {
		a, err := ParsePosition(tt.a)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParsePosition(tt.b)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.Compare(b); got != tt.want {
			t.Errorf("Compare(%s, %s) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := b.Compare(a); got != -tt.want {
			t.Errorf("Compare(%s, %s) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

func TestLSNOf(t *testing.T) {
	t.Parallel()
	p := Position{LSN: 0x1_00000010}
	for _, in := range []any{p, &p, stringer("1/10")} {
		got, err := lsnOf(in)
		if err != nil || got != p.LSN {
			t.Errorf("lsnOf(%#v) = %s, %v; want %s", in, got, err, p)
		}
	}
	if _, err := lsnOf(stringer("mysql-bin.000001:4")); err == nil {
		t.Error("lsnOf of a mysql position: want error")
	}
	if _, err := lsnOf(42); err == nil {
		t.Error("lsnOf(42): want error")
	}
}

type stringer string

func (s stringer) String() string { return string(s) }

func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "1/", "/", "x/y", " 1/2 ", "1/2/3", "+1/2", "1/2+3", "1/2+0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePosition(s)
		if err != nil {
			return
		}
		q, err := ParsePosition(p.String())
		if err != nil {
			t.Fatalf("re-parse of %q (from %q): %v", p.String(), s, err)
		}
		if p != q || p.Compare(q) != 0 {
			t.Fatalf("round trip of %q: %v != %v", s, p, q)
		}
		// The text form is Postgres's own: pglogrepl reads it back.
		if l, err := pglogrepl.ParseLSN(p.String()); err != nil || l != p.LSN {
			t.Fatalf("pglogrepl.ParseLSN(%q) = %v, %v", p.String(), l, err)
		}
	})
}
