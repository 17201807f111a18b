package spockdiff

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
)

// NotInAnySet is ACE's placement of a table that is in no replication set of a node.
const NotInAnySet = "Not in any repset"

// Result is ACE's spock-diff file: every node's configuration and a diff per pair of nodes,
// plus the provider (spock, pglogical, native; "mixed" when the nodes differ in it).
type Result struct {
	Provider    string                `json:"provider"`
	SpockConfig map[string]NodeConfig `json:"spock_config"`
	Diffs       map[string]PairDiff   `json:"diffs"`
}

// Mismatch reports whether any pair of nodes differs.
func (r *Result) Mismatch() bool {
	for _, d := range r.Diffs {
		if d.Mismatch {
			return true
		}
	}
	return false
}

// PairDiff is one pair's diff ("n1/n2", the names in order), in ACE's keys.
type PairDiff struct {
	Mismatch bool       `json:"mismatch"`
	Message  string     `json:"message"`
	Details  PairDetail `json:"details"`
}

// PairDetail is what differs between a pair of nodes.
type PairDetail struct {
	Subscriptions   SubscriptionDiff `json:"subscriptions"`
	ReplicationSets PlacementDiff    `json:"replication_sets"`
}

// SubscriptionDiff lists the reciprocal subscriptions that are missing or differ. node1 is the
// pair's first node.
type SubscriptionDiff struct {
	MissingOnNode1 []string           `json:"missing_on_node1"`
	MissingOnNode2 []string           `json:"missing_on_node2"`
	Different      []SubscriptionPair `json:"different"`
}

// SubscriptionPair is a pair of reciprocal subscriptions that differ: node1's subscription to
// node2 and node2's to node1.
type SubscriptionPair struct {
	Name  string       `json:"name"`
	Node1 Subscription `json:"node1"`
	Node2 Subscription `json:"node2"`
}

// PlacementDiff lists the tables whose sets differ between the pair.
type PlacementDiff struct {
	TablePlacementDiffs []TablePlacement `json:"table_placement_differences"`
}

// TablePlacement is a table's sets on each node of a pair, comma-separated.
type TablePlacement struct {
	TableName   string `json:"table_name"`
	Node1RepSet string `json:"node1_repset"`
	Node2RepSet string `json:"node2_repset"`
}

// Run collects every node's configuration, at once, and compares every pair of nodes.
func Run(ctx context.Context, nodes []*engine.Node) (*Result, error) {
	if len(nodes) < 2 {
		return nil, fmt.Errorf("spock-diff compares at least two nodes, got %d", len(nodes))
	}
	configs := make([]NodeConfig, len(nodes))
	p := pool.New().WithErrors().WithContext(ctx)
	for i, n := range nodes {
		p.Go(func(ctx context.Context) error {
			var err error
			configs[i], err = Collect(ctx, n)
			return err
		})
	}
	if err := p.Wait(); err != nil {
		return nil, err
	}
	byNode := map[string]NodeConfig{}
	for i, n := range nodes {
		byNode[n.Name] = configs[i]
	}
	return Compare(byNode), nil
}

// Compare diffs every pair of the nodes' configurations, keyed by the nodes' ace names.
func Compare(configs map[string]NodeConfig) *Result {
	names := slices.Sorted(maps.Keys(configs))
	resolveNativeProviders(configs)
	r := &Result{Provider: commonProvider(configs), SpockConfig: configs, Diffs: map[string]PairDiff{}}
	aceName := aceNames(configs)
	for i, a := range names {
		for _, b := range names[i+1:] {
			r.Diffs[a+"/"+b] = comparePair(a, b, configs[a], configs[b], aceName)
		}
	}
	return r
}

func commonProvider(configs map[string]NodeConfig) string {
	provider := ""
	for _, c := range configs {
		if provider != "" && provider != c.Provider {
			return "mixed"
		}
		provider = c.Provider
	}
	return provider
}

// resolveNativeProviders names the provider of each native subscription: the other compared
// node that holds its slot. PostgreSQL's catalog names no provider node, and the connection
// string that would is for superusers only.
func resolveNativeProviders(configs map[string]NodeConfig) {
	for name, c := range configs {
		if c.Provider != ProviderNative {
			continue
		}
		for i, s := range c.Subscriptions {
			var holders []string
			for other, oc := range configs {
				if other != name && s.SlotName != "" && slices.Contains(oc.slots, s.SlotName) {
					holders = append(holders, other)
				}
			}
			slices.Sort(holders)
			switch len(holders) {
			case 1:
				c.Subscriptions[i].ProviderNode = holders[0]
			case 0:
				c.Hints = append(c.Hints, fmt.Sprintf("The provider of subscription %q is not among the compared nodes: none of them has its slot %q.", s.SubName, s.SlotName))
			default:
				c.Hints = append(c.Hints, fmt.Sprintf("The provider of subscription %q is unknown: nodes %s all have a slot named %q.", s.SubName, strings.Join(holders, ", "), s.SlotName))
			}
		}
		configs[name] = c
	}
}

// aceNames maps each node's name in its provider's catalog onto its ace node name, so that a
// subscription's provider node can be matched with a compared node.
func aceNames(configs map[string]NodeConfig) map[string]string {
	m := map[string]string{}
	for name, c := range configs {
		m[name] = name
		if c.NodeName != "" {
			m[c.NodeName] = name
		}
	}
	return m
}

func comparePair(a, b string, ca, cb NodeConfig, aceName map[string]string) PairDiff {
	d := PairDiff{Details: PairDetail{
		Subscriptions:   compareSubscriptions(a, b, ca, cb, aceName),
		ReplicationSets: PlacementDiff{TablePlacementDiffs: comparePlacement(ca, cb)},
	}}
	s := d.Details.Subscriptions
	d.Mismatch = len(s.MissingOnNode1)+len(s.MissingOnNode2)+len(s.Different)+len(d.Details.ReplicationSets.TablePlacementDiffs) > 0 ||
		ca.Provider != cb.Provider
	switch {
	case ca.Provider != cb.Provider:
		d.Message = fmt.Sprintf("%s replicates by %s, %s by %s", a, ca.Provider, b, cb.Provider)
	case d.Mismatch:
		d.Message = fmt.Sprintf("%s and %s replicate differently", a, b)
	default:
		d.Message = fmt.Sprintf("%s and %s replicate alike", a, b)
	}
	return d
}

// compareSubscriptions checks that each node of the pair subscribes to the other, and that the
// two subscriptions agree on being enabled, their sets and their forward origins.
func compareSubscriptions(a, b string, ca, cb NodeConfig, aceName map[string]string) SubscriptionDiff {
	d := SubscriptionDiff{MissingOnNode1: []string{}, MissingOnNode2: []string{}, Different: []SubscriptionPair{}}
	onA := subscriptionsFrom(ca, b, aceName)
	onB := subscriptionsFrom(cb, a, aceName)
	if len(onA) == 0 {
		d.MissingOnNode1 = append(d.MissingOnNode1, fmt.Sprintf("a subscription on %s to %s", a, b))
	}
	if len(onB) == 0 {
		d.MissingOnNode2 = append(d.MissingOnNode2, fmt.Sprintf("a subscription on %s to %s", b, a))
	}
	for i := range min(len(onA), len(onB)) {
		if !alike(onA[i], onB[i]) {
			d.Different = append(d.Different, SubscriptionPair{
				Name: fmt.Sprintf("reciprocal subscriptions of %s and %s", a, b), Node1: onA[i], Node2: onB[i]})
		}
	}
	return d
}

// subscriptionsFrom are the node's subscriptions whose provider is the ace node named from.
func subscriptionsFrom(c NodeConfig, from string, aceName map[string]string) []Subscription {
	var subs []Subscription
	for _, s := range c.Subscriptions {
		if aceName[s.ProviderNode] == from {
			subs = append(subs, s)
		}
	}
	return subs
}

func alike(x, y Subscription) bool {
	return x.SubEnabled == y.SubEnabled && slices.Equal(x.ReplicationSets, y.ReplicationSets) &&
		slices.Equal(x.ForwardOrigins, y.ForwardOrigins)
}

// comparePlacement lists every table that is in a set on either node and whose sets differ,
// all of its sets named, in table order.
func comparePlacement(ca, cb NodeConfig) []TablePlacement {
	tables := slices.Sorted(maps.Keys(ca.TableSets))
	for t := range cb.TableSets {
		if _, ok := ca.TableSets[t]; !ok {
			tables = append(tables, t)
		}
	}
	slices.Sort(tables)
	diffs := []TablePlacement{}
	for _, t := range tables {
		sa, sb := joinSets(ca.TableSets[t]), joinSets(cb.TableSets[t])
		if sa != sb {
			diffs = append(diffs, TablePlacement{TableName: t, Node1RepSet: sa, Node2RepSet: sb})
		}
	}
	return diffs
}
