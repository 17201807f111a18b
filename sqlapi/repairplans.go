package sqlapi

import (
	"context"
	"encoding/json"
	"fmt"
)

// SaveRepairPlan validates a repair plan (ACE's format, as JSON) and stores it as one of the
// caller's plans under name, replacing one of that name (ace.save_repair_plan). It returns the
// plan as stored, normalised.
func SaveRepairPlan(ctx context.Context, q Querier, name string, plan json.RawMessage) (json.RawMessage, error) {
	var stored []byte
	if err := q.QueryRow(ctx, `SELECT ace.save_repair_plan($1, $2::jsonb)`, name, string(plan)).Scan(&stored); err != nil {
		return nil, fmt.Errorf("save repair plan %s: %w", name, err)
	}
	return stored, nil
}

// ValidateRepairPlan checks a repair plan and returns it normalised (ace.validate_repair_plan);
// with a table, for that table.
func ValidateRepairPlan(ctx context.Context, q Querier, plan json.RawMessage, table string) (json.RawMessage, error) {
	var out []byte
	var tbl *string
	if table != "" {
		tbl = &table
	}
	if err := q.QueryRow(ctx, `SELECT ace.validate_repair_plan($1::jsonb, $2)`, string(plan), tbl).Scan(&out); err != nil {
		return nil, fmt.Errorf("validate repair plan: %w", err)
	}
	return out, nil
}
