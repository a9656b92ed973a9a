package mysql

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	gomysql "github.com/go-mysql-org/go-mysql/mysql"

	"github.com/outboxrelay/outboxrelay/preflight"
	"github.com/outboxrelay/outboxrelay/schema"
	"github.com/outboxrelay/outboxrelay/source"
	"github.com/outboxrelay/outboxrelay/source/snapshot"
)

// Preflight checks (outboxrelay check) read the server's settings, the
// relay user's privileges and the replicas connected to the server, and say
// for each what is wrong and the exact fix. They change nothing on the
// server. pos is the stored checkpoint ("" if none) and saved when it was
// written.

// access-denied error codes: ER_DBACCESS_DENIED_ERROR,
// ER_ACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR,
// ER_SPECIFIC_ACCESS_DENIED_ERROR.
var accessDenied = map[uint16]bool{1044: true, 1045: true, 1142: true, 1227: true}

func isAccessDenied(err error) bool {
	var me *gomysql.MyError
	return errors.As(err, &me) && accessDenied[me.Code]
}

// Preflight runs the MySQL/MariaDB checks.
func (s *Source) Preflight(ctx context.Context, pos string, saved time.Time, o source.PreflightOptions) []preflight.Check {
	cfg := s.cfg
	cfg.SetDefaults()
	conn, err := connect(ctx, &cfg)
	if err != nil {
		return []preflight.Check{connectFailure(err, &cfg)}
	}
	defer conn.Close()
	p := &prober{conn: conn, cfg: &cfg, relayPID: o.RelayPID}
	if err := p.load(); err != nil {
		return []preflight.Check{preflight.Fail("mysql.connect", err.Error(), "the relay's user must be able to read server variables (SHOW GLOBAL VARIABLES)")}
	}
	connectCheck := preflight.Pass("mysql.connect", "%s at %s as %s", p.version, cfg.Addr, p.userText())
	if cfg.Flavor != "" && cfg.Flavor != p.flavor {
		connectCheck = preflight.Fail("mysql.connect", fmt.Sprintf("source.mysql.flavor is %s but the server is %s (%s)", cfg.Flavor, p.flavor, p.version),
			fmt.Sprintf("set source.mysql.flavor: %s, or leave it empty to detect it", p.flavor))
	}
	checks := []preflight.Check{
		connectCheck,
		tlsCheck(conn, &cfg),
		p.logBin(),
		p.setting("binlog_format", "ROW", "row-based events carry the inserted values"),
		p.setting("binlog_row_image", "FULL", "with MINIMAL or NOBLOB an INSERT may omit columns"),
		p.rowMetadata(),
		p.compression(),
		p.outboxTables(o.CheckTable),
		p.gtidMode(),
		p.serverID(),
		p.retention(ctx, s, pos, saved),
		p.grantReplicationSlave(),
		p.grantBinlogMonitor(),
	}
	if c, ok := p.snapshotCheck(pos); ok {
		checks = append(checks, c)
	}
	return checks
}

// prober holds what the checks read once.
type prober struct {
	conn     *client.Conn
	cfg      *Config
	version  string
	flavor   string
	vars     map[string]string // lower-case name → value as the server shows it
	relayPID int               // a relay running on this configuration (0: none)
	user     string            // CURRENT_USER(): user@host
	grants   []string          // SHOW GRANTS lines
	logs     []binlogFile
	logsErr  error
}

func (p *prober) mariadb() bool { return p.flavor == gomysql.MariaDBFlavor }

func (p *prober) load() error {
	var err error
	if p.version, err = queryString(p.conn, "SELECT VERSION()"); err != nil {
		return err
	}
	p.flavor = gomysql.MySQLFlavor
	if strings.Contains(strings.ToLower(p.version), "mariadb") {
		p.flavor = gomysql.MariaDBFlavor
	}
	r, err := p.conn.Execute(`SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_image',
		'binlog_row_metadata', 'gtid_mode', 'server_id', 'binlog_expire_logs_seconds', 'expire_logs_days',
		'binlog_expire_logs_auto_purge', 'max_binlog_total_size', 'gtid_binlog_pos',
		'binlog_transaction_compression', 'log_bin_compress')`)
	if err != nil {
		return fmt.Errorf("read server variables: %w", err)
	}
	p.vars = map[string]string{}
	for i := 0; i < r.RowNumber(); i++ {
		k, _ := r.GetString(i, 0)
		v, _ := r.GetString(i, 1)
		// Clone: go-mysql strings point into a buffer that Close recycles.
		p.vars[strings.ToLower(strings.Clone(k))] = strings.Clone(v)
	}
	r.Close()
	p.user, _ = queryString(p.conn, "SELECT CURRENT_USER()")
	if r, err := p.conn.Execute("SHOW GRANTS"); err == nil {
		for i := 0; i < r.RowNumber(); i++ {
			g, _ := r.GetString(i, 0)
			p.grants = append(p.grants, strings.Clone(g))
		}
		r.Close()
	}
	p.logs, p.logsErr = binaryLogs(p.conn)
	return nil
}

// userText is the relay user as GRANT statements name it: 'relay'@'%'.
func (p *prober) userText() string {
	if i := strings.LastIndexByte(p.user, '@'); i > 0 {
		return fmt.Sprintf("'%s'@'%s'", p.user[:i], p.user[i+1:])
	}
	return fmt.Sprintf("'%s'@'%%'", p.cfg.User)
}

// setGlobal is the statement that changes a dynamic setting durably.
func (p *prober) setGlobal(name, value string) string {
	if p.mariadb() {
		return fmt.Sprintf("SET GLOBAL %s = '%s', and add %s = %s under [mariadbd] in the server's configuration file so that it survives a restart; sessions already open keep the old value until they reconnect", name, value, name, value)
	}
	return fmt.Sprintf("SET PERSIST %s = '%s'; sessions already open keep the old value until they reconnect", name, value)
}

func (p *prober) logBin() preflight.Check {
	v := strings.ToUpper(p.vars["log_bin"])
	if v == "ON" || v == "1" {
		return preflight.Pass("mysql.log_bin", "ON")
	}
	return preflight.Fail("mysql.log_bin", fmt.Sprintf("binary logging is %s", orNone(p.vars["log_bin"])),
		"start the server with binary logging: log_bin = mysql-bin in its configuration file (MySQL 8 has it on by default; it cannot be changed at run time), then restart it")
}

func (p *prober) setting(name, want, why string) preflight.Check {
	got := p.vars[name]
	if strings.EqualFold(got, want) {
		return preflight.Pass("mysql."+name, "%s", strings.ToUpper(got))
	}
	return preflight.Fail("mysql."+name, fmt.Sprintf("%s is %s, the relay needs %s (%s)", name, orNone(got), want, why), p.setGlobal(name, want))
}

// rowMetadata: with FULL the binlog names each row's columns; otherwise the
// relay falls back to the outbox tables' columns in information_schema,
// which the relay's user can only see with some privilege on the tables.
func (p *prober) rowMetadata() preflight.Check {
	const name = "mysql.binlog_row_metadata"
	got, ok := p.vars["binlog_row_metadata"]
	if strings.EqualFold(got, "FULL") {
		return preflight.Pass(name, "FULL (the binlog carries column names)")
	}
	setting := "binlog_row_metadata is " + got
	fix := p.setGlobal("binlog_row_metadata", "FULL")
	if !ok {
		setting = fmt.Sprintf("the server (%s) has no binlog_row_metadata", p.version)
		fix = "upgrade to MySQL ≥ 8.0.1 or MariaDB ≥ 10.5 and set binlog_row_metadata = FULL"
	}
	// Whether information_schema shows the tables to the relay's user is
	// mysql.outbox_tables' question.
	return preflight.Warn(name, setting+": the relay falls back to the outbox tables' columns in information_schema, which is right only while no DDL on an outbox table lies between the checkpoint and now", fix)
}

// compression reports how the server compresses the binlog; the relay
// reads either way.
func (p *prober) compression() preflight.Check {
	const name = "mysql.binlog_compression"
	if p.mariadb() {
		return preflight.Pass(name, "log_bin_compress is %s (compressed events are decoded)", orNone(p.vars["log_bin_compress"]))
	}
	v, ok := p.vars["binlog_transaction_compression"]
	if !ok {
		return preflight.Pass(name, "the server (%s) has no binlog_transaction_compression (MySQL < 8.0.20): transactions are not compressed", p.version)
	}
	if strings.EqualFold(v, "ON") {
		return preflight.Pass(name, "binlog_transaction_compression is ON: each transaction arrives as one compressed payload, which the relay decodes")
	}
	return preflight.Pass(name, "binlog_transaction_compression is %s", strings.ToUpper(v))
}

// outboxTables checks the outbox tables as Open does: they exist, the
// relay's user can see their layout, they are transactional, and the
// mapping suits them.
func (p *prober) outboxTables(check source.TableCheck) preflight.Check {
	const name = "mysql.outbox_tables"
	filter, err := schema.NewFilter(p.cfg.Tables)
	if err != nil {
		return preflight.Fail(name, err.Error(), "correct source.mysql.tables")
	}
	rep, err := readOutboxTables(p.conn, filter)
	if err != nil {
		return preflight.Fail(name, err.Error(), "the relay's user must be able to read information_schema")
	}
	if err := rep.problem(check); err != nil {
		return preflight.Fail(name, err.Error(), "as the detail says: the table name in source.mysql.tables, a GRANT REFERENCES, the table engine or the outbox mapping")
	}
	names := make([]string, len(rep.tables))
	for i, t := range rep.tables {
		names[i] = t.FullName()
	}
	if rep.unmatched {
		return preflight.Warn(name, fmt.Sprintf("no table matches the regular expression(s) in source.mysql.tables %v (visible: %v)", p.cfg.Tables, names),
			"check the expression, and that the relay's user can see the tables (GRANT REFERENCES ON schema.table)")
	}
	return preflight.Pass(name, "%s: visible to %s, transactional, and the mapping suits them", strings.Join(names, ", "), p.userText())
}

func (p *prober) gtidMode() preflight.Check {
	if p.mariadb() {
		return preflight.Pass("mysql.gtid_mode", "MariaDB writes GTIDs always (gtid_binlog_pos %s): the relay resumes by GTID", orNone(p.vars["gtid_binlog_pos"]))
	}
	if strings.EqualFold(p.vars["gtid_mode"], "ON") {
		return preflight.Pass("mysql.gtid_mode", "ON: the relay resumes by GTID")
	}
	return preflight.Warn("mysql.gtid_mode", fmt.Sprintf("gtid_mode is %s: the relay resumes by binlog file and offset, which do not survive a fail-over to another server", orNone(p.vars["gtid_mode"])),
		"turn GTIDs on step by step: SET PERSIST enforce_gtid_consistency = ON; SET PERSIST gtid_mode = OFF_PERMISSIVE; SET PERSIST gtid_mode = ON_PERMISSIVE; (wait until Ongoing_anonymous_transaction_count is 0) SET PERSIST gtid_mode = ON")
}

// serverID checks that no other replica of the server uses the relay's
// server_id: two binlog readers with one id disconnect each other.
func (p *prober) serverID() preflight.Check {
	id := p.cfg.ServerID
	if own, err := strconv.ParseUint(p.vars["server_id"], 10, 32); err == nil && uint32(own) == id {
		return preflight.Fail("mysql.server_id", fmt.Sprintf("source.mysql.server_id %d is the server's own server_id", id),
			"choose another source.mysql.server_id, unique among the server and its replicas")
	}
	queries := []string{"SHOW SLAVE HOSTS"}
	if !p.mariadb() {
		queries = []string{"SHOW REPLICAS", "SHOW SLAVE HOSTS"} // 8.0.22+, older
	}
	var r *gomysql.Result
	var err error
	for _, q := range queries {
		if r, err = p.conn.Execute(q); err == nil || isAccessDenied(err) {
			break
		}
	}
	if err != nil {
		priv := "REPLICATION SLAVE"
		if p.mariadb() {
			priv = "REPLICATION MASTER ADMIN"
		}
		return preflight.Warn("mysql.server_id", fmt.Sprintf("cannot list the server's replicas to compare server_ids (%v)", err),
			fmt.Sprintf("make sure no replica or other binlog reader uses server_id %d (an administrator can run SHOW SLAVE HOSTS; the relay's user would need %s to do it)", id, priv))
	}
	defer r.Close()
	for i := 0; i < r.RowNumber(); i++ {
		sid, _ := r.GetUint(i, 0)
		if uint32(sid) == id {
			host, _ := r.GetString(i, 1)
			port, _ := r.GetUint(i, 2)
			if p.relayPID != 0 {
				// The relay on this very configuration holds it.
				return preflight.Pass("mysql.server_id", "%d is in use by this configuration's relay (process %d, which holds the checkpoint); no other replica uses it", id, p.relayPID)
			}
			return preflight.Fail("mysql.server_id", fmt.Sprintf("server_id %d is used by a connected replica (host %q, port %d); if that is this relay already running, stop it before checking", id, strings.Clone(host), port),
				"choose a source.mysql.server_id no replica uses (two binlog readers with one id disconnect each other)")
		}
	}
	return preflight.Pass("mysql.server_id", "%d is used by neither the server nor any of its %d connected replica(s)", id, r.RowNumber())
}

// retentionSeconds is how long the server keeps binlogs (0: not purged by
// age).
func (p *prober) retentionSeconds() int64 {
	if strings.EqualFold(p.vars["binlog_expire_logs_auto_purge"], "OFF") {
		return 0
	}
	if s, err := strconv.ParseInt(p.vars["binlog_expire_logs_seconds"], 10, 64); err == nil && s > 0 {
		return s
	}
	if d, err := strconv.ParseFloat(p.vars["expire_logs_days"], 64); err == nil && d > 0 {
		return int64(d * 86400)
	}
	return 0
}

func (p *prober) retention(ctx context.Context, s *Source, pos string, saved time.Time) preflight.Check {
	const name = "mysql.binlog_retention"
	ret := p.retentionSeconds()
	retText := "binlogs are not purged by age"
	if ret > 0 {
		retText = "binlogs are kept " + seconds(ret)
	}
	if n, err := strconv.ParseInt(p.vars["max_binlog_total_size"], 10, 64); err == nil && n > 0 {
		retText += fmt.Sprintf(", and purged beyond %d bytes in total (max_binlog_total_size)", n)
	}
	raise := "SET PERSIST binlog_expire_logs_seconds = 604800 (7 days; longer than any relay outage you could sleep through)"
	if p.mariadb() {
		raise = "SET GLOBAL binlog_expire_logs_seconds = 604800 and the same under [mariadbd] in the configuration file (7 days; longer than any relay outage you could sleep through)"
	}
	if snapshot.IsPending(pos) {
		return preflight.Pass(name, "%s; the initial snapshot is pending: the next start takes it again and streams from its position", retText)
	}
	if pos == "" {
		if ret > 0 && ret < 24*3600 {
			return preflight.Warn(name, retText+"; no checkpoint yet", raise)
		}
		return preflight.Pass(name, "%s; no checkpoint yet: the relay starts at source.mysql.start (%s)", retText, p.cfg.Start)
	}
	if p.logsErr != nil {
		return preflight.Warn(name, fmt.Sprintf("%s; cannot list the binlogs to check the checkpoint %s against them (%v)", retText, pos, p.logsErr),
			"grant the privilege named by mysql.grant_binlog_monitor, then check again")
	}
	if _, err := s.Check(ctx, pos, source.OpenOptions{}); err != nil {
		return preflight.Fail(name, fmt.Sprintf("%s; the checkpoint %s cannot be resumed from: %v", retText, pos, err),
			"see docs/operations.md, \"Binlog purged\": replay the missing events from a backup, or accept the gap with `outboxrelay checkpoint set`")
	}
	age := time.Since(saved)
	detail := fmt.Sprintf("%s; the checkpoint %s is %s old and still on the server", retText, pos, age.Round(time.Second))
	if ret > 0 && age > time.Duration(ret)*time.Second/2 {
		return preflight.Warn(name, detail+", but past half the retention: its binlog may be purged soon",
			"start the relay now so it catches up, or raise the retention: "+raise)
	}
	return preflight.Pass(name, "%s", detail)
}

// grantedGlobally reports whether SHOW GRANTS gives one of privs on *.*,
// and whether any role is granted (privileges may then come from it).
func (p *prober) grantedGlobally(privs ...string) (ok, roles bool) {
	for _, g := range p.grants {
		up := strings.ToUpper(g)
		if !strings.HasPrefix(up, "GRANT ") {
			continue
		}
		list, _, found := strings.Cut(up[len("GRANT "):], " ON *.* TO ")
		if !found {
			if !strings.Contains(up, " ON ") {
				roles = true // GRANT `role`@`%` TO …
			}
			continue
		}
		for _, have := range strings.Split(list, ",") {
			have = strings.TrimSpace(have)
			if have == "ALL PRIVILEGES" || have == "ALL" {
				return true, roles
			}
			for _, want := range privs {
				if have == want {
					return true, roles
				}
			}
		}
	}
	return false, roles
}

func (p *prober) grantReplicationSlave() preflight.Check {
	const name = "mysql.grant_replication_slave"
	ok, roles := p.grantedGlobally("REPLICATION SLAVE", "REPLICATION REPLICA")
	switch {
	case ok:
		return preflight.Pass(name, "%s may stream the binlog (REPLICATION SLAVE)", p.userText())
	case roles:
		return preflight.Warn(name, fmt.Sprintf("REPLICATION SLAVE is not granted to %s directly; it has roles, which may grant it", p.userText()),
			fmt.Sprintf("make sure a default role grants it (SET DEFAULT ROLE ALL TO %s), or GRANT REPLICATION SLAVE ON *.* TO %s", p.userText(), p.userText()))
	}
	return preflight.Fail(name, fmt.Sprintf("%s lacks REPLICATION SLAVE: it cannot stream the binlog", p.userText()),
		fmt.Sprintf("GRANT REPLICATION SLAVE ON *.* TO %s", p.userText()))
}

// grantBinlogMonitor tries what the privilege is for: SHOW BINARY LOGS.
func (p *prober) grantBinlogMonitor() preflight.Check {
	name, priv := "mysql.grant_replication_client", "REPLICATION CLIENT"
	if p.mariadb() {
		name, priv = "mysql.grant_binlog_monitor", "BINLOG MONITOR"
	}
	if p.logsErr == nil {
		return preflight.Pass(name, "%s may read the binlog status (SHOW BINARY LOGS works)", p.userText())
	}
	if !isAccessDenied(p.logsErr) {
		if ok, _ := p.grantedGlobally(priv, "REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"); ok {
			return preflight.Pass(name, "%s has %s (SHOW BINARY LOGS failed for another reason: %v)", p.userText(), priv, p.logsErr)
		}
	}
	return preflight.Fail(name, fmt.Sprintf("%s cannot read the binlog status, which the relay checks before streaming: %v", p.userText(), p.logsErr),
		fmt.Sprintf("GRANT %s ON *.* TO %s", priv, p.userText()))
}

func orNone(s string) string {
	if s == "" {
		return "(not set)"
	}
	return s
}

// seconds renders a retention for people: 7d, 36h, 90m.
func seconds(s int64) string {
	switch {
	case s%86400 == 0:
		return fmt.Sprintf("%dd", s/86400)
	case s%3600 == 0:
		return fmt.Sprintf("%dh", s/3600)
	}
	return (time.Duration(s) * time.Second).String()
}
