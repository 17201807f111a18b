// Package acefile owns the file formats of pgEdge ACE that ace-agent reads and writes, in both
// directions, so that what ACE's files look like is written down in one place:
//
//   - difffile.go: the diff file (table-diff's JSON output): its Go types (DiffFile, its
//     Summary, the rows of each node pair with their "_spock_metadata_"), and reading it
//     (ReadDiffFile, SplitRow, CheckRowShape, Key). engine/diff.ImportACEDiff uses them.
//   - write.go: writing a diff file as ACE lays it out (WriteDiffFile, NodePairs, MetaOf);
//     engine/report turns a diff's rows into it.
//   - repairreport.go: ACE's repair report (RepairReport, with its supplied_args ReportArgs);
//     repair.ACERepairReport hands it a repair's recorded actions.
//
// The package knows nothing of the engine: callers convert their results into these types, each
// conversion in one place (engine for import, engine/repair for the repair report, engine/report
// for export).
package acefile
