package main

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"
)

// serviceFile is a parsed pg_service.conf: section name -> key (lower-cased) -> value.
type serviceFile map[string]map[string]string

// parseServiceFile reads a pg_service.conf: [section] headers, key=value lines, and # or ;
// comment lines.
func parseServiceFile(r io.Reader) (serviceFile, error) {
	f := serviceFile{}
	var section string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
			continue
		case line[0] == '[':
			if !strings.HasSuffix(line, "]") {
				return nil, fmt.Errorf("line %d: section header %q has no closing ]", n, line)
			}
			section = strings.TrimSpace(line[1 : len(line)-1])
			if f[section] == nil {
				f[section] = map[string]string{}
			}
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: expected key=value, got %q", n, line)
		}
		if section == "" {
			return nil, fmt.Errorf("line %d: %q comes before any [section]", n, line)
		}
		f[section][strings.ToLower(strings.TrimSpace(key))] = strings.TrimSpace(value)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read service file: %w", err)
	}
	return f, nil
}

// connKeys are the settings kept in a node's connection string, in the order they are written.
var connKeys = []string{"host", "port", "dbname", "user", "sslmode", "sslcert", "sslkey", "sslrootcert", "connect_timeout"}

// serviceKeys are the settings read from a service file: connKeys and hostaddr. The agents
// connect with pgx, which has no hostaddr (it would send it to the server as a setting, which
// the server refuses), so a hostaddr becomes the host.
var serviceKeys = append([]string{"hostaddr"}, connKeys...)

// serviceNode is one node of a cluster defined in a service file.
type serviceNode struct {
	Name     string
	Section  string
	ConnInfo string
}

// clusterNodes builds the nodes of cluster from the sections [cluster.<node>], each on top of
// the shared defaults in [cluster]. dbname, if set, overrides the file's. Warnings name what
// was left out.
func clusterNodes(f serviceFile, cluster, dbname string) (nodes []serviceNode, warnings []string, err error) {
	defaults := f[cluster]
	warnings = droppedKeys(cluster, defaults)
	for _, section := range sortedSections(f, cluster+".") {
		settings := merge(defaults, f[section])
		if dbname != "" {
			settings["dbname"] = dbname
		}
		if settings["host"] != "" && settings["hostaddr"] != "" {
			warnings = append(warnings, fmt.Sprintf("[%s]: ignoring hostaddr, as the agents connect to host", section))
		}
		node, err := serviceNodeOf(section, strings.TrimPrefix(section, cluster+"."), settings)
		if err != nil {
			return nil, nil, err
		}
		nodes = append(nodes, node)
		warnings = append(warnings, droppedKeys(section, f[section])...)
	}
	if len(nodes) == 0 {
		return nil, nil, fmt.Errorf("the service file has no [%s.<node>] section for cluster %s", cluster, cluster)
	}
	return nodes, warnings, nil
}

func serviceNodeOf(section, name string, settings map[string]string) (serviceNode, error) {
	switch {
	case name == "":
		return serviceNode{}, fmt.Errorf("section [%s] names no node", section)
	case settings["host"] == "" && settings["hostaddr"] == "":
		return serviceNode{}, fmt.Errorf("node %s ([%s]) has no host", name, section)
	case settings["dbname"] == "":
		return serviceNode{}, fmt.Errorf("node %s ([%s]) has no dbname: set it in the service file or pass --dbname", name, section)
	}
	if settings["host"] == "" {
		settings = merge(settings, map[string]string{"host": settings["hostaddr"]})
	}
	return serviceNode{Name: name, Section: section, ConnInfo: conninfo(settings)}, nil
}

// sortedSections lists the sections whose names start with prefix, sorted.
func sortedSections(f serviceFile, prefix string) []string {
	var names []string
	for name := range f {
		if strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

func merge(base, over map[string]string) map[string]string {
	out := make(map[string]string, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// droppedKeys warns about a section's settings that are not stored in ace.nodes.
func droppedKeys(section string, settings map[string]string) []string {
	var warnings []string
	if _, ok := settings["password"]; ok {
		warnings = append(warnings, fmt.Sprintf("[%s] has a password, which is not stored in ace.nodes: "+
			"put it in ~/.pgpass or in the file PGPASSFILE names, for the user the agents run as", section))
	}
	var ignored []string
	for k := range settings {
		if k != "password" && !isServiceKey(k) {
			ignored = append(ignored, k)
		}
	}
	if len(ignored) > 0 {
		sort.Strings(ignored)
		warnings = append(warnings, fmt.Sprintf("[%s]: ignoring %s", section, strings.Join(ignored, ", ")))
	}
	return warnings
}

func isServiceKey(k string) bool {
	for _, c := range serviceKeys {
		if c == k {
			return true
		}
	}
	return false
}

// conninfo writes settings as a libpq key=value connection string.
func conninfo(settings map[string]string) string {
	var parts []string
	for _, k := range connKeys {
		if v, ok := settings[k]; ok && v != "" {
			parts = append(parts, k+"="+quoteConnValue(v))
		}
	}
	return strings.Join(parts, " ")
}

// quoteConnValue quotes a value the way libpq reads it: in single quotes, with \ and '
// escaped by a backslash, when it is empty or holds a space, a quote or a backslash.
func quoteConnValue(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\n\r\f\v'\\") {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'"
}
