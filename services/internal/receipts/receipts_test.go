package receipts_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/receipts"
	"github.com/infergate/infergate/services/internal/servicetest"
)

// gw is a pretend gateway's state, driven by the test, reported by a real
// Reporter over a real NATS connection.
type gw struct {
	seq    atomic.Uint64
	ready  atomic.Bool
	stale  atomic.Bool
	bound  time.Duration // its staleness bound; 0: none
	stream atomic.Pointer[eventstore.Identity]
	rep    *receipts.Reporter
	stop   context.CancelFunc
}

func startGateway(t *testing.T, nc *nats.Conn, id, region string) *gw {
	t.Helper()
	return startBoundGateway(t, nc, id, region, 0)
}

// startBoundGateway is startGateway for a gateway with a staleness bound.
func startBoundGateway(t *testing.T, nc *nats.Conn, id, region string, bound time.Duration) *gw {
	t.Helper()
	g := &gw{bound: bound}
	g.ready.Store(true)
	g.stream.Store(&lifeOne)
	rep, err := receipts.NewReporter(nc, id, region, 50*time.Millisecond, func() receipts.State {
		return receipts.State{Stream: *g.stream.Load(), Sequence: g.seq.Load(), Ready: g.ready.Load(),
			Stale: g.stale.Load(), MaxStaleness: g.bound}
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g.rep = rep
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = rep.Run(ctx); close(done) }()
	g.stop = func() { cancel(); <-done }
	t.Cleanup(g.stop)
	return g
}

func (g *gw) apply(seq uint64) {
	g.seq.Store(seq)
	g.rep.Changed()
}

// Two lives of the event stream: the second is the stream deleted and
// created again.
var (
	lifeOne = eventstore.Identity{Stream: "INFERGATE_EVENTS", Created: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	lifeTwo = eventstore.Identity{Stream: "INFERGATE_EVENTS", Created: time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)}
)

func setup(t *testing.T) (*nats.Conn, *receipts.Tracker) {
	t.Helper()
	nc, tr, _ := setupLives(t)
	return nc, tr
}

// setupLives also returns the stream's current life, which the test may
// move.
func setupLives(t *testing.T) (*nats.Conn, *receipts.Tracker, *atomic.Pointer[eventstore.Identity]) {
	t.Helper()
	nc, tr, current, _ := setupServer(t)
	return nc, tr, current
}

// setupServer also returns the server, for connections of the test's own.
func setupServer(t *testing.T) (*nats.Conn, *receipts.Tracker, *atomic.Pointer[eventstore.Identity], *natsembed.Server) {
	t.Helper()
	s := natstest.Start(t)
	var current atomic.Pointer[eventstore.Identity]
	current.Store(&lifeOne)
	tr, err := receipts.NewTracker(natstest.Connect(t, s), func(context.Context) (eventstore.Identity, error) {
		return *current.Load(), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	return natstest.Connect(t, s), tr, &current, s
}

func waitGateways(t *testing.T, tr *receipts.Tracker, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(tr.Gateways()) != n {
		if time.Now().After(deadline) {
			t.Fatalf("tracker sees %d gateways, want %d", len(tr.Gateways()), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWaitConfirmsWhenEveryGatewayApplied(t *testing.T) {
	t.Parallel()
	nc, tr := setup(t)
	a := startGateway(t, nc, "gw-a", "eu")
	b := startGateway(t, nc, "gw-b", "eu")
	c := startGateway(t, nc, "gw-c", "us")
	waitGateways(t, tr, 3)

	go func() {
		time.Sleep(20 * time.Millisecond)
		a.apply(10)
		b.apply(12)
		c.apply(10)
	}()
	p := tr.Wait(t.Context(), 10, nil, 5*time.Second)
	if !p.GetConfirmed() || p.GetGateways() != 3 || p.GetGatewaysApplied() != 3 || p.GetSequence() != 10 {
		t.Errorf("propagation = %v; want 3/3 confirmed", p)
	}
	// Only the regions asked for count.
	a.apply(11)
	p = tr.Wait(t.Context(), 11, []string{"eu"}, 2*time.Second)
	if !p.GetConfirmed() || p.GetGateways() != 2 {
		t.Errorf("eu-only propagation = %v; want 2/2", p)
	}
}

func TestWaitTimesOutOnAStraggler(t *testing.T) {
	t.Parallel()
	nc, tr := setup(t)
	a := startGateway(t, nc, "gw-a", "eu")
	startGateway(t, nc, "gw-frozen", "eu") // heartbeats, never applies
	waitGateways(t, tr, 2)
	a.apply(5)
	start := time.Now()
	p := tr.Wait(t.Context(), 5, nil, 300*time.Millisecond)
	if p.GetConfirmed() || p.GetGateways() != 2 || p.GetGatewaysApplied() != 1 {
		t.Errorf("propagation = %v; want 1/2, not confirmed", p)
	}
	if waited := time.Since(start); waited > 3*time.Second {
		t.Errorf("Wait took %s with a 300ms bound", waited)
	}
}

func TestNoLiveGatewayIsNotConfirmed(t *testing.T) {
	t.Parallel()
	nc, tr := setup(t)
	p := tr.Wait(t.Context(), 1, nil, 100*time.Millisecond)
	if p.GetConfirmed() || p.GetGateways() != 0 {
		t.Errorf("with no gateways: %v; want not confirmed", p)
	}
	// A gateway that stops reporting drops out; one not ready is not counted.
	g := startGateway(t, nc, "gw-a", "eu")
	waitGateways(t, tr, 1)
	g.stop()
	waitGateways(t, tr, 0)
	h := startGateway(t, nc, "gw-b", "eu")
	h.ready.Store(false)
	h.apply(3)
	waitGateways(t, tr, 1)
	p = tr.Wait(t.Context(), 1, nil, 100*time.Millisecond)
	if p.GetConfirmed() || p.GetGateways() != 0 {
		t.Errorf("with only a gateway that is not ready: %v; want not confirmed, 0 gateways", p)
	}
}

// A gateway still on a stream that was deleted and created again has
// applied a high sequence of the old life; it must never confirm a write
// at a lower sequence of the new one.
func TestReceiptOfAnOldStreamNeverConfirms(t *testing.T) {
	t.Parallel()
	nc, tr, current := setupLives(t)
	old := startGateway(t, nc, "gw-old", "eu")
	moved := startGateway(t, nc, "gw-moved", "eu")
	old.apply(500)
	moved.apply(500)
	waitGateways(t, tr, 2)
	current.Store(&lifeTwo)
	moved.stream.Store(&lifeTwo)
	moved.apply(3)
	p := tr.Wait(t.Context(), 3, nil, 300*time.Millisecond)
	if p.GetConfirmed() || p.GetGateways() != 2 || p.GetGatewaysApplied() != 1 {
		t.Fatalf("propagation = %v; want 1/2 (only the gateway on the new stream), not confirmed", p)
	}
	old.stream.Store(&lifeTwo)
	old.apply(3)
	if p := tr.Wait(t.Context(), 3, nil, 5*time.Second); !p.GetConfirmed() || p.GetGatewaysApplied() != 2 {
		t.Fatalf("propagation once both follow the new stream = %v; want 2/2 confirmed", p)
	}
}

// A gateway that goes silent without saying goodbye (frozen, cut off,
// killed) may still be admitting requests from its map until its
// staleness bound has passed: until then it holds up confirmation and is
// named as lagging; after it, it refuses as stale and no longer does. One
// that says it refuses as stale does not hold up confirmation either, and
// one that leaves stops counting at once.
func TestSilentGatewayCountsUntilItsBound(t *testing.T) {
	t.Parallel()
	nc, tr, _, srv := setupServer(t)
	a := startGateway(t, nc, "gw-a", "eu")
	own := natstest.Connect(t, srv)
	startBoundGateway(t, own, "gw-silent", "eu", 500*time.Millisecond)
	waitGateways(t, tr, 2)
	own.Close() // no goodbye: its reports just stop
	a.apply(7)
	p := tr.Wait(t.Context(), 7, nil, 100*time.Millisecond)
	if p.GetConfirmed() || p.GetGateways() != 2 || len(p.GetLagging()) != 1 {
		t.Fatalf("just after the silence: %v; want 1/2 not confirmed, gw-silent lagging", p)
	}
	if l := p.GetLagging()[0]; l.GetId() != "gw-silent" || l.GetRegion() != "eu" || l.GetRefusingAsStale() || l.GetLastHeard() == nil {
		t.Fatalf("lagging = %v; want gw-silent in eu, not yet refusing, with its last report's time", l)
	}
	// Past its bound it refuses as stale: the change is confirmed.
	if p := tr.Wait(t.Context(), 7, nil, 10*time.Second); !p.GetConfirmed() || !p.GetLagging()[0].GetRefusingAsStale() {
		t.Fatalf("past the silent gateway's bound: %v; want confirmed, gw-silent refusing as stale", p)
	}

	// One that reports it is stale does not hold a change up.
	b := startGateway(t, nc, "gw-stale", "us")
	b.stale.Store(true)
	b.rep.Changed()
	servicetest.WaitFor(t, "gw-stale reports stale", func(context.Context) error {
		for _, g := range tr.Gateways() {
			if g.ID == "gw-stale" && g.Stale {
				return nil
			}
		}
		return errors.New("not yet")
	})
	a.apply(8)
	if p := tr.Wait(t.Context(), 8, []string{"us"}, 5*time.Second); !p.GetConfirmed() || p.GetGatewaysApplied() != 0 {
		t.Fatalf("us with only a stale gateway: %v; want confirmed, 0 applied", p)
	}
	// One that leaves stops counting as soon as its goodbye arrives.
	b.stop()
	waitGateways(t, tr, 1)
	if p := tr.Wait(t.Context(), 8, []string{"us"}, 100*time.Millisecond); p.GetGateways() != 0 || p.GetConfirmed() {
		t.Fatalf("us after its gateway left: %v; want 0 gateways, not confirmed", p)
	}
}

// TestReportOnlyForItsSubject: a report naming another gateway than its
// subject does is ignored, so a gateway allowed to publish only on its
// own subject (natsauth) cannot speak for another.
func TestReportOnlyForItsSubject(t *testing.T) {
	t.Parallel()
	nc, tr := setup(t)
	forged := []byte(`{"id":"gw-2","region":"eu","sequence":99,"ready":true,"interval_ms":50}`)
	if err := nc.Publish(receipts.SubjectPrefix+".eu.gw-1", forged); err != nil {
		t.Fatal(err)
	}
	// A real report after the forged one: once it is seen, the forged one
	// has been received too (same connection, in order).
	g := startGateway(t, nc, "gw-1", "eu")
	g.apply(1)
	waitGateways(t, tr, 1)
	for _, gw := range tr.Gateways() {
		if gw.ID != "gw-1" {
			t.Errorf("tracker believes a report for %s sent on gw-1's subject", gw.ID)
		}
	}
}
