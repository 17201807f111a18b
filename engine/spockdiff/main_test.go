package spockdiff_test

import (
	"testing"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

func TestMain(m *testing.M) { testcluster.Main(m) }
