package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestConfigurationDocCoversEveryKey keeps docs/configuration.md in step
// with the config structs: every key and its environment variable must be
// documented, and every documented key must exist.
func TestConfigurationDocCoversEveryKey(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	names := EnvNames()
	for key, env := range names {
		if !strings.Contains(doc, "`"+key+"`") {
			t.Errorf("docs/configuration.md does not document `%s`", key)
		}
		if !strings.Contains(doc, env) {
			t.Errorf("docs/configuration.md does not name %s", env)
		}
	}
	// Documented keys are the rows of the reference tables, those whose
	// header is "| key | default | environment variable | …".
	inKeys := false
	for _, line := range strings.Split(doc, "\n") {
		switch {
		case strings.HasPrefix(line, "| key | default |"):
			inKeys = true
			continue
		case !strings.HasPrefix(line, "|"):
			inKeys = false
		}
		if !inKeys || !strings.HasPrefix(line, "| `") {
			continue
		}
		key := strings.Trim(strings.SplitN(line, "|", 3)[1], " `")
		if !strings.Contains(key, ".") {
			continue
		}
		if _, ok := names[key]; !ok {
			t.Errorf("docs/configuration.md documents %q, which is not a config key", key)
		}
	}
}

// TestExampleConfigsParse loads every example relay config as the binary
// would (secrets come from the environment in the examples).
func TestExampleConfigsParse(t *testing.T) {
	t.Parallel()
	paths, _ := filepath.Glob("../../examples/*/relay*.yaml")
	if len(paths) == 0 {
		t.Fatal("no example configs found")
	}
	for _, p := range paths {
		if _, err := Load(p, nil); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// TestComposeFileReferencesExist parses docker-compose.yml (it cannot run
// here) and checks that the files its services mount and build exist.
func TestComposeFileReferencesExist(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Image   string   `yaml:"image"`
			Build   any      `yaml:"build"`
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	if len(compose.Services) == 0 {
		t.Fatal("no services")
	}
	for name, s := range compose.Services {
		if s.Image == "" && s.Build == nil {
			t.Errorf("service %s has neither image nor build", name)
		}
		if s.Build != nil {
			if _, err := os.Stat("../../Dockerfile"); err != nil {
				t.Errorf("service %s builds, but there is no Dockerfile", name)
			}
		}
		for _, v := range s.Volumes {
			src := strings.SplitN(v, ":", 2)[0]
			if strings.HasPrefix(src, "./") {
				if _, err := os.Stat(filepath.Join("../..", src)); err != nil {
					t.Errorf("service %s mounts %s, which does not exist", name, src)
				}
			} else if _, ok := compose.Volumes[src]; !ok {
				t.Errorf("service %s mounts undeclared volume %s", name, src)
			}
		}
	}
}

// TestReadmeShowsTheOutboxDDL: the README's outbox tables are those of
// the examples.
func TestReadmeShowsTheOutboxDDL(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for path, table := range map[string]string{"../../examples/mysql/init.sql": "shop.outbox", "../../examples/postgres/init.sql": "public.outbox"} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sql := string(b)
		i := strings.Index(sql, "CREATE TABLE IF NOT EXISTS "+table)
		j := strings.Index(sql[max(i, 0):], ");")
		if i < 0 || j < 0 {
			t.Fatalf("%s: no CREATE TABLE %s", path, table)
		}
		if ddl := sql[i : i+j+2]; !strings.Contains(string(readme), ddl) {
			t.Errorf("README.md lacks the outbox table of %s:\n%s", path, ddl)
		}
	}
}
