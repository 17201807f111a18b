package repair

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/big"
	"math/bits"
)

// rangeSum is the writer a key range's COPY TO STDOUT (text format) writes to: each line is a
// row whose last field is its digest in hex. It passes each row on without that field, and
// adds the digests up as engine.SummarySQL does: the row count, and the exact sums of the
// big-endian signed 64-bit integers in the digest's bytes 0-7 (lane 1) and 8-15 (lane 2). In
// COPY's text format a tab or a newline inside a value is escaped, so the last tab of a line
// starts the digest, and a newline ends the row.
type rangeSum struct {
	out     *bufio.Writer
	partial []byte
	rows    int64
	lanes   [2]int128
	err     error
}

func newRangeSum(w io.Writer) *rangeSum {
	return &rangeSum{out: bufio.NewWriterSize(w, 1<<16)}
}

// Write takes what COPY sent (a row a message, but any cut is taken).
func (s *rangeSum) Write(p []byte) (int, error) {
	n := len(p)
	if len(s.partial) > 0 {
		s.partial = append(s.partial, p...)
		p, s.partial = s.partial, nil
	}
	for len(p) > 0 {
		end := bytes.IndexByte(p, '\n')
		if end < 0 {
			s.partial = append(s.partial, p...)
			break
		}
		if err := s.row(p[:end]); err != nil {
			return 0, err
		}
		p = p[end+1:]
	}
	return n, nil
}

// row passes one row on without its digest, and adds the digest.
func (s *rangeSum) row(line []byte) error {
	tab := bytes.LastIndexByte(line, '\t')
	var digest [16]byte
	if tab < 0 || len(line)-tab-1 < 32 {
		return fmt.Errorf("a copied row has no digest")
	}
	if _, err := hex.Decode(digest[:], line[tab+1:tab+33]); err != nil {
		return fmt.Errorf("read a copied row's digest: %w", err)
	}
	s.rows++
	s.lanes[0].add(int64(binary.BigEndian.Uint64(digest[:8])))
	s.lanes[1].add(int64(binary.BigEndian.Uint64(digest[8:])))
	if _, err := s.out.Write(line[:tab]); err != nil {
		return err
	}
	return s.out.WriteByte('\n')
}

// flush writes out what is buffered; a row left without its end is an error.
func (s *rangeSum) flush() error {
	if len(s.partial) > 0 {
		return fmt.Errorf("the copy of a range ended inside a row")
	}
	return s.out.Flush()
}

// result is the row count and the two lanes as decimal text, as SummarySQL prints them.
func (s *rangeSum) result() (rows int64, lane1, lane2 string) {
	return s.rows, s.lanes[0].String(), s.lanes[1].String()
}

// int128 is a two's-complement 128-bit integer: sums of up to 2^64 signed 64-bit values.
type int128 struct {
	hi int64
	lo uint64
}

func (x *int128) add(v int64) {
	var carry uint64
	x.lo, carry = bits.Add64(x.lo, uint64(v), 0)
	x.hi += int64(carry) + v>>63 // v>>63 is -1 for a negative v: its sign extension
}

func (x int128) String() string {
	n := new(big.Int).Lsh(big.NewInt(x.hi), 64)
	return n.Add(n, new(big.Int).SetUint64(x.lo)).String()
}
