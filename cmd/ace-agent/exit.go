package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Exit codes of every command.
const (
	exitOK      = 0 // success, or the tables are in sync
	exitDiffers = 1 // differences found
	exitError   = 2 // anything went wrong
)

// codedError carries an exit code other than exitError. With a nil err, nothing is printed.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *codedError) Unwrap() error { return e.err }

// errDiffers ends a command that found differences and has already reported them.
var errDiffers = &codedError{code: exitDiffers}

// exitCode maps an error to the process's exit code.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var c *codedError
	if errors.As(err, &c) {
		return c.code
	}
	return exitError
}

// hintedError is an error with advice on what to do about it.
type hintedError struct {
	err  error
	hint string
}

func (e *hintedError) Error() string { return e.err.Error() }
func (e *hintedError) Unwrap() error { return e.err }

func withHint(err error, hint string) error { return &hintedError{err: err, hint: hint} }

// reportError prints err as "ace-agent: <message>", followed by the server's detail and a hint
// when there is one.
func reportError(w io.Writer, err error) {
	var c *codedError
	if err == nil || (errors.As(err, &c) && c.err == nil) {
		return
	}
	msg := err.Error()
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		// "ERROR: <message> (SQLSTATE …)" reads badly after "ace-agent:"; the message says it all.
		msg = strings.Replace(msg, pg.Error(), pg.Message, 1)
	}
	fmt.Fprintf(w, "ace-agent: %s\n", msg)
	if pg != nil && pg.Detail != "" {
		fmt.Fprintf(w, "detail: %s\n", pg.Detail)
	}
	if hint := errorHint(err); hint != "" {
		fmt.Fprintf(w, "hint: %s\n", hint)
	}
}

// errorHint is our own hint if the error has one, else PostgreSQL's.
func errorHint(err error) string {
	var h *hintedError
	if errors.As(err, &h) {
		return h.hint
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Hint
	}
	return ""
}
