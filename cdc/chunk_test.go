package cdc_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/cdc"
)

// A large transaction reaches the Handler in bounded chunks, and its position is confirmed
// only with the last one: the stream never holds it whole, and a crash before the last chunk
// loses nothing.
func TestLargeTransactionInChunks(t *testing.T) {
	t.Parallel()
	e := setupPublished(t, nil)
	e.ensureSlot()
	rec := &recorder{}
	opts := e.options("p")
	opts.ChunkChanges = 100
	r := e.run(opts, rec)
	r.waitConnected(t)
	e.exec(`INSERT INTO t VALUES (0)`)
	rec.waitChanges(t, 1)
	e.exec(`INSERT INTO t SELECT generate_series(1, 1000)`)
	e.exec(`INSERT INTO t VALUES (1001)`)
	rec.waitChanges(t, 1002)
	require.NoError(t, r.stop())

	rec.mu.Lock()
	defer rec.mu.Unlock()
	var big []cdc.Txn // the large transaction's parts, in order
	var upTos []uint64
	for _, a := range rec.applies {
		for _, txn := range a.txns {
			if len(big) > 0 && txn.Xid == big[0].Xid || len(txn.Changes) > 0 && txn.Changes[0].New[0].Text == "1" {
				big, upTos = append(big, txn), append(upTos, uint64(a.upTo))
			}
		}
	}
	require.Greater(t, len(big), 9, "the transaction came in chunks")
	changes := 0
	for i, part := range big {
		changes += len(part.Changes)
		require.LessOrEqual(t, len(part.Changes), 100, "part %d holds more than a chunk", i)
		if i < len(big)-1 {
			require.True(t, part.Partial, "part %d", i)
			require.Less(t, upTos[i], uint64(part.CommitLSN), "a partial transaction is not confirmed")
		}
	}
	require.Equal(t, 1000, changes)
	require.False(t, big[len(big)-1].Partial)
	require.GreaterOrEqual(t, upTos[len(big)-1], uint64(big[len(big)-1].EndLSN), "the last part confirms the transaction")
}

// A change the server fails to decode the same way every time (a row filter that raises) ends
// the stream with ErrDecoding after a few attempts with backoff, instead of reconnecting
// forever.
func TestDecodingFailureIsPermanent(t *testing.T) {
	t.Parallel()
	e := setupPublished(t, nil)
	e.ensureSlot()
	e.exec(`ALTER PUBLICATION p SET TABLE t WHERE (1 / (id - 5) > 0)`)
	rec := &recorder{}
	r := e.run(e.options("p"), rec)
	r.waitConnected(t)
	e.exec(`INSERT INTO t VALUES (6)`)
	rec.waitChanges(t, 1)
	start := time.Now()
	e.exec(`INSERT INTO t VALUES (5)`)
	err := r.wait(t)
	require.ErrorIs(t, err, cdc.ErrDecoding)
	require.ErrorContains(t, err, "division by zero")
	require.Greater(t, time.Since(start), 250*time.Millisecond, "backed off between attempts")
}
