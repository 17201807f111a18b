package agent

import (
	"context"
	"sync"

	"github.com/ace-agent/ace-agent/engine"
)

// peerSessions keeps one open session per node, on the agent's own login, for a collector that
// asks every node something every heartbeat: collecting then does not connect (and, with
// certificates, handshake) every heartbeat. A question that fails on a kept session is asked
// again once on a fresh one, because a session the peer dropped says nothing about the peer.
type peerSessions struct {
	a     *Agent
	mu    sync.Mutex // a collector may ask its nodes at once
	peers map[string]peer
}

// peer is an open session to a node, and the connection string it was opened with.
type peer struct {
	conninfo string
	node     *engine.Node
}

func newPeerSessions(a *Agent) *peerSessions { return &peerSessions{a: a, peers: map[string]peer{}} }

// ask runs fn on a session to the node, kept from earlier collections when there is one.
func (s *peerSessions) ask(ctx context.Context, name, conninfo string, fn func(*engine.Node) error) error {
	if n := s.take(name, conninfo); n != nil {
		if err := fn(n); err == nil {
			s.keep(name, conninfo, n)
			return nil
		}
		n.Close()
	}
	n, err := engine.OpenNode(ctx, engine.NodeOptions{Name: name, ConnInfo: conninfo, User: s.a.user, ClientCerts: s.a.clientCerts, MaxConns: 1})
	if err != nil {
		return err
	}
	if err := fn(n); err != nil {
		n.Close()
		return err
	}
	s.keep(name, conninfo, n)
	return nil
}

// take removes the node's kept session from the set and returns it; a session opened with
// another connection string is closed instead.
func (s *peerSessions) take(name, conninfo string) *engine.Node {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.peers[name]
	if !ok {
		return nil
	}
	delete(s.peers, name)
	if p.conninfo != conninfo {
		p.node.Close()
		return nil
	}
	return p.node
}

func (s *peerSessions) keep(name, conninfo string, n *engine.Node) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.peers[name]; ok {
		old.node.Close()
	}
	s.peers[name] = peer{conninfo: conninfo, node: n}
}

// retain closes the sessions to nodes that are no longer registered (every session when
// conninfo is nil).
func (s *peerSessions) retain(conninfo map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, p := range s.peers {
		if _, ok := conninfo[name]; !ok {
			p.node.Close()
			delete(s.peers, name)
		}
	}
}
