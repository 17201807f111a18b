package shim

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A Config built in code gets the tags' defaults for the limits it leaves at zero, and limits
// that would turn everyone away are refused.
func TestConfigLimits(t *testing.T) {
	t.Parallel()
	c, err := Config{MaxStreamsPerCN: 7}.withDefaults()
	require.NoError(t, err)
	require.Equal(t, 7, c.MaxStreamsPerCN)
	require.Equal(t, 64, c.MaxStreams)
	require.Equal(t, int64(1<<20), c.MaxBodyBytes)
	require.Equal(t, int64(64<<20), c.MaxUploadBytes)
	require.Equal(t, 250*time.Millisecond, c.EventMinInterval)
	require.Empty(t, c.MetricsListen, "an empty address stays off")
	require.NoError(t, c.checkLimits())

	c.MaxUploadsPerCN = -1
	require.ErrorContains(t, c.checkLimits(), "ACE_SHIM_MAX_UPLOADS_PER_CN must not be negative")
	c.MaxUploadsPerCN, c.MaxUploadBytes = 2, 1000
	require.ErrorContains(t, c.checkLimits(), "ACE_SHIM_MAX_UPLOAD_BYTES (1000) must be at least")
}
