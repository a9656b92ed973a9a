package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// The deployment files cannot run here (no Docker, no Kubernetes): these
// tests parse them and check that they fit together and with the config
// structs, so they cannot silently rot.

// composeService is the part of a docker-compose service the tests read.
type composeService struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]any    `yaml:"depends_on"`
	StopGrace   string            `yaml:"stop_grace_period"`
}

// TestComposeRelaysMatchTheirServices: a relay per database (two standby
// instances of one relay for one of them), each with a
// config file that exists, loads with the service's environment, names
// services of the compose file as its database and brokers, publishes its
// metrics port and gets a stop grace period longer than its shutdown
// timeout.
func TestComposeRelaysMatchTheirServices(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	sources := map[string]string{} // source type → relay service
	loaded := map[string]*Config{} // relay service → its configuration
	standbys := 0                  // relays standing by for another
	for name, s := range compose.Services {
		if s.Build == nil {
			continue
		}
		for dep := range s.DependsOn {
			if _, ok := compose.Services[dep]; !ok {
				t.Errorf("%s depends on %s, which is not a service", name, dep)
			}
		}
		cfgPath := ""
		for i, a := range s.Command {
			if a == "--config" && i+1 < len(s.Command) {
				cfgPath = s.Command[i+1]
			}
		}
		if cfgPath == "" {
			t.Errorf("relay %s: no --config in its command %v", name, s.Command)
			continue
		}
		host := ""
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && parts[1] == cfgPath && strings.HasPrefix(parts[0], "./") {
				host = filepath.Join("../..", parts[0])
			}
		}
		if host == "" {
			t.Errorf("relay %s: %s is not mounted from a file of the repository", name, cfgPath)
			continue
		}
		var env []string
		for k, v := range s.Environment {
			env = append(env, k+"="+v)
		}
		cfg, err := Load(host, env)
		if err != nil {
			t.Errorf("relay %s: %s with its environment: %v", name, host, err)
			continue
		}
		if other, dup := sources[cfg.Source.Type]; dup {
			// Only standby instances of one relay may share a database.
			if o := loaded[other]; !cfg.Relay.HA.Enabled || !o.Relay.HA.Enabled || o.Relay.Name != cfg.Relay.Name {
				t.Errorf("relays %s and %s both read a %s source and are not standby instances of one relay (relay.ha.enabled, the same relay.name)", name, other, cfg.Source.Type)
			}
			standbys++
		}
		sources[cfg.Source.Type] = name
		loaded[name] = cfg
		var dbHost string
		switch cfg.Source.Type {
		case "mysql":
			dbHost, _, _ = net.SplitHostPort(cfg.Source.MySQL.Addr)
		case "postgres":
			if u, err := url.Parse(cfg.Source.Postgres.DSN); err == nil {
				dbHost = u.Hostname()
			}
		}
		for _, h := range append([]string{dbHost}, brokerHosts(cfg.Kafka.Brokers)...) {
			if _, ok := compose.Services[h]; !ok {
				t.Errorf("relay %s connects to %q, which is not a service of the compose file", name, h)
			} else if _, dep := s.DependsOn[h]; !dep {
				t.Errorf("relay %s does not depend on %s", name, h)
			}
		}
		if cfg.Metrics.Listen != "" {
			_, port, _ := net.SplitHostPort(cfg.Metrics.Listen)
			published := false
			for _, p := range s.Ports {
				published = published || strings.HasSuffix(p, ":"+port)
			}
			if !published {
				t.Errorf("relay %s serves metrics on %s but does not publish that port (%v)", name, port, s.Ports)
			}
		}
		grace, err := time.ParseDuration(s.StopGrace)
		if err != nil || grace <= cfg.Relay.ShutdownTimeout {
			t.Errorf("relay %s: stop_grace_period %q must be longer than relay.shutdown_timeout (%s)", name, s.StopGrace, cfg.Relay.ShutdownTimeout)
		}
	}
	if sources["mysql"] == "" || sources["postgres"] == "" {
		t.Errorf("want a relay per database (mysql and postgres), have %v", sources)
	}
	if standbys == 0 {
		t.Errorf("want two standby instances of one relay for one database (relay.ha)")
	}
}

func brokerHosts(brokers []string) []string {
	var hosts []string
	for _, b := range brokers {
		h, _, _ := net.SplitHostPort(b)
		hosts = append(hosts, h)
	}
	return hosts
}

// k8sObject is one document of deploy/*.yaml.
type k8sObject struct {
	APIVersion string         `yaml:"apiVersion"`
	Kind       string         `yaml:"kind"`
	Metadata   map[string]any `yaml:"metadata"`
	Data       map[string]any `yaml:"data"`
	Spec       map[string]any `yaml:"spec"`
	Resources  []string       `yaml:"resources"`
}

func (o k8sObject) name() string { s, _ := o.Metadata["name"].(string); return s }

// dig walks maps and lists: dig(x, "spec", "template", 0, "name").
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// TestKubernetesManifests: one replica, Recreate, probes on the metrics
// port the config map's relay config serves, the config valid with the
// environment the Deployment passes, and the checkpoint on the volume
// claim.
func TestKubernetesManifests(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("../../deploy/*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/")
	}
	objs := map[string]k8sObject{} // kind/name
	var kustomize []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "Kustomization" {
				kustomize = o.Resources
				continue
			}
			objs[o.Kind+"/"+o.name()] = o
		}
	}
	var listed []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			listed = append(listed, base)
		}
	}
	sort.Strings(listed)
	sort.Strings(kustomize)
	if fmt.Sprint(listed) != fmt.Sprint(kustomize) {
		t.Errorf("kustomization.yaml lists %v, deploy/ has %v", kustomize, listed)
	}

	var deps []k8sObject
	for _, o := range objs {
		if o.Kind == "Deployment" {
			deps = append(deps, o)
		}
	}
	if len(deps) != 1 {
		t.Fatalf("want one Deployment, have %d", len(deps))
	}
	d := deps[0]
	if r, _ := d.Spec["replicas"].(int); r != 1 {
		t.Errorf("replicas: %v, want 1", d.Spec["replicas"])
	}
	if s := dig(d.Spec, "strategy", "type"); s != "Recreate" {
		t.Errorf("strategy.type: %v, want Recreate", s)
	}
	pod := dig(d.Spec, "template", "spec")
	c := dig(pod, "containers", 0)
	if p := dig(c, "livenessProbe", "httpGet", "path"); p != "/healthz" {
		t.Errorf("livenessProbe path %v", p)
	}
	if p := dig(c, "readinessProbe", "httpGet", "path"); p != "/readyz" {
		t.Errorf("readinessProbe path %v", p)
	}
	portName := dig(c, "readinessProbe", "httpGet", "port")
	containerPort := 0
	ports, _ := dig(c, "ports").([]any)
	for _, p := range ports {
		if dig(p, "name") == portName {
			containerPort, _ = dig(p, "containerPort").(int)
		}
	}

	// The config map, with the environment the container gets.
	mounts := map[string]string{} // volume → mount path
	ms, _ := dig(c, "volumeMounts").([]any)
	for _, m := range ms {
		mounts[fmt.Sprint(dig(m, "name"))] = fmt.Sprint(dig(m, "mountPath"))
	}
	var cfgMap, claim, cfgDir, stateDir string
	vols, _ := dig(pod, "volumes").([]any)
	for _, v := range vols {
		name := fmt.Sprint(dig(v, "name"))
		if n, ok := dig(v, "configMap", "name").(string); ok {
			cfgMap, cfgDir = n, mounts[name]
		}
		if n, ok := dig(v, "persistentVolumeClaim", "claimName").(string); ok {
			claim, stateDir = n, mounts[name]
		}
	}
	if _, ok := objs["PersistentVolumeClaim/"+claim]; !ok || stateDir == "" {
		t.Errorf("the checkpoint volume claim %q is not defined or not mounted", claim)
	}
	cm, ok := objs["ConfigMap/"+cfgMap]
	if !ok {
		t.Fatalf("ConfigMap %q is not defined", cfgMap)
	}
	args := fmt.Sprint(dig(c, "args"))
	var env []string
	envs, _ := dig(c, "env").([]any)
	for _, e := range envs {
		name := fmt.Sprint(dig(e, "name"))
		if secret, ok := dig(e, "valueFrom", "secretKeyRef", "name").(string); ok {
			if _, ok := objs["Secret/"+secret]; !ok {
				t.Errorf("env %s: Secret %s is not defined", name, secret)
			}
		}
		env = append(env, name+"=from-the-secret")
	}
	for file, text := range cm.Data {
		if !strings.Contains(args, filepath.Join(cfgDir, file)) {
			t.Errorf("the container's args %s do not name %s", args, filepath.Join(cfgDir, file))
		}
		cfg, err := Parse([]byte(fmt.Sprint(text)), env)
		if err != nil {
			t.Errorf("ConfigMap %s %s: %v", cfgMap, file, err)
			continue
		}
		if !strings.HasPrefix(cfg.Checkpoint.File.Path, stateDir+"/") {
			t.Errorf("checkpoint.file.path %s is not on the volume claim (mounted at %s)", cfg.Checkpoint.File.Path, stateDir)
		}
		_, port, err := net.SplitHostPort(cfg.Metrics.Listen)
		if err != nil || port != fmt.Sprint(containerPort) {
			t.Errorf("metrics.listen %q does not serve the probes' port %d", cfg.Metrics.Listen, containerPort)
		}
		if host, _, _ := net.SplitHostPort(cfg.Metrics.Listen); host == "127.0.0.1" || host == "localhost" {
			t.Errorf("metrics.listen %q: the kubelet cannot reach a loopback address", cfg.Metrics.Listen)
		}
		grace, _ := dig(pod, "terminationGracePeriodSeconds").(int)
		if time.Duration(grace)*time.Second <= cfg.Relay.ShutdownTimeout {
			t.Errorf("terminationGracePeriodSeconds %d must exceed relay.shutdown_timeout %s", grace, cfg.Relay.ShutdownTimeout)
		}
	}
	if fs := dig(pod, "securityContext", "fsGroup"); fs != 65532 {
		t.Errorf("securityContext.fsGroup %v: the image's user (65532) must be able to write the checkpoint volume", fs)
	}
}

// loadManifests reads every object of dir/*.yaml, and the resources its
// kustomization.yaml lists.
func loadManifests(t *testing.T, dir string) (map[string]k8sObject, []string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) == 0 {
		t.Fatalf("no manifests in %s", dir)
	}
	objs := map[string]k8sObject{}
	var kustomize, listed []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o k8sObject
			err := dec.Decode(&o)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o.Kind == "Kustomization" {
				kustomize = o.Resources
				continue
			}
			objs[o.Kind+"/"+o.name()] = o
		}
		if base := filepath.Base(f); base != "kustomization.yaml" {
			listed = append(listed, base)
		}
	}
	sort.Strings(listed)
	sort.Strings(kustomize)
	if fmt.Sprint(listed) != fmt.Sprint(kustomize) {
		t.Errorf("%s/kustomization.yaml lists %v, the directory has %v", dir, kustomize, listed)
	}
	return objs, kustomize
}

// TestKubernetesStandbyManifests: deploy/ha runs two instances of one
// relay with relay.ha — no volume (the position is in Kafka), a rolling
// update that never goes below the replicas, a PodDisruptionBudget over
// the pods, probes on the port the config serves, and a config that
// loads with the Deployment's environment.
func TestKubernetesStandbyManifests(t *testing.T) {
	t.Parallel()
	objs, _ := loadManifests(t, "../../deploy/ha")
	d, ok := objs["Deployment/outboxrelay-shop"]
	if !ok {
		t.Fatal("no Deployment outboxrelay-shop in deploy/ha")
	}
	if r, _ := d.Spec["replicas"].(int); r < 2 {
		t.Errorf("replicas: %v, want at least 2", d.Spec["replicas"])
	}
	if s := dig(d.Spec, "strategy", "type"); s != "RollingUpdate" {
		t.Errorf("strategy.type: %v, want RollingUpdate", s)
	}
	if u := dig(d.Spec, "strategy", "rollingUpdate", "maxUnavailable"); u != 0 {
		t.Errorf("rollingUpdate.maxUnavailable: %v, want 0", u)
	}
	pod := dig(d.Spec, "template", "spec")
	labels, _ := dig(d.Spec, "template", "metadata", "labels").(map[string]any)
	vols, _ := dig(pod, "volumes").([]any)
	var cfgMap, cfgDir string
	c := dig(pod, "containers", 0)
	mounts := map[string]string{}
	ms, _ := dig(c, "volumeMounts").([]any)
	for _, m := range ms {
		mounts[fmt.Sprint(dig(m, "name"))] = fmt.Sprint(dig(m, "mountPath"))
	}
	for _, v := range vols {
		if dig(v, "persistentVolumeClaim") != nil {
			t.Errorf("volume %v: standby instances keep no state on a volume", dig(v, "name"))
		}
		if n, ok := dig(v, "configMap", "name").(string); ok {
			cfgMap, cfgDir = n, mounts[fmt.Sprint(dig(v, "name"))]
		}
	}
	for _, o := range objs {
		if o.Kind == "PersistentVolumeClaim" {
			t.Errorf("deploy/ha defines a PersistentVolumeClaim %s: standby instances need none", o.name())
		}
	}
	pdbs := 0
	for _, o := range objs {
		if o.Kind != "PodDisruptionBudget" {
			continue
		}
		pdbs++
		sel, _ := dig(o.Spec, "selector", "matchLabels").(map[string]any)
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("PodDisruptionBudget %s selects %s=%v, which the pods do not carry", o.name(), k, v)
			}
		}
		if len(sel) == 0 {
			t.Errorf("PodDisruptionBudget %s selects nothing", o.name())
		}
		if m, _ := o.Spec["minAvailable"].(int); m < 1 {
			t.Errorf("PodDisruptionBudget %s: minAvailable %v, want at least 1", o.name(), o.Spec["minAvailable"])
		}
	}
	if pdbs != 1 {
		t.Errorf("want one PodDisruptionBudget, have %d", pdbs)
	}
	if p := dig(c, "livenessProbe", "httpGet", "path"); p != "/healthz" {
		t.Errorf("livenessProbe path %v", p)
	}
	if p := dig(c, "readinessProbe", "httpGet", "path"); p != "/readyz" {
		t.Errorf("readinessProbe path %v", p)
	}
	portName := dig(c, "readinessProbe", "httpGet", "port")
	containerPort := 0
	ports, _ := dig(c, "ports").([]any)
	for _, p := range ports {
		if dig(p, "name") == portName {
			containerPort, _ = dig(p, "containerPort").(int)
		}
	}
	cm, ok := objs["ConfigMap/"+cfgMap]
	if !ok {
		t.Fatalf("ConfigMap %q is not defined", cfgMap)
	}
	var env []string
	envs, _ := dig(c, "env").([]any)
	for _, e := range envs {
		name := fmt.Sprint(dig(e, "name"))
		if secret, ok := dig(e, "valueFrom", "secretKeyRef", "name").(string); ok {
			if _, ok := objs["Secret/"+secret]; !ok {
				t.Errorf("env %s: Secret %s is not defined", name, secret)
			}
		}
		env = append(env, name+"=from-the-secret")
	}
	args := fmt.Sprint(dig(c, "args"))
	for file, text := range cm.Data {
		if !strings.Contains(args, filepath.Join(cfgDir, file)) {
			t.Errorf("the container's args %s do not name %s", args, filepath.Join(cfgDir, file))
		}
		cfg, err := Parse([]byte(fmt.Sprint(text)), env)
		if err != nil {
			t.Errorf("ConfigMap %s %s: %v", cfgMap, file, err)
			continue
		}
		if !cfg.Relay.HA.Enabled || cfg.Checkpoint.Type != "kafka" {
			t.Errorf("ConfigMap %s %s: relay.ha.enabled %v, checkpoint.type %s; want true, kafka", cfgMap, file, cfg.Relay.HA.Enabled, cfg.Checkpoint.Type)
		}
		if _, port, err := net.SplitHostPort(cfg.Metrics.Listen); err != nil || port != fmt.Sprint(containerPort) {
			t.Errorf("metrics.listen %q does not serve the probes' port %d", cfg.Metrics.Listen, containerPort)
		}
		grace, _ := dig(pod, "terminationGracePeriodSeconds").(int)
		if time.Duration(grace)*time.Second <= cfg.Relay.ShutdownTimeout {
			t.Errorf("terminationGracePeriodSeconds %d must exceed relay.shutdown_timeout %s", grace, cfg.Relay.ShutdownTimeout)
		}
	}
}
