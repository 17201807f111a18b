package spockdiff

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func nativeNode(name string, slots []string, subs ...Subscription) NodeConfig {
	return NodeConfig{NodeName: name, Provider: ProviderNative, Subscriptions: subs, TableSets: map[string][]string{}, slots: slots}
}

// TestNativeProviderBySlot: a subscription's provider is the one other node holding its slot;
// when two do, it is not guessed.
func TestNativeProviderBySlot(t *testing.T) {
	sub := func(name, slot string) Subscription {
		return Subscription{SubName: name, SlotName: slot, SubEnabled: true}
	}
	r := Compare(map[string]NodeConfig{
		"n1": nativeNode("n1", []string{"b_from_a"}, sub("a_from_b", "a_from_b"), sub("a_from_c", "twice")),
		"n2": nativeNode("n2", []string{"a_from_b", "twice"}, sub("b_from_a", "b_from_a")),
		"n3": nativeNode("n3", []string{"twice"}),
	})
	n1 := r.SpockConfig["n1"]
	require.Equal(t, "n2", n1.Subscriptions[0].ProviderNode)
	require.Empty(t, n1.Subscriptions[1].ProviderNode)
	require.Contains(t, n1.Hints, `The provider of subscription "a_from_c" is unknown: nodes n2, n3 all have a slot named "twice".`)
	require.False(t, r.Diffs["n1/n2"].Mismatch, "%+v", r.Diffs["n1/n2"])
	require.True(t, r.Diffs["n1/n3"].Mismatch)
}

// TestMixedProviders: nodes that replicate by different providers differ, whatever else.
func TestMixedProviders(t *testing.T) {
	spock := nativeNode("n2", nil)
	spock.Provider = ProviderSpock
	r := Compare(map[string]NodeConfig{"n1": nativeNode("n1", nil), "n2": spock})
	require.Equal(t, "mixed", r.Provider)
	require.True(t, r.Diffs["n1/n2"].Mismatch)
	require.Equal(t, "n1 replicates by native, n2 by spock", r.Diffs["n1/n2"].Message)
}
