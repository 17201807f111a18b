// Package repocheck holds checks on the repository itself rather than on the code's behaviour:
// that no tracked file is larger than 1 MB unless testdata/large-files.txt names it as a fixture
// with a reason, so build output (such as a stray bench binary) never lands in git again; that
// every statement writing an ace table, and every call of a SQL function that writes one, is in
// the table's one owner, as ARCHITECTURE.md names it;
// and that engine sends no notification. The checks are tests, so they run under `make test` and
// in CI.
package repocheck
