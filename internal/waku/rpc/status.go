package rpc

import "fmt"

// Code is a protocol's status code type. Store v3 and lightpush v3 both use
// HTTP-like numbers, but not with the same meanings (504 is a store's
// failed dial and a lightpush node's lack of RLN proofs; 505 exists only in
// lightpush), so each has its own type, which knows its protocol and which
// of its codes are worth retrying.
type Code interface {
	~uint32
	// Protocol names the protocol in error messages ("store query",
	// "lightpush").
	Protocol() string
	// Retryable reports whether the same request may succeed later or at
	// another service node.
	Retryable() bool
}

// StatusError is a service node's answer with a status code other than
// success, for store and lightpush alike: errors.As with a
// *StatusError[store.Status] or a *StatusError[lightpush.Status] finds
// the one of that protocol.
type StatusError[C Code] struct {
	Code C
	Desc string // status_desc, if sent
}

// Error names the protocol, the code and the node's description.
func (e *StatusError[C]) Error() string {
	if e.Desc == "" {
		return fmt.Sprintf("waku %s refused: status %d", e.Code.Protocol(), uint32(e.Code))
	}
	return fmt.Sprintf("waku %s refused: status %d: %s", e.Code.Protocol(), uint32(e.Code), e.Desc)
}

// IsRetryable reports whether the same request may succeed later or at
// another service node (see the protocol's Status.Retryable).
func (e *StatusError[C]) IsRetryable() bool { return e.Code.Retryable() }
