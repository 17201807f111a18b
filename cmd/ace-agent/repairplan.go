package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// Repair plans are ACE's YAML (or JSON) files; the server takes them as JSON. The CLI reads the
// file and converts it, anchors and aliases resolved, scalars kept as written (a key 0042 stays
// the string or number YAML says it is; a date stays its text).

// planArg reads --repair-plan: an existing file is a plan given inline; anything else that does
// not look like a path is the name of a saved plan.
func planArg(v string) (name string, plan json.RawMessage, err error) {
	if v == "" {
		return "", nil, nil
	}
	if _, statErr := os.Stat(v); statErr == nil {
		plan, err = readPlanFile(v)
		return "", plan, err
	}
	if strings.ContainsRune(v, os.PathSeparator) || hasPlanExtension(v) {
		return "", nil, fmt.Errorf("repair plan file %s does not exist (a saved plan's name has no path or extension)", v)
	}
	return v, nil, nil
}

func hasPlanExtension(v string) bool {
	switch strings.ToLower(filepath.Ext(v)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// readPlanFile reads a repair plan file as JSON.
func readPlanFile(path string) (json.RawMessage, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read repair plan: %w", err)
	}
	plan, err := yamlToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("read repair plan %s: %w", path, err)
	}
	return plan, nil
}

// yamlToJSON converts one YAML document (JSON is YAML) to JSON.
func yamlToJSON(raw []byte) (json.RawMessage, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("not YAML or JSON: %w", err)
	}
	if doc.Kind == 0 {
		return nil, errors.New("the file is empty")
	}
	v, err := nodeValue(&doc)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// nodeValue is a YAML node as a value encoding/json writes.
func nodeValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return nodeValue(n.Content[0])
	case yaml.AliasNode:
		return nodeValue(n.Alias)
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := nodeValue(c)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		return mappingValue(n)
	}
	return scalarValue(n)
}

// mappingValue is a mapping as a JSON object; a merge key (<<) adds the keys it names that the
// mapping does not set itself.
func mappingValue(n *yaml.Node) (map[string]any, error) {
	out := map[string]any{}
	var merged []map[string]any
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, vn := n.Content[i], n.Content[i+1]
		v, err := nodeValue(vn)
		if err != nil {
			return nil, err
		}
		if k.Tag == "!!merge" {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("line %d: a merge key (<<) must name a mapping", k.Line)
			}
			merged = append(merged, m)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("line %d: a key must be a plain value", k.Line)
		}
		out[k.Value] = v
	}
	for _, m := range merged {
		for k, v := range m {
			if _, set := out[k]; !set {
				out[k] = v
			}
		}
	}
	return out, nil
}

func scalarValue(n *yaml.Node) (any, error) {
	switch n.ShortTag() {
	case "!!null":
		return nil, nil
	case "!!bool":
		var b bool
		err := n.Decode(&b)
		return b, err
	case "!!int":
		if json.Valid([]byte(n.Value)) {
			return json.Number(n.Value), nil
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: integer %s: %w", n.Line, n.Value, err)
		}
		return i, nil
	case "!!float":
		if json.Valid([]byte(n.Value)) {
			return json.Number(n.Value), nil
		}
		var f float64
		if err := n.Decode(&f); err != nil {
			return nil, fmt.Errorf("line %d: number %s: %w", n.Line, n.Value, err)
		}
		return f, nil
	}
	return n.Value, nil // strings, timestamps and anything else: the text as written
}

func newRepairPlanCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repair-plan",
		Short: "Work with repair plans (ACE's rule files)",
	}
	cmd.AddCommand(newRepairPlanImportCmd(g))
	return cmd
}

func newRepairPlanImportCmd(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Check a repair plan file and save it under a name",
		Long: `Check a repair plan (ACE's YAML, or JSON) and save it as one of your plans, replacing one of the
same name (ace.save_repair_plan). Only you see and change your plans. Repair with it by name:
ace-agent table-repair --diff-task ID --repair-plan NAME, or ace.table_repair(id, repair_plan => 'NAME').`,
		Example: `  ace-agent repair-plan import repair-plan-latest-wins.yaml --name latest_wins`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			plan, err := readPlanFile(args[0])
			if err != nil {
				return err
			}
			if name == "" {
				name = strings.TrimSuffix(filepath.Base(args[0]), filepath.Ext(args[0]))
			}
			var stored []byte
			err = withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) (err error) {
				stored, err = sqlapi.SaveRepairPlan(ctx, conn, name, plan)
				return err
			})
			if err != nil {
				return err
			}
			var doc struct {
				Tables map[string]json.RawMessage `json:"tables"`
			}
			if err := json.Unmarshal(stored, &doc); err != nil {
				return fmt.Errorf("decode the saved plan: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved repair plan %s (%d tables)\n", name, len(doc.Tables))
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the plan's name (default: the file's name without its extension)")
	return cmd
}
