package gateway_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/aggregate"
)

// clock is the gateway's clock: real time plus a jump the test makes, as
// a process frozen (SIGSTOP) or cut off for that long would see it.
type clock struct{ jump atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.jump.Load())) }
func (c *clock) forward(d time.Duration) { c.jump.Add(int64(d)) }

// TestBoundedStaleness: a gateway that has not known its map to be
// current for longer than --max-staleness answers requests to
// auth-enabled deployments with 503 gateway_stale and Retry-After —
// checked at the decision, so requests that queued while it was frozen
// or cut off are refused, not admitted on old state — while auth-disabled
// deployments keep working; once it has caught up it admits again, with
// the changes made meanwhile.
func TestBoundedStaleness(t *testing.T) { eachFront(t, testBoundedStaleness) }

func testBoundedStaleness(t *testing.T, front frontEnd) {
	b := newBackend(t)
	up := newRecorder(t)
	alpha, _ := b.key("alpha", nil)
	b.deployment("chat", up.URL, true, []string{"alpha"})
	seq := b.deployment("open", up.URL, false, nil)
	var c clock
	g, srv := startGatewayOn(t, b, front, gateway.Config{NATS: b.nc, Now: c.now, MaxStaleness: time.Minute})
	waitApplied(t, g, seq)
	eventually(t, "ready and synced", func() bool { _, st := readyz(t, srv); return st.Ready && st.SecondsSinceSynced >= 0 })

	// Cut off, and a revocation the gateway cannot hear of.
	b.srv.Shutdown()
	eventually(t, "NATS reported down", func() bool { _, st := readyz(t, srv); return !st.NATSConnected })
	if a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", alpha); a.status != 200 {
		t.Fatalf("within the bound: %d %s; want 200 from the map", a.status, a.code)
	}
	c.forward(2 * time.Minute)
	a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", alpha)
	if a.status != 503 || a.code != "gateway_stale" || a.header.Get("Retry-After") == "" {
		t.Fatalf("past the bound: %d %s Retry-After %q; want 503 gateway_stale with Retry-After", a.status, a.code, a.header.Get("Retry-After"))
	}
	if a := get(t, srv, host("chat"), "/v1/models"); a.status != 503 || a.code != "gateway_stale" {
		t.Fatalf("past the bound, no key: %d %s; want 503 gateway_stale, not a verdict from the old map", a.status, a.code)
	}
	if a := get(t, srv, host("open"), "/v1/models"); a.status != 200 {
		t.Fatalf("auth-disabled deployment past the bound: %d %s; want 200", a.status, a.code)
	}
	code, st := readyz(t, srv)
	if code != 200 || !st.RefusingStale || st.SecondsSinceSynced < 60 || st.MaxStalenessSeconds != 60 {
		t.Fatalf("/readyz past the bound: %d %+v; want 200, refusing_stale, ≥ 60 s since synced, bound 60", code, st)
	}
	if m := metricsText(t, srv); !strings.Contains(m, "infergate_gateway_refusing_stale 1\n") ||
		!strings.Contains(m, `infergate_gateway_decisions_total{result="gateway_stale"}`) {
		t.Error("/metrics does not report refusing as stale")
	}

	// Back in touch: it catches up, with the change made meanwhile.
	b.start()
	eventually(t, "client reconnected", b.nc.IsConnected)
	unlinked := b.dep("chat", func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
		return d.Unlink(m, "alpha", b.live)
	})
	waitApplied(t, g, unlinked)
	eventually(t, "synced again", func() bool { _, st := readyz(t, srv); return !st.RefusingStale })
	if a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", alpha); a.status != 401 {
		t.Fatalf("after catching up: %d %s; want 401 (unlinked meanwhile)", a.status, a.code)
	}
}

// A negative bound (--max-staleness 0) serves forever from the map.
func TestNoStalenessBound(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	up := newRecorder(t)
	alpha, _ := b.key("alpha", nil)
	seq := b.deployment("chat", up.URL, true, []string{"alpha"})
	var c clock
	g, srv := startGateway(t, b, gateway.Config{NATS: b.nc, Now: c.now, MaxStaleness: -1})
	waitApplied(t, g, seq)
	eventually(t, "ready", g.Ready)
	b.srv.Shutdown()
	c.forward(24 * time.Hour)
	if a := get(t, srv, host("chat"), "/v1/models", "X-API-Key", alpha); a.status != 200 {
		t.Fatalf("a day later with no bound: %d %s; want 200", a.status, a.code)
	}
	if _, st := readyz(t, srv); st.MaxStalenessSeconds != -1 || st.RefusingStale {
		t.Fatalf("/readyz with no bound: %+v", st)
	}
}
