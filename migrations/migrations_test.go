package migrations

import (
	"io/fs"
	"regexp"
	"testing"
)

var (
	routine   = regexp.MustCompile(`(?im)^\s*CREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\s+([a-z0-9_."]+)\s*\(`)
	trigger   = regexp.MustCompile(`(?i)\bCREATE\s+(OR\s+REPLACE\s+)?TRIGGER\b`)
	functions = regexp.MustCompile(`(?i)\bCREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\b`)
	overload  = regexp.MustCompile(`(?m)^-- overload of ([a-z0-9_.]+)\b`)
)

// TestOneDefinitionEach checks the layout migrations.go describes: the numbered migrations
// define no function, procedure or trigger, and every function or procedure of the SQL API has one
// definition in code/, made with CREATE OR REPLACE. The one kind of second definition allowed is
// an overload declared beside the first, in the same file, saying so with "-- overload of" (as
// ace.mark_node_up(node, resync), whose rights differ from ace.mark_node_up(node)'s).
func TestOneDefinitionEach(t *testing.T) {
	files, err := fs.Glob(FS, "*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations: %v", err)
	}
	for _, name := range files {
		body, err := fs.ReadFile(FS, name)
		if err != nil {
			t.Fatal(err)
		}
		if functions.Match(body) || trigger.Match(body) {
			t.Errorf("%s defines a function, procedure or trigger; those belong in code/", name)
		}
	}

	code, err := fs.Glob(Code, "code/*.sql")
	if err != nil || len(code) == 0 {
		t.Fatalf("no code: %v", err)
	}
	seen := map[string]string{}
	for _, name := range code {
		body, err := fs.ReadFile(Code, name)
		if err != nil {
			t.Fatal(err)
		}
		overloads := map[string]bool{}
		for _, m := range overload.FindAllStringSubmatch(string(body), -1) {
			overloads[m[1]] = true
		}
		for _, m := range routine.FindAllStringSubmatch(string(body), -1) {
			if m[1] == "" {
				t.Errorf("%s: %s is made with CREATE, not CREATE OR REPLACE: a second install would fail", name, m[3])
			}
			if prev, ok := seen[m[3]]; ok && !(prev == name && overloads[m[3]]) {
				t.Errorf("%s is defined in %s and again in %s", m[3], prev, name)
			}
			seen[m[3]] = name
		}
	}
	if len(seen) < 40 {
		t.Errorf("found only %d definitions in code/; the pattern has gone stale", len(seen))
	}
}
