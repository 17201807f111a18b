// Package mtree keeps Merkle trees of tables on every node and compares them: Build (the
// publication, the stream handshake, leaves cut at the reference node's keys), Diff (catch-up,
// refresh, rebalance, compare), Teardown, and Compact, which the agent's tree keeper calls to
// fold pending changes onto leaves. It writes the tree tables on the agent's login and reads
// tables as the submitter. It is the one writer of the tree tables: the records the agent's tree
// keeper and status collector write (stream batches, stream state, every node's tree status) are
// its functions too (streams.go). It sends no notification: a task tells the node's agent what
// it did through the NodeLogins' WakeFunc, which the agent provides.
//
// A tree's leaves are key ranges, the same on every node, each holding the node's row count
// there and a summary of its rows, made as a table-diff makes its own (engine.RowHash), so trees
// and diffs share one encoding and one hash version. The build chooses the summary once for the
// tree (diff.OrderedKeyRanges): where every node stores the table in about key order, one
// SHA-256 over the leaf's row encodings in key order (engine.LeafDigestSQL), about half the
// hashing of a build; otherwise the exact sums of two 64-bit lanes of the rows' digests, which
// add up, so that a leaf that differs can be settled by its changed keys alone. Parents are never
// stored: they are sums of leaves (lanes added with their counts, never XORed), or a SHA-256 of
// their leaves' ids, counts and digests.
//
// Each node's agent streams its node's changes (package cdc) into ace.mtree_pending; nothing
// here reads the stream. A diff first waits until every node's stream has delivered everything
// written before the diff began, then, holding each tree's row lock, maps the pending keys to
// leaves, rehashes the leaves they touched at the diff's snapshot, splits and merges leaves
// identically on every node, and compares: parents first, then the leaves of the parents that
// differ, then the rows of the leaves that differ (engine/diff).
//
// A change is taken as included in a refresh only if its transaction is visible in the
// refresh's snapshot: a transaction whose commit record the stream delivered can still be
// invisible for a moment (or for as long as a synchronous standby takes to answer), and its
// leaf then stays dirty until the next refresh.
package mtree
