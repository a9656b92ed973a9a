package mysql

import (
	"reflect"
	"testing"
)

func TestParsePosition(t *testing.T) {
	t.Parallel()
	xa := []PreparedXA{{XID: "7831..1", File: "mysql-bin.000003", Offset: 999}}
	tests := []struct {
		in      string
		want    Position
		wantErr bool
	}{
		{in: "mysql-bin.000003:1234", want: Position{File: "mysql-bin.000003", Offset: 1234}},
		{in: "mysql-bin.000003:4@0-1-55", want: Position{File: "mysql-bin.000003", Offset: 4, gtid: "0-1-55"}},
		{in: "binlog.000001:157@3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5,ab:1",
			want: Position{File: "binlog.000001", Offset: 157, gtid: "3E11FA47-71CA-11E1-9E33-C80AA9429562:1-5,ab:1"}},
		{in: "binlog.000001:157@3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:tag_a:1-3",
			want: Position{File: "binlog.000001", Offset: 157, gtid: "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:tag_a:1-3"}},
		{in: "@0-1-55,1-2-7", want: Position{gtid: "0-1-55,1-2-7"}},
		{in: "mysql-bin.000003:1234+2048", want: Position{File: "mysql-bin.000003", Offset: 1234, Rows: 2048}},
		{in: "mysql-bin.000003:1234@0-1-55+7", want: Position{File: "mysql-bin.000003", Offset: 1234, Rows: 7, gtid: "0-1-55"}},
		{in: "mysql-bin.000003:1234@0-1-55;xa=7831..1@mysql-bin.000003:999", want: Position{File: "mysql-bin.000003", Offset: 1234, gtid: "0-1-55", XA: xa}},
		{in: "my+bin.000003:12", want: Position{File: "my+bin.000003", Offset: 12}},
		{in: "", wantErr: true},
		{in: "mysql-bin.000003", wantErr: true},
		{in: "mysql-bin.000003:", wantErr: true},
		{in: ":12", wantErr: true},
		{in: "mysql-bin.000003:-1", wantErr: true},
		{in: "mysql-bin.000003:99999999999", wantErr: true},
		{in: "mysql-bin:12", wantErr: true},
		{in: "mysql-bin.x:12", wantErr: true},
		{in: "mysql-bin.000003:12@", wantErr: true},
		{in: "mysql-bin.000003:12+0", wantErr: true},
		{in: "mysql-bin.000003:12+x", wantErr: true},
		{in: "@0-1-5+3", wantErr: true},
		{in: "mysql-bin.000003:12;xa=zz..1@mysql-bin.000003:4", wantErr: true},
		{in: "mysql-bin.000003:12;xa=78..1", wantErr: true},
		{in: "mysql-bin.000003:12;", wantErr: true},
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
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParsePosition(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
			if got.String() != tt.in {
				t.Fatalf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}

func TestPositionCompare(t *testing.T) {
	t.Parallel()
	p := func(s string) Position {
		x, err := ParsePosition(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	tests := []struct {
		a, b string
		want int
	}{
		{"b.000001:4", "b.000001:4", 0},
		{"b.000001:4", "b.000001:5", -1},
		{"b.000002:4", "b.000001:900", 1},
		{"b.000009:4", "b.000010:4", -1},
		{"b.999999:4", "b.1000000:4", -1},  // sequence numbers grow past six digits
		{"b.000001:4+3", "b.000001:4", 1},  // inside the transaction at 4
		{"b.000001:4+3", "b.000001:5", -1}, // before its end
		{"b.000001:4+3", "b.000001:4+9", -1},
	}
	for _, tt := range tests {
		got, err := p(tt.a).Compare(p(tt.b))
		if err != nil || got != tt.want {
			t.Errorf("Compare(%s, %s) = %d, %v; want %d", tt.a, tt.b, got, err, tt.want)
		}
	}
	if g, err := ParsePosition("gtid:0-1-5"); err != nil || g.GTID() != "0-1-5" || g.String() != "@0-1-5" {
		t.Errorf("gtid: form: %#v, %v", g, err)
	}
	if _, err := p("a.000001:4").Compare(p("b.000001:4")); err == nil {
		t.Error("Compare across binlog names: want error")
	}
}

func TestGTIDSnapshots(t *testing.T) {
	t.Parallel()
	s, err := newGTIDState("mariadb", "0-1-5")
	if err != nil {
		t.Fatal(err)
	}
	first := s.snapshot()
	for i := int64(6); i < 6+2*rebaseEvery+3; i++ {
		g := gtidAdd{}
		g.maria.DomainID, g.maria.ServerID, g.maria.SequenceNumber = 0, 1, uint64(i)
		if err := s.add(g); err != nil {
			t.Fatal(err)
		}
		if i == 10 {
			if got := s.snapshot().String(); got != "0-1-10" {
				t.Fatalf("snapshot after 0-1-10 = %q", got)
			}
		}
	}
	if got := first.String(); got != "0-1-5" {
		t.Errorf("the first snapshot changed to %q after later additions", got)
	}
	if got, want := s.snapshot().String(), "0-1-8200"; got != want {
		t.Errorf("last snapshot %q, want %q", got, want)
	}
}

func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"mysql-bin.000003:1234", "b.1:4@0-1-5", "x:y", "@", ":", "a.1:1@a:1-3", "b.1:4@0-1-5+9",
		"b.1:4;xa=78.79.1@b.1:2;xa=7a..0@b.1:3", "b.1:4@u:t:1-3+2;xa=7831..1@b.1:1"} {
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
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip of %q: %#v != %#v", s, p, q)
		}
		if p.File == "" {
			return
		}
		if c, err := p.Compare(q); err != nil || c != 0 {
			t.Fatalf("Compare with itself: %d, %v", c, err)
		}
	})
}
