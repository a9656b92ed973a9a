package config

import (
	"strings"
	"testing"
)

// TestSecretTwiceIsAnError: a secret set both as a value (in the file or
// the environment) and as a *_file is an error naming both keys, and never
// showing the secret.
func TestSecretTwiceIsAnError(t *testing.T) {
	t.Parallel()
	kafkaSASL := strings.Replace(valid, "  brokers: [127.0.0.1:9092]\n", `  brokers: [127.0.0.1:9092]
  sasl:
    mechanism: SCRAM-SHA-512
    user: relay
    password_file: /run/secrets/kafka
`, 1)
	tests := []struct {
		name string
		yaml string
		env  []string
		want []string
	}{
		{"mysql password from the environment", strings.Replace(valid, "password: s3cret", "password_file: /run/secrets/db", 1),
			[]string{"OUTBOXRELAY_SOURCE_MYSQL_PASSWORD=s3cret"}, []string{"source.mysql.password", "password_file"}},
		{"mysql password in the file", strings.Replace(valid, "password: s3cret", "password: s3cret\n    password_file: /run/secrets/db", 1),
			nil, []string{"source.mysql.password", "password_file"}},
		{"kafka password from the environment", kafkaSASL, []string{"OUTBOXRELAY_KAFKA_SASL_PASSWORD=s3cret"}, []string{"kafka.sasl.password", "sasl.password_file"}},
		{"postgres dsn twice", `
source:
  type: postgres
  postgres:
    dsn: postgres://relay:s3cret@db/shop
    dsn_file: /run/secrets/dsn
    tables: [public.outbox]
kafka:
  brokers: [127.0.0.1:9092]
checkpoint:
  file:
    path: /tmp/cp.json
`, nil, []string{"source.postgres.dsn", "dsn_file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tt.yaml), tt.env)
			if err == nil {
				t.Fatal("parsed")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error shows the secret: %v", err)
			}
		})
	}
}
