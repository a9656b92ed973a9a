package config

import (
	"strings"
	"testing"
)

const pipelinesYAML = `
pipelines:
  - name: shard-1
    source:
      type: mysql
      mysql: {addr: "db1:3306", user: relay, password: pw, server_id: 11, tables: [shop.outbox]}
  - name: shard_2
    source:
      type: mysql
      mysql: {addr: "db1:3306", user: relay, password: pw, server_id: 12, tables: [shop2.outbox]}
  - name: pg
    source:
      type: postgres
      postgres: {dsn: "postgres://relay@pg/shop", tables: [public.outbox]}
kafka:
  brokers: [127.0.0.1:9092]
checkpoint:
  type: kafka
relay:
  name: orders
  delivery: exactly-once
  ha:
    enabled: true
`

func TestParsePipelines(t *testing.T) {
	t.Parallel()
	c, err := Parse([]byte(pipelinesYAML), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.PipelineNames(), ","); got != "shard-1,shard_2,pg" {
		t.Fatalf("pipeline names %s", got)
	}
	if c.Pipelines[2].Source.Postgres.Slot != "outboxrelay" || c.Pipelines[0].Source.MySQL.Start != "current" {
		t.Fatalf("pipeline sources without defaults: %+v", c.Pipelines)
	}
	p := c.ForPipeline(1)
	if p.Relay.Name != "orders.shard_2" || p.Source.MySQL.ServerID != 12 || len(p.Pipelines) != 0 {
		t.Fatalf("ForPipeline(1): name %q, server_id %d, pipelines %d", p.Relay.Name, p.Source.MySQL.ServerID, len(p.Pipelines))
	}
	// One group for every pipeline: the lease topic is the top level's.
	if p.Relay.HA.Topic != "outboxrelay.lease.orders" || c.Relay.Name != "orders" {
		t.Fatalf("ForPipeline changed the group: topic %q, top-level name %q", p.Relay.HA.Topic, c.Relay.Name)
	}
	if _, ok := EnvNames()["pipelines"]; ok {
		t.Fatal("pipelines has an environment variable")
	}
}

func TestPipelinesErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"same server_id on one server", strings.Replace(pipelinesYAML, "server_id: 12", "server_id: 11", 1), []string{"pipelines[1].source.mysql.server_id: 11 is also pipelines[0]'s"}},
		{"missing server_id", strings.Replace(pipelinesYAML, ", server_id: 12", "", 1), []string{"pipelines[1].source.mysql.server_id: required"}},
		{"duplicate name", strings.Replace(pipelinesYAML, "name: pg", "name: shard-1", 1), []string{`pipelines[2].name: "shard-1" is also the name of pipelines[0]`}},
		{"unsafe name", strings.Replace(pipelinesYAML, "name: pg", "name: p.g", 1), []string{`pipelines[2].name: "p.g": use letters`}},
		{"missing name", strings.Replace(pipelinesYAML, "- name: pg\n", "- \n", 1), []string{"pipelines[2].name: required"}},
		{"unknown key", strings.Replace(pipelinesYAML, "server_id: 12,", "server_id: 12, serverid: 1,", 1), []string{"serverid"}},
		{"source and pipelines", pipelinesYAML + "source: {type: mysql}\n", []string{"source: set either source"}},
		{"several without ha", strings.Replace(pipelinesYAML, "enabled: true", "enabled: false", 1), []string{"pipelines: 3 pipelines need relay.ha.enabled"}},
		{"file checkpoint", strings.Replace(strings.Replace(pipelinesYAML, "type: kafka", "type: file\n  file: {path: /tmp/x}", 1), "enabled: true", "enabled: false", 1), []string{"pipelines: each pipeline keeps its position", "set checkpoint.type: kafka"}},
		{"same slot", strings.Replace(pipelinesYAML, "type: mysql\n      mysql: {addr: \"db1:3306\", user: relay, password: pw, server_id: 12, tables: [shop2.outbox]}", "type: postgres\n      postgres: {dsn: \"postgres://relay@pg/shop\", tables: [public.outbox2]}", 1), []string{`pipelines[2].source.postgres.slot: "outboxrelay" is also pipelines[1]'s`}},
		{"cleanup", pipelinesYAML + "outbox: {cleanup: {enabled: true}}\n", []string{"outbox.cleanup.enabled: not supported with pipelines"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.yaml), nil)
			if err == nil {
				t.Fatal("parsed")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestOnePipelineWithoutHA: a single pipeline needs no group.
func TestOnePipelineWithoutHA(t *testing.T) {
	t.Parallel()
	y := pipelinesYAML[:strings.Index(pipelinesYAML, "  - name: shard_2")] + pipelinesYAML[strings.Index(pipelinesYAML, "kafka:"):]
	y = strings.Replace(y, "enabled: true", "enabled: false", 1)
	if _, err := Parse([]byte(y), nil); err != nil {
		t.Fatal(err)
	}
}
