package faults_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/services/internal/command"
)

// writers runs CreateKey calls from n clients, each with a unique name,
// until stopped, and records every outcome.
type writers struct {
	project string
	mu      sync.Mutex // mu protects the fields below
	results []writeResult
	// attemptErrs is every failed attempt, retried or not.
	attemptErrs []attemptErr
	stop        context.CancelFunc
	done        sync.WaitGroup
}

// writeResult is the outcome of one key's creation: its last attempt.
type writeResult struct {
	name       string
	start, end time.Time // of the first attempt, of the last
	attempts   int
	secret     string // set on success
	replayed   bool   // a retry answered as the first attempt, no secret
	err        error  // of the last attempt
}

type attemptErr struct {
	at  time.Time
	err error
}

// retryMode says what a writer does after a failed call.
type retryMode int

const (
	// nextName gives up on the name and creates the next one: every
	// attempt is a new command.
	nextName retryMode = iota
	// sameRequest retries the same CreateKey with the same Idempotency-Key
	// while it fails as unavailable, by its deadline, or by a transport
	// error (connect-go reports a connection reset in mid-call as
	// canceled), as a careful client does.
	sameRequest
)

// startWriters starts n CreateKey clients; each call is bounded by
// callTimeout. Names are <prefix>-<client>-<n>.
func (s *stack) startWriters(project, prefix string, n int, callTimeout time.Duration, mode ...retryMode) *writers {
	ctx, stop := context.WithCancel(context.Background())
	w := &writers{project: project, stop: stop}
	retry := len(mode) > 0 && mode[0] == sameRequest
	// pause is a client's back-off after an error; false if stopped.
	pause := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
			return true
		}
	}
	for c := range n {
		w.done.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				r := writeResult{name: fmt.Sprintf("%s-%d-%04d", prefix, c, i), start: time.Now()}
				requestID := rand.Text()
				for {
					req := connect.NewRequest(&keyv1.CreateKeyRequest{Project: project, Name: r.name})
					if retry {
						req.Header().Set(command.IdempotencyHeader, requestID)
					}
					cctx, cancel := context.WithTimeout(ctx, callTimeout)
					res, err := s.keys.CreateKey(cctx, req)
					cancel()
					r.attempts++
					r.end, r.err = time.Now(), err
					if err == nil {
						r.secret, r.replayed = res.Msg.GetSecret(), res.Msg.GetReplayed()
						break
					}
					if ctx.Err() != nil {
						return // stopped mid-call: neither outcome is the system's
					}
					w.mu.Lock()
					w.attemptErrs = append(w.attemptErrs, attemptErr{r.end, err})
					w.mu.Unlock()
					if !retry || !retryable(err) {
						break
					}
					if !pause() {
						return
					}
				}
				w.mu.Lock()
				w.results = append(w.results, r)
				w.mu.Unlock()
				if r.err != nil && !pause() {
					return
				}
			}
		})
	}
	s.t.Cleanup(w.halt)
	return w
}

// retryable is an error after which the same request may be sent again:
// the call may or may not have been applied, and its Idempotency-Key
// makes a second application impossible.
func retryable(err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeCanceled, connect.CodeUnknown:
		return true
	}
	return false
}

// failedAttemptsSince counts the failed attempts that ended at or after t.
func (w *writers) failedAttemptsSince(t time.Time) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.attemptErrs {
		if !a.at.Before(t) {
			n++
		}
	}
	return n
}

// attemptErrorSummary counts failed attempts by Connect code.
func (w *writers) attemptErrorSummary() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var rs []writeResult
	for _, a := range w.attemptErrs {
		rs = append(rs, writeResult{err: a.err})
	}
	return errorSummary(rs)
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
