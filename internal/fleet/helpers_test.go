package fleet

import (
	"bytes"
	"context"
	"io"
	"testing"
)

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// startAllInOne runs the all-in-one until the test ends and returns a
// context that ends with it; an error from the fleet fails the test.
func startAllInOne(t *testing.T, cfg AllInOneConfig) context.Context {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunAllInOne(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("fleet: %v", err)
		}
	})
	return ctx
}
