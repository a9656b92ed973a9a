package kafka

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/IBM/sarama"

	"github.com/outboxrelay/outboxrelay/preflight"
)

// Targets are the topics the relay produces to, as `outboxrelay check`
// knows them from the mapping: fixed names, and patterns for topic
// templates whose names depend on the row.
type Targets struct {
	Topics   []string
	Patterns []*regexp.Regexp
}

// maxDescribed bounds the topics whose configuration one check reads.
const maxDescribed = 200

// Preflight checks that the brokers answer, that the target topics exist
// or will be created on first use, and that they accept records of
// kafka.max_message_bytes. It changes nothing on the cluster.
func Preflight(ctx context.Context, cfg Config, t Targets) []preflight.Check {
	cfg.SetDefaults()
	sc, err := cfg.saramaConfig()
	if err != nil {
		return []preflight.Check{cfg.connectCheck(err, err.Error(), "correct kafka.version")}
	}
	sc.Net.DialTimeout = 5 * time.Second
	sc.Net.ReadTimeout = 10 * time.Second
	sc.Metadata.Retry.Max = 1
	sc.Metadata.Retry.Backoff = 200 * time.Millisecond
	if d, ok := ctx.Deadline(); ok && time.Until(d) < sc.Net.ReadTimeout {
		sc.Net.ReadTimeout = max(time.Until(d), time.Second)
	}
	checks, ok := cfg.securityChecks(sc)
	if !ok {
		return checks
	}
	client, err := sarama.NewClient(cfg.Brokers, sc)
	if err != nil {
		return append(checks, cfg.connectCheck(err, fmt.Sprintf("brokers %s: %v", strings.Join(cfg.Brokers, ", "), err),
			"check kafka.brokers and the network path to them; each broker must advertise a listener address this host can reach (advertised.listeners)"))
	}
	defer client.Close()
	admin, err := sarama.NewClusterAdminFromClient(client)
	if err != nil {
		return []preflight.Check{preflight.Fail("kafka.connect", err.Error(), "check kafka.brokers")}
	}
	brokers, controller, err := admin.DescribeCluster()
	if err != nil {
		return []preflight.Check{preflight.Fail("kafka.connect", fmt.Sprintf("describe the cluster: %v", err), "check kafka.brokers and kafka.version")}
	}
	checks = append(checks, preflight.Pass("kafka.connect", "%d broker(s) at %s, controller %d, speaking Kafka %s", len(brokers), strings.Join(cfg.Brokers, ", "), controller, cfg.Version))

	// Broker settings that apply to topics created on first use.
	autoCreate, brokerMax := "", int64(-1)
	if len(brokers) > 0 {
		entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.BrokerResource, Name: strconv.Itoa(int(brokers[0].ID())),
			ConfigNames: []string{"auto.create.topics.enable", "message.max.bytes"}})
		if err == nil {
			for _, e := range entries {
				switch e.Name {
				case "auto.create.topics.enable":
					autoCreate = strings.ToLower(e.Value)
				case "message.max.bytes":
					brokerMax, _ = strconv.ParseInt(e.Value, 10, 64)
				}
			}
		}
	}

	if err := client.RefreshMetadata(); err != nil {
		return append(checks, preflight.Fail("kafka.topics", fmt.Sprintf("list topics: %v", err), "the relay's client must be allowed to describe topics"))
	}
	all, err := client.Topics()
	if err != nil {
		return append(checks, preflight.Fail("kafka.topics", fmt.Sprintf("list topics: %v", err), "the relay's client must be allowed to describe topics"))
	}
	exists := map[string]bool{}
	for _, n := range all {
		exists[n] = true
	}
	topicsCheck, present, creates := topics(t, exists, autoCreate, cfg.Brokers)
	checks = append(checks, topicsCheck)
	checks = append(checks, maxMessageBytes(admin, cfg.MaxMessageBytes, present, creates, brokerMax))
	return checks
}

// topics says whether every target exists or will be created on first
// use. It returns the existing targets, and whether new ones would be
// auto-created.
func topics(t Targets, exists map[string]bool, autoCreate string, brokers []string) (preflight.Check, []string, bool) {
	const name = "kafka.topics"
	var present, missing []string
	for _, n := range t.Topics {
		if exists[n] {
			present = append(present, n)
		} else {
			missing = append(missing, n)
		}
	}
	matched := map[string][]string{}
	var unmatched []string
	for _, p := range t.Patterns {
		for n := range exists {
			if p.MatchString(n) {
				matched[p.String()] = append(matched[p.String()], n)
				present = append(present, n)
			}
		}
		if len(matched[p.String()]) == 0 {
			unmatched = append(unmatched, p.String())
		}
	}
	sort.Strings(present)
	var found []string
	if len(present) > 0 {
		found = append(found, fmt.Sprintf("%d target topic(s) exist (%s)", len(present), abbreviate(present, 5)))
	}
	if len(unmatched) > 0 {
		found = append(found, "no topic matches "+strings.Join(unmatched, ", ")+" yet")
	}
	createCmd := func(topics []string) string {
		var cmds []string
		for _, n := range topics {
			cmds = append(cmds, fmt.Sprintf("kafka-topics.sh --bootstrap-server %s --create --topic %s --partitions 6 --replication-factor 3", brokers[0], n))
		}
		return strings.Join(cmds, "; ")
	}
	newOnes := len(missing) > 0 || len(t.Patterns) > 0
	switch {
	case autoCreate == "true":
		var what []string
		if len(missing) > 0 {
			what = append(what, "missing "+strings.Join(missing, ", ")+" will be created on the first record")
		}
		if len(t.Patterns) > 0 {
			what = append(what, "topics for new values of the topic template are created on their first record")
		}
		return preflight.Pass(name, "%s", strings.Join(append(found, what...), "; ")+" (auto.create.topics.enable=true)"), present, true
	case len(missing) > 0 && autoCreate == "false":
		return preflight.Fail(name, fmt.Sprintf("topic(s) %s do not exist and the brokers do not create topics automatically", strings.Join(missing, ", ")),
			createCmd(missing)), present, false
	case len(missing) > 0:
		return preflight.Warn(name, fmt.Sprintf("topic(s) %s do not exist; the brokers do not say whether they create topics automatically", strings.Join(missing, ", ")),
			"create them before the first record: "+createCmd(missing)), present, false
	case len(unmatched) > 0 && autoCreate == "false":
		return preflight.Fail(name, fmt.Sprintf("no topic matches %s and the brokers do not create topics automatically", strings.Join(unmatched, ", ")),
			"create a topic for every value the topic template can take before it is used (kafka-topics.sh --create …), or set auto.create.topics.enable=true"), present, false
	case newOnes && autoCreate == "false":
		return preflight.Warn(name, strings.Join(found, "; ")+"; the brokers do not create topics automatically",
			"create the topic for a new value of the topic template before its first row is written, or the relay stops at that row"), present, false
	case newOnes:
		return preflight.Warn(name, strings.Join(append(found, "the brokers do not say whether they create topics automatically"), "; "),
			"make sure every topic the template can name exists, or that auto.create.topics.enable=true"), present, false
	}
	return preflight.Pass(name, "%s", strings.Join(found, "; ")), present, false
}

// maxMessageBytes compares kafka.max_message_bytes with what the target
// topics (and the broker default for new topics) accept.
func maxMessageBytes(admin sarama.ClusterAdmin, want int, present []string, creates bool, brokerMax int64) preflight.Check {
	const name = "kafka.max_message_bytes"
	described := present
	if len(described) > maxDescribed {
		described = described[:maxDescribed]
	}
	var resources []*sarama.ConfigResource
	for _, n := range described {
		resources = append(resources, &sarama.ConfigResource{Type: sarama.TopicResource, Name: n, ConfigNames: []string{"max.message.bytes"}})
	}
	var small []string
	smallest := int64(-1)
	if len(resources) > 0 {
		results, err := admin.DescribeConfigs(resources, sarama.DescribeConfigsOptions{})
		if err != nil {
			return preflight.Warn(name, fmt.Sprintf("cannot read the topics' max.message.bytes: %v", err), "grant the relay's client DescribeConfigs on the topics, or compare by hand")
		}
		for _, r := range results {
			for _, e := range r.Configs {
				if e.Name != "max.message.bytes" {
					continue
				}
				v, err := strconv.ParseInt(e.Value, 10, 64)
				if err != nil {
					continue
				}
				if smallest < 0 || v < smallest {
					smallest = v
				}
				if v < int64(want) {
					small = append(small, fmt.Sprintf("%s (%d)", r.Name, v))
				}
			}
		}
	}
	sort.Strings(small)
	if len(small) > 0 {
		return preflight.Fail(name, fmt.Sprintf("kafka.max_message_bytes is %d, but topic(s) %s accept less: larger records would be refused", want, strings.Join(small, ", ")),
			fmt.Sprintf("lower kafka.max_message_bytes to %d, or raise the topics' limit: kafka-configs.sh --alter --entity-type topics --entity-name TOPIC --add-config max.message.bytes=%d", smallest, want))
	}
	if creates && brokerMax >= 0 && brokerMax < int64(want) {
		return preflight.Fail(name, fmt.Sprintf("kafka.max_message_bytes is %d, but topics created automatically accept %d (message.max.bytes)", want, brokerMax),
			fmt.Sprintf("lower kafka.max_message_bytes to %d, or raise the brokers' message.max.bytes", brokerMax))
	}
	if smallest < 0 {
		return preflight.Pass(name, "kafka.max_message_bytes is %d; no target topic exists yet to compare with", want)
	}
	return preflight.Pass(name, "kafka.max_message_bytes %d ≤ max.message.bytes of %d topic(s) (smallest %d)", want, len(described), smallest)
}

func abbreviate(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:n], ", ") + fmt.Sprintf(", … %d more", len(names)-n)
}
