package mysql

import "testing"

func TestMentions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		q    string
		want bool
	}{
		{"ALTER TABLE outbox ADD COLUMN x INT", true},
		{"alter table `shop`.`Outbox` drop column x", true},
		{"RENAME TABLE shop.outbox TO shop.outbox_old", true},
		{"ALTER TABLE outbox_old ADD COLUMN x INT", false},
		{"ALTER TABLE my_outbox ADD COLUMN x INT", false},
		{"CREATE TABLE orders (id INT)", false},
		{"DROP TABLE orders, outbox", true},
	}
	for _, tt := range tests {
		if got := mentions(tt.q, "outbox"); got != tt.want {
			t.Errorf("mentions(%q, outbox) = %v, want %v", tt.q, got, tt.want)
		}
	}
}
