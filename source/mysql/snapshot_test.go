package mysql

import (
	"errors"
	"strings"
	"testing"

	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/outboxrelay/outboxrelay/schema"
)

// fakeConn records statements and answers the last (SHOW STATUS) with
// status rows. Not a live server: these tests pin the statements and the
// parsing; the live MariaDB path is internal/e2e's TestIntegrationMySQLSnapshot.
type fakeConn struct {
	ran    []string
	status [][]any
	failAt string
}

func (f *fakeConn) Execute(q string, _ ...any) (*gomysql.Result, error) {
	f.ran = append(f.ran, q)
	if f.failAt != "" && strings.Contains(q, f.failAt) {
		return nil, errors.New("refused")
	}
	if strings.HasPrefix(q, "SHOW STATUS") {
		rs, err := gomysql.BuildSimpleTextResultset([]string{"Variable_name", "Value"}, f.status)
		if err != nil {
			return nil, err
		}
		for _, raw := range rs.RowDatas {
			vals, err := raw.ParseText(rs.Fields, nil)
			if err != nil {
				return nil, err
			}
			rs.Values = append(rs.Values, vals)
		}
		return gomysql.NewResult(rs), nil
	}
	return &gomysql.Result{}, nil
}

func TestSnapshotStartMariaDB(t *testing.T) {
	t.Parallel()
	stmts, err := snapshotStatements(gomysql.MariaDBFlavor)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeConn{status: [][]any{{"binlog_snapshot_file", "mysql-bin.000007"}, {"binlog_snapshot_position", "1234"}}}
	p, err := startSnapshot(f, stmts)
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != "mysql-bin.000007:1234" {
		t.Fatalf("position %s, want mysql-bin.000007:1234", p)
	}
	// The transaction must be a consistent snapshot before its position is read.
	joined := strings.Join(f.ran, "; ")
	if i, j := strings.Index(joined, "WITH CONSISTENT SNAPSHOT"), strings.Index(joined, "binlog_snapshot_"); i < 0 || j < i {
		t.Fatalf("statements %q: want START TRANSACTION WITH CONSISTENT SNAPSHOT before reading binlog_snapshot_*", f.ran)
	}
	if strings.Contains(joined, "LOCK") {
		t.Fatalf("statements %q take a lock; MariaDB needs none", f.ran)
	}
}

func TestSnapshotStartRefusals(t *testing.T) {
	t.Parallel()
	if _, err := snapshotStatements(gomysql.MySQLFlavor); !errors.Is(err, ErrSnapshotMySQL) {
		t.Fatalf("MySQL: %v, want ErrSnapshotMySQL", err)
	}
	stmts, _ := snapshotStatements(gomysql.MariaDBFlavor)
	// No binlog (status empty): refused with the cause.
	if _, err := startSnapshot(&fakeConn{status: [][]any{{"binlog_snapshot_file", ""}, {"binlog_snapshot_position", "0"}}}, stmts); err == nil || !strings.Contains(err.Error(), "log_bin") {
		t.Fatalf("empty binlog_snapshot_*: %v; want an error naming log_bin", err)
	}
	if _, err := startSnapshot(&fakeConn{failAt: "START TRANSACTION"}, stmts); err == nil || !strings.Contains(err.Error(), "START TRANSACTION") {
		t.Fatalf("failing START TRANSACTION: %v", err)
	}
}

// TestSnapshotKeyset: the page condition after a key is the expanded
// form, with values quoted for their types.
func TestSnapshotKeyset(t *testing.T) {
	t.Parallel()
	tbl := &schema.Table{Schema: "shop", Name: "outbox", Columns: []string{"tenant", "id", "raw"}, Types: []string{"varchar", "bigint", "varbinary"}}
	got := after([]string{"tenant", "id"}, tbl, []int{0, 1}, []any{[]byte("it's\\x"), int64(42)})
	want := "((`tenant` > 'it''s\\\\x') OR (`tenant` = 'it''s\\\\x' AND `id` > 42))"
	if got != want {
		t.Fatalf("after:\n got %s\nwant %s", got, want)
	}
	if got := literal([]byte{0, 0xff}, "varbinary"); got != "X'00ff'" {
		t.Fatalf("binary key literal %s", got)
	}
	if got := literal(uint64(18446744073709551615), "bigint"); got != "18446744073709551615" {
		t.Fatalf("unsigned key literal %s", got)
	}
}

func TestSnapshotConfig(t *testing.T) {
	t.Parallel()
	c := Config{User: "u", ServerID: 1, Tables: []string{"shop.outbox"}, Start: "snapshot"}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("start: snapshot: %v", err)
	}
	c.Flavor = "mysql"
	if err := c.Validate(); err == nil || !errors.Is(err, ErrSnapshotMySQL) {
		t.Fatalf("start: snapshot with flavor mysql: %v; want the refusal", err)
	}
	c.SnapshotLock = SnapshotLockFlushTables
	if err := c.Validate(); err != nil {
		t.Fatalf("start: snapshot with flavor mysql and snapshot_lock: %v", err)
	}
	c.SnapshotLock = "instance"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "snapshot_lock") {
		t.Fatalf("snapshot_lock: instance: %v", err)
	}
}

// TestSnapshotMySQLLock: NOT against a live server (this project runs no
// MySQL): it pins the order of MySQL's statements — the snapshot's
// transaction starts and the binlog position is read while FLUSH TABLES
// WITH READ LOCK holds, so no commit falls between them — and that the
// lock is released whatever fails.
func TestSnapshotMySQLLock(t *testing.T) {
	t.Parallel()
	want := Position{File: "binlog.000012", Offset: 157}.WithGTID("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	for _, tc := range []struct {
		name, failAt string
		statusErr    error
	}{
		{name: "ok"},
		{name: "start fails", failAt: "START TRANSACTION"},
		{name: "status fails", statusErr: errors.New("access denied")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeConn{failAt: tc.failAt}
			p, err := mysqlLocked(f, func() (Position, error) {
				f.ran = append(f.ran, "SHOW BINARY LOG STATUS")
				return want, tc.statusErr
			})
			at := map[string]int{}
			for i, q := range f.ran {
				for _, k := range []string{"FLUSH TABLES WITH READ LOCK", "START TRANSACTION WITH CONSISTENT SNAPSHOT", "SHOW BINARY LOG STATUS", "UNLOCK TABLES"} {
					if strings.HasPrefix(q, k) {
						at[k] = i + 1
					}
				}
			}
			if at["FLUSH TABLES WITH READ LOCK"] == 0 || at["UNLOCK TABLES"] == 0 || at["UNLOCK TABLES"] != len(f.ran) {
				t.Fatalf("statements %q: want the lock taken and UNLOCK TABLES last", f.ran)
			}
			if tc.failAt == "" && tc.statusErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				lock, start, status := at["FLUSH TABLES WITH READ LOCK"], at["START TRANSACTION WITH CONSISTENT SNAPSHOT"], at["SHOW BINARY LOG STATUS"]
				if !(lock < start && start < status && status < at["UNLOCK TABLES"]) {
					t.Fatalf("statements %q: want lock, start transaction, binlog status, unlock", f.ran)
				}
				if p.String() != want.String() {
					t.Fatalf("position %s, want %s", p, want)
				}
			} else if err == nil {
				t.Fatal("no error")
			}
		})
	}
}
