package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/outboxrelay/outboxrelay/source/kinds"
)

// Pipeline is one named pipeline of a config that lists several (one per
// database shard, say): its own source, and through its name its own
// position key and transactional id. Everything else (outbox, kafka,
// checkpoint, relay) is the top level's, shared by every pipeline.
type Pipeline struct {
	// Name is unique in the list: letters, digits, '_' and '-'. The
	// pipeline's relay name is relay.name + "." + Name. Required.
	Name string `yaml:"name"`
	// Source has the shape of the top-level source section. Required.
	Source kinds.Config `yaml:"source"`
}

// maxPipelineName keeps relay.name + "." + name within a relay name's 200.
const maxPipelineName = 64

// PipelineNames lists the pipelines' names in order; nil without
// pipelines.
func (c *Config) PipelineNames() []string {
	var out []string
	for _, p := range c.Pipelines {
		out = append(out, p.Name)
	}
	return out
}

// PipelineRelayName is the relay name of the pipeline called name: its
// position key and (exactly-once) its transactional id derive from it.
func PipelineRelayName(relayName, name string) string { return relayName + "." + name }

// ForPipeline is the config of pipeline i as a single-pipeline relay
// runs it: its source, and its own relay name. The standby group (the
// lease topic, the group id) stays the top level's: relay.ha.topic was
// filled from the top-level name by SetDefaults.
func (c *Config) ForPipeline(i int) *Config {
	pc := *c
	p := c.Pipelines[i]
	pc.Source = p.Source
	pc.Relay.Name = PipelineRelayName(c.Relay.Name, p.Name)
	pc.Pipelines = nil
	return &pc
}

func validPipelineName(s string) bool {
	if len(s) == 0 || len(s) > maxPipelineName {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// validatePipelines checks the pipelines list and what it combines with;
// each error names its key (pipelines[2].source.mysql.server_id: …).
func (c *Config) validatePipelines() []error {
	if len(c.Pipelines) == 0 {
		return nil
	}
	var errs []error
	if !reflect.ValueOf(c.Source).IsZero() {
		errs = append(errs, errors.New("source: set either source (one pipeline) or pipelines, not both"))
	}
	if c.Checkpoint.Type != "kafka" {
		errs = append(errs, fmt.Errorf("pipelines: each pipeline keeps its position under its own key in Kafka: set checkpoint.type: kafka (not %s)", c.Checkpoint.Type))
	}
	if len(c.Pipelines) > 1 && !c.Relay.HA.Enabled {
		errs = append(errs, fmt.Errorf("pipelines: %d pipelines need relay.ha.enabled: true (the standby group spreads them over the instances; exactly-once and checkpoint.type kafka come with it)", len(c.Pipelines)))
	}
	if c.Outbox.Cleanup.Enabled {
		errs = append(errs, errors.New("outbox.cleanup.enabled: not supported with pipelines yet (it deletes up to one pipeline's durable position)"))
	}
	seen := map[string]int{}
	type mysqlID struct {
		addr string
		id   uint32
	}
	type pgSlot struct{ dsn, slot string }
	ids := map[mysqlID]int{}
	slots := map[pgSlot]int{}
	for i, p := range c.Pipelines {
		key := fmt.Sprintf("pipelines[%d]", i)
		switch {
		case p.Name == "":
			errs = append(errs, fmt.Errorf("%s.name: required", key))
		case !validPipelineName(p.Name):
			errs = append(errs, fmt.Errorf("%s.name: %q: use letters, digits, '_' and '-' (at most %d)", key, p.Name, maxPipelineName))
		default:
			if j, dup := seen[p.Name]; dup {
				errs = append(errs, fmt.Errorf("%s.name: %q is also the name of pipelines[%d]", key, p.Name, j))
			}
			seen[p.Name] = i
		}
		if err := p.Source.Validate(); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				errs = append(errs, fmt.Errorf("%s.source.%s", key, line))
			}
			continue
		}
		// Two pipelines reading one server as one replica (MySQL) or
		// through one slot (Postgres) would throw each other off.
		switch p.Source.Type {
		case "mysql":
			k := mysqlID{p.Source.MySQL.Addr, p.Source.MySQL.ServerID}
			if j, dup := ids[k]; dup {
				errs = append(errs, fmt.Errorf("%s.source.mysql.server_id: %d is also pipelines[%d]'s on %s: each pipeline reading one server needs its own server_id", key, k.id, j, k.addr))
			} else {
				ids[k] = i
			}
		case "postgres":
			k := pgSlot{p.Source.Postgres.DSN + p.Source.Postgres.DSNFile, p.Source.Postgres.Slot}
			if j, dup := slots[k]; dup {
				errs = append(errs, fmt.Errorf("%s.source.postgres.slot: %q is also pipelines[%d]'s on the same dsn: each pipeline needs its own slot", key, k.slot, j))
			} else {
				slots[k] = i
			}
		}
	}
	return errs
}
