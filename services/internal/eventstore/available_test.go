package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natstest"
)

// waitUntil polls cond until it holds or the test's budget runs out.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWritesFailFastWhileDisconnected: with the NATS server gone, Append
// and Decide return ErrUnavailable instead of waiting on a connection that
// is trying to reconnect.
func TestWritesFailFastWhileDisconnected(t *testing.T) {
	t.Parallel()
	srv, js := natstest.JetStream(t)
	s := natstest.EventStore(t, js)
	agg := keyAgg("offline")
	if _, err := s.Append(t.Context(), agg, 0, []*eventv1.Event{updated("before")}); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	waitUntil(t, "the client notices", func() bool { return !js.Conn().IsConnected() })

	// A guard, not a measurement: the calls must end long before it.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	_, err := s.Append(ctx, agg, 1, []*eventv1.Event{updated("during")})
	if !errors.Is(err, eventstore.ErrUnavailable) {
		t.Errorf("Append while disconnected: %v, want ErrUnavailable", err)
	}
	called := false
	_, err = s.Decide(ctx, agg, "", 0, func([]eventstore.Record) ([]*eventv1.Event, error) {
		called = true
		return []*eventv1.Event{updated("during")}, nil
	})
	if !errors.Is(err, eventstore.ErrUnavailable) || called {
		t.Errorf("Decide while disconnected: %v (decided: %v), want ErrUnavailable before deciding", err, called)
	}
	// The audit service reads the stream itself: it says so too.
	if _, err := s.Scan(ctx, 0, func(eventstore.Record) error { return nil }); !errors.Is(err, eventstore.ErrUnavailable) {
		t.Errorf("Scan while disconnected: %v, want ErrUnavailable", err)
	}
}

// TestMissingStreamIsUnavailableAndLoggedOnce: writes to a stream that was
// deleted fail as unavailable, the store says so once, and once more when
// the stream is back.
func TestMissingStreamIsUnavailableAndLoggedOnce(t *testing.T) {
	t.Parallel()
	_, js := natstest.JetStream(t)
	ctx := t.Context()
	s := natstest.EventStore(t, js)
	var logs syncBuffer
	s.SetLogger(slog.New(slog.NewTextHandler(&logs, nil)))
	if err := js.DeleteStream(ctx, "INFERGATE_EVENTS"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		_, err := s.Append(ctx, keyAgg("gone"), 0, []*eventv1.Event{updated(fmt.Sprint(i))})
		if !errors.Is(err, eventstore.ErrUnavailable) {
			t.Fatalf("Append %d to a deleted stream: %v, want ErrUnavailable", i, err)
		}
		_, err = s.Decide(ctx, keyAgg("gone"), "", 0, func([]eventstore.Record) ([]*eventv1.Event, error) {
			return []*eventv1.Event{updated(fmt.Sprint(i))}, nil
		})
		if !errors.Is(err, eventstore.ErrUnavailable) {
			t.Fatalf("Decide %d on a deleted stream: %v, want ErrUnavailable", i, err)
		}
	}
	if n := strings.Count(logs.String(), "event stream not found"); n != 1 {
		t.Errorf("logged the missing stream %d times, want once:\n%s", n, logs.String())
	}
	natstest.EventStore(t, js) // the operator creates it again
	for i := range 2 {
		if _, err := s.Append(ctx, keyAgg(fmt.Sprint("back-", i)), 0, []*eventv1.Event{updated("back")}); err != nil {
			t.Fatalf("Append once the stream is back: %v", err)
		}
	}
	if n := strings.Count(logs.String(), "event stream found again"); n != 1 {
		t.Errorf("logged the stream's return %d times, want once:\n%s", n, logs.String())
	}
}

// TestDecideReturnsTheDecidedState: the result holds what the aggregate is
// right after the command — for a retried command, as the first attempt
// left it, whatever came after.
func TestDecideReturnsTheDecidedState(t *testing.T) {
	t.Parallel()
	s := openStore(t)
	ctx := t.Context()
	agg := keyAgg("state")
	decide := func(desc string) eventstore.DecideFunc {
		return func([]eventstore.Record) ([]*eventv1.Event, error) { return []*eventv1.Event{updated(desc)}, nil }
	}
	state := func(res eventstore.DecideResult) string {
		var out []string
		for _, e := range res.State() {
			out = append(out, e.GetKeyUpdated().GetDescription())
		}
		return fmt.Sprint(out)
	}
	if _, err := s.Decide(ctx, agg, "", 0, decide("one")); err != nil {
		t.Fatal(err)
	}
	res, err := s.Decide(ctx, agg, "req-2", 0, decide("two"))
	if err != nil || res.Duplicate || state(res) != "[one two]" {
		t.Fatalf("Decide = %+v (state %s), %v; want state [one two]", res, state(res), err)
	}
	if _, err := s.Decide(ctx, agg, "", 0, decide("three")); err != nil {
		t.Fatal(err)
	}
	again, err := s.Decide(ctx, agg, "req-2", 0, decide("two again"))
	if err != nil || !again.Duplicate || again.Sequence != res.Sequence || state(again) != "[one two]" {
		t.Errorf("retried Decide = %+v (state %s), %v; want a duplicate at %d with state [one two]", again, state(again), err, res.Sequence)
	}
}

// TestAppendAcknowledgementIsBounded: a publish nobody acknowledges ends
// with ErrUnacknowledged after the bound, not when the caller gives up.
func TestAppendAcknowledgementIsBounded(t *testing.T) {
	t.Parallel()
	srv, js := natstest.JetStream(t)
	ctx := t.Context()
	// A stream that takes the message and never acknowledges: a store
	// whose subjects no stream holds (its stream deleted once it is
	// opened), and a plain subscriber that receives its publishes and
	// answers nothing.
	nc := natstest.Connect(t, srv)
	sub, err := nc.SubscribeSync("silent.>")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	silentCfg := eventstore.Config{Stream: "SILENT", SubjectPrefix: "silent"}
	if _, err := eventstore.CreateStream(ctx, js, silentCfg); err != nil {
		t.Fatal(err)
	}
	silent, err := eventstore.Open(ctx, js, silentCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, "SILENT"); err != nil {
		t.Fatal(err)
	}
	_, err = silent.Append(ctx, keyAgg("x"), 0, []*eventv1.Event{updated("x")}, eventstore.WithTimeout(50*time.Millisecond))
	if !errors.Is(err, eventstore.ErrUnacknowledged) || !errors.Is(err, eventstore.ErrUnavailable) {
		t.Errorf("unacknowledged Append: %v, want ErrUnacknowledged (an ErrUnavailable)", err)
	}
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex // mu protects b
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
