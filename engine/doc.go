// Package engine holds the algorithms of ace-agent, independent of the task queue: node
// connections with pinned session settings, table metadata, range planning, block hashing,
// recursive narrowing and row comparison. Callers hand it node pools and typed options and get
// results streamed into a Sink.
package engine
