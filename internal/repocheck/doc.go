// Package repocheck holds checks on the repository itself rather than on the code: today, that no
// tracked file is larger than 1 MB unless testdata/large-files.txt names it as a fixture with a
// reason, so build output (such as a stray bench binary) never lands in git again. The checks are
// tests, so they run under `make test` and in CI.
package repocheck
