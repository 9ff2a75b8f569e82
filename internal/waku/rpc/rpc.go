// Package rpc holds what Waku's request-response protocols (66/WAKU2-METADATA,
// Store v3, lightpush v3) have in common: each side writes one protobuf
// message, uvarint length-prefixed, on a fresh libp2p stream; requests carry
// a random id; Store and lightpush answer with a status code (StatusError);
// and a peer's messages are decoded strictly (Unmarshal).
package rpc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrFrameTooLarge is a frame whose announced length is over the reader's
// limit; nothing of it was read.
var ErrFrameTooLarge = errors.New("frame too large")

// UnknownRequestID is the request id nwaku answers with when it did not read
// the request (rate limited, or undecodable): it has no id of the
// requester's to echo.
const UnknownRequestID = "N/A"

// WriteFrame writes a uvarint length prefix and b in one write (go-msgio
// varint framing, as nwaku's writeLp, go-waku's pbio.NewDelimitedWriter and
// js-waku's it-length-prefixed do).
func WriteFrame(w io.Writer, b []byte) error {
	buf := binary.AppendUvarint(make([]byte, 0, len(b)+binary.MaxVarintLen64), uint64(len(b)))
	_, err := w.Write(append(buf, b...))
	return err
}

// ReadFrame reads one uvarint length-prefixed frame of at most limit bytes.
// It allocates the announced length at once: limit must be small enough for
// that (ReadFrameGrowing is for large limits).
func ReadFrame(r *bufio.Reader, limit uint64) ([]byte, error) {
	n, err := readLength(r, limit)
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// ReadFrameGrowing reads one uvarint length-prefixed frame of at most limit
// bytes, growing the buffer as the data arrives: unlike ReadFrame it does
// not allocate a length a peer merely announced (a store response may be
// allowed 100 MiB).
func ReadFrameGrowing(r *bufio.Reader, limit uint64) ([]byte, error) {
	n, err := readLength(r, limit)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	buf.Grow(int(min(n, 64<<10)))
	got, err := io.Copy(&buf, io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, err
	}
	if uint64(got) != n {
		return nil, io.ErrUnexpectedEOF
	}
	return buf.Bytes(), nil
}

func readLength(r *bufio.Reader, limit uint64) (uint64, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, err
	}
	if n > limit {
		return 0, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, limit)
	}
	return n, nil
}

// NewRequestID returns a random request id: 16 bytes in hex.
func NewRequestID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// ContextError prefers ctx's error when ctx ended: a reset stream or a
// stream deadline (set from ctx's) says less. The stream deadline can fire a
// moment before ctx's timer, hence the clock check.
func ContextError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%w)", cerr, err)
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
	}
	return err
}
