package engine

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// PostgreSQL keeps the analysed form of a stored expression or query (a view's rule, a CHECK
// constraint, a column default) as a pg_node_tree: the text form of its parse tree, as
// nodeToString writes it, e.g. {OPEXPR :opno 96 :opfuncid 65 :args ({VAR …} {CONST …})}. That
// tree names every function, operator, type and collation by OID, after PostgreSQL's own
// parser has resolved names, overloads, implicit casts and string literals, so reading it is
// the one reliable way to know what an expression will run. This file reads that text form.

// pgNode is one node of a parse tree: its type (OPEXPR, VAR, …) and its fields. A field holds
// a *pgNode, a []any (a list), a string (a scalar token) or nil (<>).
type pgNode struct {
	typ    string
	fields map[string]any
}

// parseNodeTree reads a pg_node_tree's text.
func parseNodeTree(s string) (any, error) {
	p := &treeParser{toks: tokenizeNodeTree(s)}
	v, err := p.value()
	if err != nil {
		return nil, fmt.Errorf("read a parse tree: %w", err)
	}
	if p.pos != len(p.toks) {
		return nil, fmt.Errorf("read a parse tree: unexpected %q after its end", p.toks[p.pos])
	}
	return v, nil
}

// tokenizeNodeTree splits the text as PostgreSQL's pg_strtok does: parentheses and braces are
// tokens of their own, whitespace separates tokens, and a backslash makes the next character
// part of the token.
func tokenizeNodeTree(s string) []string {
	var toks []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\n' || c == '\t' || c == '\r':
			i++
		case c == '(' || c == ')' || c == '{' || c == '}':
			toks = append(toks, s[i:i+1])
			i++
		default:
			start := i
			for i < len(s) && !strings.ContainsRune(" \n\t\r(){}", rune(s[i])) {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				i++
			}
			toks = append(toks, s[start:i])
		}
	}
	return toks
}

type treeParser struct {
	toks []string
	pos  int
}

func (p *treeParser) next() (string, error) {
	if p.pos >= len(p.toks) {
		return "", fmt.Errorf("the tree ends early")
	}
	t := p.toks[p.pos]
	p.pos++
	return t, nil
}

func (p *treeParser) peek() string {
	if p.pos >= len(p.toks) {
		return ""
	}
	return p.toks[p.pos]
}

// value reads a node, a list, <> or a scalar. A Datum (a Const's value: its length, then its
// bytes in brackets) is read as its length.
func (p *treeParser) value() (any, error) {
	t, err := p.next()
	if err != nil {
		return nil, err
	}
	switch t {
	case "<>":
		return nil, nil
	case "{":
		return p.node()
	case "(":
		return p.list()
	case ")", "}":
		return nil, fmt.Errorf("unexpected %q", t)
	}
	if p.peek() == "[" {
		for t, err := p.next(); t != "]"; t, err = p.next() {
			if err != nil {
				return nil, err
			}
		}
	}
	return t, nil
}

func (p *treeParser) node() (*pgNode, error) {
	typ, err := p.next()
	if err != nil {
		return nil, err
	}
	n := &pgNode{typ: typ, fields: map[string]any{}}
	for p.peek() != "}" {
		name, err := p.next()
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(name, ":") {
			return nil, fmt.Errorf("node %s: want a field name, got %q", typ, name)
		}
		if n.fields[name[1:]], err = p.value(); err != nil {
			return nil, fmt.Errorf("node %s, field %s: %w", typ, name, err)
		}
	}
	p.pos++
	return n, nil
}

func (p *treeParser) list() ([]any, error) {
	out := []any{}
	for p.peek() != ")" {
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	p.pos++
	return out, nil
}

// oidList reads an OID list field, written as (o 1 2 3).
func oidList(v any) []uint32 {
	items, _ := v.([]any)
	var out []uint32
	for _, it := range items {
		if s, ok := it.(string); ok {
			if oid, err := strconv.ParseUint(s, 10, 32); err == nil {
				out = append(out, uint32(oid))
			}
		}
	}
	return out
}

// oidField reads a scalar OID field; 0 when absent.
func oidField(n *pgNode, name string) uint32 {
	s, _ := n.fields[name].(string)
	oid, _ := strconv.ParseUint(s, 10, 32)
	return uint32(oid)
}

// treeDifference returns the path of the first difference between two trees, ignoring the
// fields in skip (anywhere in the tree), or "" when they are the same. same decides, for a
// scalar field that differs, whether the difference counts.
func treeDifference(a, b any, path string, skip map[string]bool, same func(field, a, b string) bool) string {
	switch x := a.(type) {
	case *pgNode:
		y, ok := b.(*pgNode)
		if !ok || x.typ != y.typ {
			return path
		}
		for _, name := range unionKeys(x.fields, y.fields) {
			if skip[name] {
				continue
			}
			if d := treeDifference(x.fields[name], y.fields[name], path+"."+name, skip, same); d != "" {
				return d
			}
		}
		return ""
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return path
		}
		for i := range x {
			if d := treeDifference(x[i], y[i], fmt.Sprintf("%s[%d]", path, i), skip, same); d != "" {
				return d
			}
		}
		return ""
	case string:
		y, ok := b.(string)
		if !ok || (x != y && !same(lastField(path), x, y)) {
			return path
		}
		return ""
	}
	if b != nil {
		return path
	}
	return ""
}

func lastField(path string) string {
	return path[strings.LastIndex(path, ".")+1:]
}

func unionKeys(a, b map[string]any) []string {
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}
