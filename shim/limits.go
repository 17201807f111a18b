package shim

import (
	"fmt"
	"net/http"
	"sync"
)

// slots counts what client CNs hold at once (event streams, uploads): at most perCN each, and
// at most total over all CNs (0: no cap over all), so one certificate cannot take what others
// need.
type slots struct {
	what                 string // "event streams"
	perCN, total         int
	perCNName, totalName string // the settings, named in refusals
	mu                   sync.Mutex
	held                 map[string]int
	sum                  int
}

func newSlots(what string, perCN int, perCNName string, total int, totalName string) *slots {
	return &slots{what: what, perCN: perCN, perCNName: perCNName, total: total, totalName: totalName, held: map[string]int{}}
}

// take holds one slot for cn; release gives it back (call it once).
func (s *slots) take(cn string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.held[cn] >= s.perCN:
		return nil, &statusError{http.StatusTooManyRequests, fmt.Sprintf(
			"CN %q already has %d %s open, the most one CN may have (%s): wait for one to end, then retry", cn, s.held[cn], s.what, s.perCNName)}
	case s.total > 0 && s.sum >= s.total:
		return nil, &statusError{http.StatusTooManyRequests, fmt.Sprintf(
			"the shim already serves %d %s, the most it serves at once (%s): retry later", s.sum, s.what, s.totalName)}
	}
	s.held[cn]++
	s.sum++
	var once sync.Once
	return func() { once.Do(func() { s.give(cn) }) }, nil
}

func (s *slots) give(cn string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[cn]--; s.held[cn] <= 0 {
		delete(s.held, cn)
	}
	s.sum--
}

// count is how many slots are held over all CNs.
func (s *slots) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sum
}

// statusError is a refusal with its own HTTP status (413, 429, 408, 400), worded for the client.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }
