package engine

import "strings"

// KeyedError is a failure whose text quotes key values, such as the bounds of the range being
// hashed. The submitter of a task may not be allowed to read the rows those keys belong to, so
// what a task records for its submitter names the range only by its position (Public), while
// the agent's log keeps the full text (Private).
type KeyedError struct {
	Private string // what was being done, with the key values: "hash range [(1), (100))"
	Public  string // the same without them: "hash range 3 of 12"
	Err     error
}

// WithKeys wraps err as a KeyedError; nil stays nil.
func WithKeys(err error, private, public string) error {
	if err == nil {
		return nil
	}
	return &KeyedError{Private: private, Public: public, Err: err}
}

func (e *KeyedError) Error() string { return e.Private + ": " + e.Err.Error() }

func (e *KeyedError) Unwrap() error { return e.Err }

// Redacted returns err as its submitter may see it: its text with the private part of every
// KeyedError in its tree replaced by the public part. It still unwraps to err.
func Redacted(err error) error {
	if err == nil {
		return nil
	}
	text := err.Error()
	for _, k := range keyedErrors(err) {
		text = strings.ReplaceAll(text, k.Private, k.Public)
	}
	if text == err.Error() {
		return err
	}
	return &redacted{text: text, err: err}
}

type redacted struct {
	text string
	err  error
}

func (r *redacted) Error() string { return r.text }
func (r *redacted) Unwrap() error { return r.err }

// keyedErrors are the KeyedErrors in err's tree, outermost first.
func keyedErrors(err error) []*KeyedError {
	var out []*KeyedError
	var walk func(error)
	walk = func(e error) {
		if e == nil {
			return
		}
		if k, ok := e.(*KeyedError); ok {
			out = append(out, k)
		}
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, inner := range u.Unwrap() {
				walk(inner)
			}
		}
	}
	walk(err)
	return out
}
