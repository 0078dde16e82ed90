package gateway_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	propagationv1 "github.com/infergate/infergate/gen/infergate/propagation/v1"
	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/linkproxy"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/receipts"
	"github.com/infergate/infergate/services/internal/snapshots"
)

// regions is a hub (where the control plane writes and tracks receipts)
// and a leaf server per region with its mirror; region eu's leaf-node
// link goes through a proxy the test cuts.
type regions struct {
	hub     *backend
	tracker *receipts.Tracker
	link    *linkproxy.Proxy // eu's leaf-node link
	leaves  map[string]*natsembed.Server
	mirrors map[string]*eventstore.Store
	conns   map[string]*nats.Conn
	// snaps are the regions' copies of the hub's snapshot bucket, read
	// only.
	snaps map[string]*snapshots.Store
}

func newRegions(t *testing.T) *regions {
	t.Helper()
	hub := natstest.Hub(t)
	nc := natstest.Connect(t, hub)
	js := natstest.JetStreamOn(t, hub)
	b := &backend{t: t, srv: hub, nc: nc, store: natstest.EventStore(t, js), live: aggregate.LiveKeys{}}
	tracker, err := receipts.NewTracker(nc, b.store.Identity)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tracker.Close)
	r := &regions{hub: b, tracker: tracker, leaves: map[string]*natsembed.Server{},
		mirrors: map[string]*eventstore.Store{}, conns: map[string]*nats.Conn{}, snaps: map[string]*snapshots.Store{}}
	r.link = natstest.NewProxy(t, strings.TrimPrefix(hub.LeafURL(), "nats-leaf://"))
	for region, url := range map[string]string{"eu": "nats-leaf://" + r.link.Addr(), "us": hub.LeafURL()} {
		r.leaves[region] = natstest.Leaf(t, region, url)
		r.mirrors[region], r.conns[region] = natstest.Mirror(t, r.leaves[region])
		js, err := jetstream.New(r.conns[region])
		if err != nil {
			t.Fatal(err)
		}
		if r.snaps[region], err = snapshots.Open(t.Context(), js, snapshots.Config{ReadOnly: true}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// snapshotter runs the control plane's snapshotter on the hub, saving a
// snapshot after every record, until the test ends.
func (r *regions) snapshotter(t *testing.T) {
	t.Helper()
	store, err := snapshots.Open(t.Context(), natstest.JetStreamOn(t, r.hub.srv), snapshots.Config{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := snapshots.NewSnapshotter(snapshots.SnapshotterConfig{Events: r.hub.store, Store: store, Every: 1, Check: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// gateway runs a gateway of region on its mirror, starting from the
// region's copy of the snapshots, reporting over its leaf server, with a
// 5 s staleness bound (long enough for a loaded machine to check what
// the region does within it).
func (r *regions) gateway(t *testing.T, region string) (*gateway.Gateway, *httptest.Server, func()) {
	t.Helper()
	b := *r.hub
	b.store = r.mirrors[region]
	g, srv, stop := runGatewayOn(t, &b, fronts[0], gateway.Config{
		ID: "gw-" + region + "-1", Region: region, NATS: r.conns[region], Snapshots: r.snaps[region],
		MaxStaleness: 5 * time.Second, Heartbeat: 100 * time.Millisecond,
	})
	return g, srv, stop
}

func (r *regions) wait(seq uint64, timeout time.Duration) *propagationv1.Propagation {
	return r.tracker.Wait(context.Background(), seq, []string{"eu", "us"}, timeout)
}

// TestRegionCutOff cuts region eu's leaf-node link: eu keeps serving from
// its map, a gateway restarted there becomes ready from the region's
// snapshot and mirror, a change made meanwhile is not confirmed and names eu's gateway
// as lagging; past its staleness bound eu refuses auth-enabled
// deployments as stale, and the change is confirmed (eu counted as
// refusing); the hub keeps taking writes, and a change for a deployment
// served only in us is confirmed at once. Healed, eu catches up and a new
// change is confirmed by both regions.
func TestRegionCutOff(t *testing.T) {
	t.Parallel()
	r := newRegions(t)
	r.snapshotter(t)
	b := r.hub
	up := newRecorder(t)
	alpha, _ := b.key("alpha", nil)
	beta, _ := b.key("beta", nil)
	seq := b.deployment("chat", up.URL, true, []string{"alpha", "beta"}, "eu", "us")
	b.deployment("us-only", up.URL, true, []string{"alpha"}, "us")
	open := b.deployment("open", up.URL, false, nil, "eu", "us")
	eu, euSrv, stopEU := r.gateway(t, "eu")
	us, usSrv, _ := r.gateway(t, "us")
	for _, g := range []*gateway.Gateway{eu, us} {
		waitApplied(t, g, open)
	}
	eventually(t, "both regions' gateways report in step", func() bool {
		gws := r.tracker.Gateways()
		return len(gws) == 2 && gws[0].Ready && gws[1].Ready && !gws[0].Stale && !gws[1].Stale
	})
	if p := r.wait(seq, 5*time.Second); !p.GetConfirmed() || p.GetGateways() != 2 {
		t.Fatalf("before the cut: %v; want confirmed by both regions' gateways", p)
	}
	// The hub's snapshotter has saved the map as of the last deployment,
	// and JetStream has copied it into eu.
	eventually(t, "eu holds a snapshot of the hub's map", func() bool {
		info, err := r.snaps["eu"].Latest(context.Background())
		return err == nil && info.Sequence == open
	})

	// The cut.
	r.link.Cut()
	eventually(t, "eu's leaf link down", func() bool { return r.leaves["eu"].LeafNodes() == 0 })
	if a := get(t, euSrv, host("chat"), "/v1/models", "X-API-Key", beta); a.status != 200 {
		t.Errorf("eu cut off, within its bound: %d %s; want 200 from its map", a.status, a.code)
	}
	unlinked := b.dep("chat", func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
		return d.Unlink(m, "alpha", b.live)
	})
	// Not confirmed, naming eu's gateway (us's too if it has not applied
	// it yet: this machine may be slow).
	p := r.wait(unlinked, 500*time.Millisecond)
	var euLags bool
	for _, l := range p.GetLagging() {
		if l.GetId() == "gw-eu-1" && l.GetRegion() == "eu" && !l.GetRefusingAsStale() && l.GetAppliedSequence() < unlinked {
			euLags = true
		}
	}
	if p.GetConfirmed() || !euLags {
		t.Fatalf("a change during the cut: %v; want not confirmed, gw-eu-1 (eu) lagging and not yet refusing", p)
	}
	// Writes for other regions are confirmed as usual.
	usOnly := b.dep("us-only", func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
		return d.Unlink(m, "alpha", b.live)
	})
	if p := r.tracker.Wait(context.Background(), usOnly, []string{"us"}, 5*time.Second); !p.GetConfirmed() || p.GetGateways() != 1 {
		t.Errorf("a change for a deployment served only in us, during eu's cut: %v; want confirmed by us", p)
	}
	waitApplied(t, us, unlinked)
	if a := get(t, usSrv, host("chat"), "/v1/models", "X-API-Key", alpha); a.status != 401 {
		t.Errorf("us after the unlink: %d %s; want 401", a.status, a.code)
	}

	// A gateway restarted in eu during the cut is ready from the region's
	// snapshot and mirror: no WAN.
	stopEU()
	eu2, eu2Srv, _ := r.gateway(t, "eu")
	eventually(t, "the restarted eu gateway ready from its snapshot and mirror", func() bool {
		code, st := readyz(t, eu2Srv)
		return code == 200 && st.Ready
	})
	if _, st := readyz(t, eu2Srv); st.SnapshotSequence != open {
		t.Errorf("the restarted eu gateway started from snapshot %d; want eu's copy, at %d", st.SnapshotSequence, open)
	}
	if eu2.Applied() >= unlinked {
		t.Errorf("the restarted eu gateway applied %d during the cut; the mirror cannot hold %d", eu2.Applied(), unlinked)
	}

	// Past the bound: eu refuses auth-enabled deployments as stale, serves
	// the others, and the change is confirmed with eu refusing.
	eventually(t, "eu refusing as stale", func() bool {
		_, st := readyz(t, eu2Srv)
		return st.RefusingStale
	})
	if a := get(t, eu2Srv, host("chat"), "/v1/models", "X-API-Key", alpha); a.status != 503 || a.code != "gateway_stale" {
		t.Errorf("eu past its bound: %d %s; want 503 gateway_stale", a.status, a.code)
	}
	if a := get(t, eu2Srv, host("open"), "/v1/models"); a.status != 200 {
		t.Errorf("eu past its bound, auth-disabled deployment: %d %s; want 200", a.status, a.code)
	}
	p = r.wait(unlinked, 5*time.Second)
	if !p.GetConfirmed() || len(p.GetLagging()) != 1 || !p.GetLagging()[0].GetRefusingAsStale() {
		t.Errorf("the change past eu's bound: %v; want confirmed, gw-eu-1 lagging and refusing as stale", p)
	}

	// Healed: eu catches up, and a new change is confirmed by both.
	if err := r.link.Heal(); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, eu2, unlinked)
	eventually(t, "eu synced again", func() bool { _, st := readyz(t, eu2Srv); return !st.RefusingStale })
	if a := get(t, eu2Srv, host("chat"), "/v1/models", "X-API-Key", alpha); a.status != 401 {
		t.Errorf("eu after healing: %d %s; want 401 (unlinked during the cut)", a.status, a.code)
	}
	eventually(t, "the hub hears eu in step again", func() bool {
		gws := r.tracker.Gateways()
		return len(gws) == 2 && !gws[0].Stale && gws[0].Sequence >= unlinked
	})
	again := b.dep("chat", func(d aggregate.Deployment, m aggregate.Meta) ([]*eventv1.Event, error) {
		return d.Unlink(m, "beta", b.live)
	})
	if p := r.wait(again, 5*time.Second); !p.GetConfirmed() || p.GetGatewaysApplied() != 2 {
		t.Errorf("a change after healing: %v; want confirmed, applied by both regions", p)
	}
}

// TestRegionFollowsARecreatedHubStream: a mirror keeps a deleted origin's
// records, so when the hub's stream is recreated the region's gateway
// must not serve them: it drops its map and is not ready until the
// region's mirror is recreated (admin stream create-mirror), then serves
// the new life.
func TestRegionFollowsARecreatedHubStream(t *testing.T) {
	t.Parallel()
	r := newRegions(t)
	b := r.hub
	up := newRecorder(t)
	b.key("alpha", nil)
	seq := b.deployment("chat", up.URL, true, []string{"alpha"}, "us")
	us, usSrv, _ := r.gateway(t, "us")
	waitApplied(t, us, seq)
	old := us.Receipt().Stream

	hubJS := natstest.JetStreamOn(t, b.srv)
	if err := hubJS.DeleteStream(context.Background(), eventstore.DefaultStream); err != nil {
		t.Fatal(err)
	}
	b.store = natstest.EventStore(t, hubJS)
	eventually(t, "us drops the old life's map", func() bool { return !us.Ready() })
	if a := get(t, usSrv, host("chat"), "/v1/models"); a.status != 503 {
		t.Errorf("us while its mirror copies a dead life: %d %s; want 503", a.status, a.code)
	}

	natstest.Mirror(t, r.leaves["us"]) // recreated for the new life
	b.live = aggregate.LiveKeys{}
	b.key("alpha", nil)
	seq = b.deployment("chat", up.URL, true, []string{"alpha"}, "us")
	eventually(t, "us ready on the new life", func() bool {
		rc := us.Receipt()
		return us.Ready() && rc.Sequence >= seq && !rc.Stream.Equal(old)
	})
}
