package agent

import "time"

// ExpireTreePools closes the kept pools of tree tasks as the agent does once they have been idle
// for treePoolIdle, without a test waiting that long.
func (a *Agent) ExpireTreePools() { a.trees.closeIdle(time.Now().Add(treePoolIdle)) }
