package agent

import "time"

// ExpireTreePools closes the kept pools of tree tasks as the agent does once they have been idle
// for treePoolIdle, without a test waiting that long.
func (a *Agent) ExpireTreePools() { a.trees.closeIdle(time.Now().Add(treePoolIdle)) }

// KeepTreePools sets whether the agent keeps the pools of tree tasks; not keeping closes those
// kept. A benchmark compares the two.
func (a *Agent) KeepTreePools(keep bool) {
	a.trees.mu.Lock()
	a.trees.keeping = keep
	a.trees.mu.Unlock()
	if !keep {
		a.ExpireTreePools()
	}
}
