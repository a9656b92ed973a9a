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

// TestComposeRelaysMatchTheirServices: one relay per database, each with a
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
			t.Errorf("relays %s and %s both read a %s source", name, other, cfg.Source.Type)
		}
		sources[cfg.Source.Type] = name
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
		t.Errorf("want one relay per database (mysql and postgres), have %v", sources)
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
