package bus

import (
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// replyMux routes the answers of requests answered by several messages
// (batched and multi-last direct gets) from one subscription on the
// connection, as nats.go does for single-answer requests: a subscription
// per request would cost a SUB and an UNSUB on the wire and an update of
// the server's subscription cache for every batch read.
type replyMux struct {
	once    sync.Once
	err     error
	prefix  string
	mu      sync.Mutex
	next    uint64
	waiting map[string]chan *nats.Msg
}

// replyMuxes holds each connection's replyMux (*nats.Conn → *replyMux):
// they belong to the connection, which copies of a Bus share.
var replyMuxes sync.Map

// replies opens a reply subject whose answers arrive on the returned
// channel; capacity is the most messages one request is answered with
// (more are dropped: the request then times out and is repeated). done
// forgets the subject.
func (b *Bus) replies(capacity int) (subject string, ch <-chan *nats.Msg, done func(), err error) {
	v, _ := replyMuxes.LoadOrStore(b.NC, &replyMux{})
	m := v.(*replyMux)
	m.once.Do(func() {
		m.prefix = b.NC.NewInbox()
		m.waiting = map[string]chan *nats.Msg{}
		_, m.err = b.NC.Subscribe(m.prefix+".*", m.route)
	})
	if m.err != nil {
		return "", nil, nil, m.err
	}
	c := make(chan *nats.Msg, capacity)
	m.mu.Lock()
	m.next++
	token := strconv.FormatUint(m.next, 36)
	m.waiting[token] = c
	m.mu.Unlock()
	return m.prefix + "." + token, c, func() {
		m.mu.Lock()
		delete(m.waiting, token)
		m.mu.Unlock()
	}, nil
}

// route hands an answer to its request without ever blocking the
// connection's other answers.
func (m *replyMux) route(msg *nats.Msg) {
	token, ok := strings.CutPrefix(msg.Subject, m.prefix+".")
	if !ok {
		return
	}
	m.mu.Lock()
	c := m.waiting[token]
	m.mu.Unlock()
	if c == nil {
		return // a request given up on
	}
	select {
	case c <- msg:
	default:
	}
}
