package messages

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/archivefleet/archivefleet/internal/archive"
)

// MaxBatchBytes bounds one ingest request. It holds one message at the
// 30,000,000-byte archive cap written as hex JSON.
const MaxBatchBytes = 64 << 20

// ErrBatchTooLarge is returned once a batch has gone past its limit.
var ErrBatchTooLarge = errors.New("batch is over the 64 MiB limit: send fewer messages per request")

// ErrMalformedBatch marks a batch that is neither a JSON array of messages
// nor JSON lines, from the point where it stops being one.
var ErrMalformedBatch = errors.New("malformed batch")

// BatchReader reads the messages of a batch, a JSON array of messages or
// JSON lines, one at a time: it holds one message's bytes, never the whole
// batch. The format is told by the first byte that is not white space.
type BatchReader struct {
	r *bufio.Reader
	// limit is how many bytes of the batch may still be read.
	limit int64
	// reserve, if set, is called before the message buffer grows to n
	// bytes; an error stops the read.
	reserve func(n int64) error
	format  byte // 0 before the first message, '[' or '\n'
	closed  bool // the array's ']' was read
	index   int  // messages returned
	line    int  // lines read (JSON lines)
	buf     []byte
}

// readBuffer is the BatchReader's read-ahead.
const readBuffer = 64 << 10

// NewBatchReader reads a batch of at most limit bytes from r. reserve, if
// not nil, is asked before a message's buffer grows (see Lease.Grow).
func NewBatchReader(r io.Reader, limit int64, reserve func(n int64) error) *BatchReader {
	return &BatchReader{r: bufio.NewReaderSize(r, readBuffer), limit: limit, reserve: reserve}
}

// Index is the position in the batch, from 0, of the message Next returns
// next.
func (b *BatchReader) Index() int { return b.index }

// Line is the line of the message Next returned last, in a batch of JSON
// lines; 0 in a JSON array.
func (b *BatchReader) Line() int {
	if b.format == '\n' {
		return b.line
	}
	return 0
}

// where names a message of a batch by its position: "line 5" in JSON
// lines, "message 3" in an array.
func where(index, line int) string {
	if line > 0 {
		return "line " + strconv.Itoa(line)
	}
	return "message " + strconv.Itoa(index)
}

// Next returns the next message's JSON bytes (valid until the next call);
// io.EOF after the last one. A batch that is not a JSON array or JSON
// lines is ErrMalformedBatch (saying where); one over its limit
// ErrBatchTooLarge; errors of the underlying reader are returned as they
// are.
func (b *BatchReader) Next() (raw []byte, err error) {
	if b.format == 0 {
		c, err := b.skipSpace()
		if err == io.EOF {
			return nil, fmt.Errorf("%w: empty batch", ErrMalformedBatch)
		}
		if err != nil {
			return nil, err
		}
		if c == '[' {
			b.format = '['
			b.discard(1)
		} else {
			b.format = '\n'
		}
	}
	if b.format == '\n' {
		return b.nextLine()
	}
	return b.nextElement()
}

func (b *BatchReader) nextLine() ([]byte, error) {
	for {
		b.buf = b.buf[:0]
		for {
			chunk, err := b.r.ReadSlice('\n')
			if len(chunk) > 0 {
				if err := b.take(chunk); err != nil {
					return nil, err
				}
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err == io.EOF && len(b.buf) == 0 {
				return nil, io.EOF
			}
			if err != nil && err != io.EOF {
				return nil, err
			}
			break
		}
		b.line++
		if l := bytes.TrimSpace(b.buf); len(l) > 0 {
			b.index++
			return l, nil
		}
	}
}

func (b *BatchReader) nextElement() ([]byte, error) {
	if b.closed {
		// Only white space may follow the array.
		if _, err := b.skipSpace(); err == io.EOF {
			return nil, io.EOF
		} else if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: data after the array's closing ]", ErrMalformedBatch)
	}
	c, err := b.skipSpace()
	if err == io.EOF {
		return nil, fmt.Errorf("%w: the array is not closed", ErrMalformedBatch)
	}
	if err != nil {
		return nil, err
	}
	if b.index > 0 {
		switch c {
		case ',':
			b.discard(1)
			if c, err = b.skipSpace(); err == io.EOF {
				return nil, fmt.Errorf("%w: the array is not closed", ErrMalformedBatch)
			} else if err != nil {
				return nil, err
			}
			if c == ']' {
				return nil, fmt.Errorf("%w: a comma before the array's ]", ErrMalformedBatch)
			}
		case ']':
			b.discard(1)
			b.closed = true
			return b.nextElement()
		default:
			return nil, fmt.Errorf("%w: after message %d: want , or ] and got %q", ErrMalformedBatch, b.index-1, c)
		}
	} else if c == ']' {
		b.discard(1)
		b.closed = true
		return b.nextElement()
	}
	b.buf = b.buf[:0]
	if err := b.value(); err != nil {
		return nil, err
	}
	b.index++
	return b.buf, nil
}

// value copies one JSON value into b.buf: a string, an object or array
// (nesting and strings followed), or a bare literal up to a delimiter.
// Whether it is valid JSON is the message decoder's question.
func (b *BatchReader) value() error {
	depth, inString, escape := 0, false, false
	for {
		chunk, err := b.r.Peek(max(1, b.r.Buffered()))
		if len(chunk) == 0 {
			if err == io.EOF {
				if depth > 0 || inString {
					return fmt.Errorf("%w: message %d ends early", ErrMalformedBatch, b.index)
				}
				return nil
			}
			return err
		}
		n, done := 0, false
	scan:
		for n < len(chunk) {
			c := chunk[n]
			switch {
			case inString:
				switch {
				case escape:
					escape = false
				case c == '\\':
					escape = true
				case c == '"':
					inString = false
					if depth == 0 {
						n++
						done = true
						break scan
					}
				}
			case c == '"':
				inString = true
			case c == '{' || c == '[':
				depth++
			case c == '}' || c == ']':
				if depth == 0 { // the array's own ] after a bare literal
					done = true
					break scan
				}
				depth--
				if depth == 0 {
					n++
					done = true
					break scan
				}
			case depth == 0 && (c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n'):
				done = true
				break scan
			}
			n++
		}
		if err := b.take(chunk[:n]); err != nil {
			return err
		}
		b.discard(n)
		if done {
			return nil
		}
	}
}

// take appends p to the message buffer, within the batch's limit and the
// reservation.
func (b *BatchReader) take(p []byte) error {
	if int64(len(p)) > b.limit {
		return ErrBatchTooLarge
	}
	b.limit -= int64(len(p))
	if need := len(b.buf) + len(p); need > cap(b.buf) {
		size := max(need, 2*cap(b.buf), 512)
		if b.reserve != nil {
			if err := b.reserve(int64(size)); err != nil {
				return err
			}
		}
		nb := make([]byte, len(b.buf), size)
		copy(nb, b.buf)
		b.buf = nb
	}
	b.buf = append(b.buf, p...)
	return nil
}

// skipSpace discards white space and returns the next byte, unread.
func (b *BatchReader) skipSpace() (byte, error) {
	for {
		c, err := b.r.ReadByte()
		if err != nil {
			return 0, err
		}
		switch c {
		case ' ', '\t', '\r', '\n':
			if b.limit--; b.limit < 0 {
				return 0, ErrBatchTooLarge
			}
			continue
		}
		b.r.UnreadByte()
		return c, nil
	}
}

// discard drops n bytes already peeked (and counted by take, except
// structural bytes, counted here).
func (b *BatchReader) discard(n int) {
	b.r.Discard(n)
}

// DecodeBatch parses a whole batch held in memory (tests, fuzzing). A
// message that does not decode or validate becomes an Item with its error;
// only a batch that is not a JSON array or JSON lines at all is an error.
func DecodeBatch(data []byte, limit int) ([]Item, error) {
	if len(data) > limit {
		return nil, fmt.Errorf("batch of %d bytes is over the %d-byte limit", len(data), limit)
	}
	r := NewBatchReader(bytes.NewReader(data), int64(limit), nil)
	var out []Item
	for {
		raw, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, decodeItem(raw, where(r.Index()-1, r.Line())))
	}
}

// decodeItem decodes one message of a batch.
func decodeItem(raw []byte, where string) Item {
	m, err := archive.DecodeMessageJSON(raw)
	if err != nil {
		err = fmt.Errorf("%s: %w", where, err)
	}
	return Item{Msg: m, Err: err}
}
