package faults_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
)

// writers runs CreateKey calls from n clients, each with a unique name,
// until stopped, and records every outcome.
type writers struct {
	project string
	mu      sync.Mutex // mu protects the fields below
	results []writeResult
	stop    context.CancelFunc
	done    sync.WaitGroup
}

type writeResult struct {
	name       string
	start, end time.Time
	secret     string // set on success
	err        error
}

// startWriters starts n CreateKey clients; each call is bounded by
// callTimeout. Names are <prefix>-<client>-<n>.
func (s *stack) startWriters(project, prefix string, n int, callTimeout time.Duration) *writers {
	ctx, stop := context.WithCancel(context.Background())
	w := &writers{project: project, stop: stop}
	for c := range n {
		w.done.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("%s-%d-%04d", prefix, c, i)
				cctx, cancel := context.WithTimeout(ctx, callTimeout)
				start := time.Now()
				res, err := s.keys.CreateKey(cctx, connect.NewRequest(&keyv1.CreateKeyRequest{Project: project, Name: name}))
				cancel()
				r := writeResult{name: name, start: start, end: time.Now(), err: err}
				if err == nil {
					r.secret = res.Msg.GetSecret()
				} else if ctx.Err() != nil {
					return // stopped mid-call: neither outcome is the system's
				}
				w.mu.Lock()
				w.results = append(w.results, r)
				w.mu.Unlock()
				if err != nil {
					// A client backs off a little after an error.
					select {
					case <-ctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
				}
			}
		})
	}
	s.t.Cleanup(w.halt)
	return w
}

func (w *writers) halt() {
	w.stop()
	w.done.Wait()
}

// snapshot is every result so far.
func (w *writers) snapshot() []writeResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.results)
}

// acked is every successful result.
func acked(rs []writeResult) []writeResult {
	return slices.DeleteFunc(slices.Clone(rs), func(r writeResult) bool { return r.err != nil })
}

// failed is every failed result.
func failed(rs []writeResult) []writeResult {
	return slices.DeleteFunc(slices.Clone(rs), func(r writeResult) bool { return r.err == nil })
}

// startedIn is every result of a call started in [from, to).
func startedIn(rs []writeResult, from, to time.Time) []writeResult {
	return slices.DeleteFunc(slices.Clone(rs), func(r writeResult) bool { return r.start.Before(from) || !r.start.Before(to) })
}

// errorSummary counts failures by Connect code, e.g. "unavailable×3".
func errorSummary(rs []writeResult) string {
	n := map[string]int{}
	for _, r := range rs {
		if r.err != nil {
			n[connect.CodeOf(r.err).String()]++
		}
	}
	var parts []string
	for c, k := range n {
		parts = append(parts, fmt.Sprintf("%s×%d", c, k))
	}
	slices.Sort(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// waitWrites waits until cond holds for the results so far.
func (w *writers) waitWrites(t *testing.T, d time.Duration, what string, cond func([]writeResult) bool) {
	t.Helper()
	waitUntil(t, d, what, func() error {
		if rs := w.snapshot(); !cond(rs) {
			return fmt.Errorf("%d results: %d acknowledged, errors %s", len(rs), len(acked(rs)), errorSummary(rs))
		}
		return nil
	})
}
