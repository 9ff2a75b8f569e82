package bus

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
)

// ErrTopologyDenied is Setup's error when a stream, consumer or bucket is
// missing or was set up with another configuration, and the server refused
// this NATS user the create or update: only the admin user may change the
// topology (a user who can create streams can mirror any stream).
var ErrTopologyDenied = errors.New("topology missing or out of date, and this NATS user may not create or update it: " +
	"run `archivectl setup` with the admin credentials and the same ARCHIVEFLEET_* settings as the services")

// Denials passes on the permission violations a NATS server reports on a
// connection. nats.go hands them only to the connection's asynchronous
// error handler: a request whose publish the server refused is never
// answered, so without them a refused create would wait out its timeout
// and look like a server that does not answer. Whoever sets the error
// handler (natsconf.Connect) calls Note; Setup watches while it creates or
// updates. The zero value is not usable: use NewDenials. A nil *Denials
// watches nothing.
type Denials struct {
	mu       sync.Mutex
	watchers map[chan string]struct{}
}

// NewDenials returns an empty Denials.
func NewDenials() *Denials { return &Denials{watchers: map[chan string]struct{}{}} }

// violation matches the server's text: Permissions Violation for Publish
// to "<subject>" (or Subscription to, or Publish with Reply of).
var violation = regexp.MustCompile(`(?i)permissions violation for (publish|subscription)(?: with reply of| to) "?([^"\s]+)"?`)

// Note records err if it is a permission violation and reports whether it
// was one.
func (d *Denials) Note(err error) bool {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return false
	}
	m := violation.FindStringSubmatch(err.Error())
	if d == nil || m == nil {
		return true
	}
	what := strings.ToLower(m[1]) + " to " + m[2]
	d.mu.Lock()
	defer d.mu.Unlock()
	for ch := range d.watchers {
		select {
		case ch <- what:
		default: // a watcher that is behind has seen enough
		}
	}
	return true
}

// topologyWrites are the JetStream API requests that create or update a
// stream (buckets and object stores are streams) or a consumer.
var topologyWrites = []string{"$JS.API.STREAM.CREATE.", "$JS.API.STREAM.UPDATE.", "$JS.API.CONSUMER.CREATE.",
	"$JS.API.CONSUMER.DURABLE.CREATE."}

// deniedError is ErrTopologyDenied naming the refused request.
type deniedError struct{ refused string }

func (e *deniedError) Error() string {
	return ErrTopologyDenied.Error() + " (the server refused " + e.refused + ")"
}
func (e *deniedError) Unwrap() error { return ErrTopologyDenied }

// guard returns a context that ends when the server refuses this
// connection a topology write, and a function, to call once the write
// returned, that gives the refusal (nil if none came).
func (d *Denials) guard(ctx context.Context) (context.Context, func() error) {
	if d == nil {
		return ctx, func() error { return nil }
	}
	ctx, cancel := context.WithCancelCause(ctx)
	ch := make(chan string, 16)
	d.mu.Lock()
	d.watchers[ch] = struct{}{}
	d.mu.Unlock()
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case what := <-ch:
				for _, w := range topologyWrites {
					if strings.HasPrefix(what, "publish to "+w) {
						cancel(&deniedError{refused: what})
						return
					}
				}
			}
		}
	}()
	return ctx, func() error {
		close(done)
		d.mu.Lock()
		delete(d.watchers, ch)
		d.mu.Unlock()
		cause := context.Cause(ctx)
		cancel(nil)
		var de *deniedError
		if errors.As(cause, &de) {
			return de
		}
		return nil
	}
}
