package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// parentDiffOpts are the flags schema-diff and repset-diff share: the nodes, the tables to
// leave out, and the options of the child table-diff each table gets.
type parentDiffOpts struct {
	tableDiffOpts
	skipTables string
	skipFile   string
}

// bind registers the shared flags; dataPrefix starts the help of the child diffs' options, and
// filterHelp is --table-filter's.
func (o *parentDiffOpts) bind(f *pflag.FlagSet, dataPrefix, filterHelp string) {
	f.StringVarP(&o.nodes, "nodes", "n", "all", "nodes to compare: a comma-separated list, or all")
	f.StringVarP(&o.skipTables, "skip-tables", "T", "", "tables to leave out: a comma-separated list of table or schema.table")
	f.StringVarP(&o.skipFile, "skip-file", "s", "", "a file of tables to leave out, one per line")
	f.IntVarP(&o.blockSize, "block-size", "b", 0, dataPrefix+"rows per initial block (default: the agent's)")
	f.IntVarP(&o.compareUnitSize, "compare-unit-size", "u", 0, dataPrefix+"rows per block compared row by row")
	f.StringVarP(&o.tableFilter, "table-filter", "F", "", filterHelp)
	f.Int64Var(&o.maxDiffRows, "max-diff-rows", 0, dataPrefix+"stop a table once a node pair has this many differing rows")
	f.Float64VarP(&o.concurrencyFactor, "concurrency-factor", "c", 0, dataPrefix+"blocks hashed at once per node = CPUs × this, in (0, 4]")
	f.IntVarP(&o.maxConnections, "max-connections", "M", 0, dataPrefix+"cap on connections per node")
	f.BoolVarP(&o.overrideBlockSize, "override-block-size", "B", false, dataPrefix+"allow a block size outside 1000..1000000")
	f.StringVarP(&o.output, "output", "o", "json", "ACE's output flag: json only (the result is in the ace schema; print it with --json)")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "show no progress")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
}

// checkOutput refuses an --output other than ACE's json: the tables' diffs are exported one by
// one.
func (o *parentDiffOpts) checkOutput(command string) error {
	if o.output != "json" {
		return fmt.Errorf("%s --output %q: only json; each table's diff can be exported with 'ace-agent diff export <task_id>'", command, o.output)
	}
	return nil
}

// skip is --skip-tables and the lines of --skip-file, read here: the server opens no path a
// caller names.
func (o *parentDiffOpts) skip() ([]string, error) {
	skip := parseNodes(o.skipTables)
	if o.skipFile == "" {
		return skip, nil
	}
	fromFile, err := readSkipFile(o.skipFile)
	if err != nil {
		return nil, err
	}
	return append(skip, fromFile...), nil
}

// childArgs are the options of each table's child table-diff.
func (o *parentDiffOpts) childArgs() sqlapi.ChildDiffArgs {
	return sqlapi.ChildDiffArgs{BlockSize: o.blockSize, TableFilter: o.tableFilter, MaxDiffRows: o.maxDiffRows,
		CompareUnitSize: o.compareUnitSize, ConcurrencyFactor: o.concurrencyFactor, MaxConnections: o.maxConnections,
		OverrideBlockSize: o.overrideBlockSize}
}
