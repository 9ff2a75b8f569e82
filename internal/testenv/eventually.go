package testenv

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, failing t with msg if it does not
// within timeout. Polls start at 5 ms and back off to 200 ms, so a quick
// condition is seen at once and a slow one does not load a busy machine.
// Tests wait this way for the condition they need, never for a guessed time.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for pause := 5 * time.Millisecond; !cond(); pause = min(2*pause, 200*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, msg)
		}
		time.Sleep(pause)
	}
}
