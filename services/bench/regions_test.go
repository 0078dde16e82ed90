package bench_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/bench/internal/seed"
	"github.com/infergate/infergate/services/bench/internal/stats"
	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/command"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/linkproxy"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/receipts"
)

// regionWorld is a hub and two regions (eu, us), each a leaf server with
// its mirror linked to the hub through a proxy, and one gateway per
// region reading only its mirror and reporting over the leaf link.
type regionWorld struct {
	hub      *natsembed.Server
	hubNC    *nats.Conn
	events   *eventstore.Store
	tracker  *receipts.Tracker
	links    map[string]*linkproxy.Proxy
	gateways map[string]*gateway.Gateway
}

func newRegionWorld(b *testing.B) *regionWorld {
	b.Helper()
	w := &regionWorld{hub: natstest.Hub(b), links: map[string]*linkproxy.Proxy{}, gateways: map[string]*gateway.Gateway{}}
	w.hubNC = natstest.Connect(b, w.hub)
	w.events = natstest.EventStore(b, natstest.JetStreamOn(b, w.hub))
	var err error
	if w.tracker, err = receipts.NewTracker(w.hubNC, w.events.Identity); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.tracker.Close)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	for _, region := range []string{"eu", "us"} {
		link := natstest.NewProxy(b, strings.TrimPrefix(w.hub.LeafURL(), "nats-leaf://"))
		leaf := natstest.Leaf(b, region, "nats-leaf://"+link.Addr())
		mirror, nc := natstest.Mirror(b, leaf)
		g, err := gateway.New(gateway.Config{Events: mirror, NATS: nc, Region: region, ID: "gw-" + region,
			PollInterval: 100 * time.Millisecond})
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = g.Run(ctx) }()
		b.Cleanup(func() { cancel(); <-done })
		w.links[region], w.gateways[region] = link, g
	}
	return w
}

// BenchmarkRegionPropagation measures, with a one-way delay of 50 ms on
// each region's leaf-node link (a delaying proxy in both directions), for
// each of b.N link or unlink changes appended on the hub: the time from
// the append's acknowledgement until each region's gateway has applied
// it (the hub's record mirrored over the link, read from the mirror,
// applied to the map), and until the control plane has both regions'
// receipts back over the links (confirmed). Run with -benchtime=500x.
func BenchmarkRegionPropagation(b *testing.B) {
	w := newRegionWorld(b)
	ctx := context.Background()
	const delay = 50 * time.Millisecond
	for _, l := range w.links {
		l.SetDelay(delay)
	}
	agg := eventstore.Aggregate{Project: project, Type: eventstore.TypeDeployment, Name: "prop"}
	key := eventstore.Aggregate{Project: project, Type: eventstore.TypeKey, Name: "prop-key"}
	meta := command.Meta(ctx, project, time.Now())
	kev, err := aggregate.KeyFrom("prop-key", nil).Create(meta, aggregate.NewKey{Name: "prop-key", Hash: apikey.Sum("ig_region_bench"), Hint: apikey.Hint("ig_region_bench")})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.events.Append(ctx, key, 0, kev); err != nil {
		b.Fatal(err)
	}
	live := aggregate.LiveKeys{"prop-key": kev[0].GetKeyCreated().GetKeyId()}
	d := aggregate.DeploymentFrom("prop", nil)
	dev, err := d.Create(meta, aggregate.NewDeployment{Name: "prop", Model: "m", UpstreamURL: "http://127.0.0.1:1", Regions: []string{"eu", "us"}, AuthEnabled: true}, live)
	if err != nil {
		b.Fatal(err)
	}
	res, err := w.events.Append(ctx, agg, 0, dev)
	if err != nil {
		b.Fatal(err)
	}
	for _, e := range dev {
		d.Apply(e)
	}
	version := res.Sequence
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, g := range w.gateways {
		if err := g.WaitApplied(wctx, version); err != nil {
			b.Fatal(err)
		}
	}
	cancel()
	for len(w.tracker.Gateways()) < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	applied := make([]time.Duration, 0, 2*b.N)
	confirmed := make([]time.Duration, 0, b.N)
	unconfirmed := 0
	b.ResetTimer()
	for range b.N {
		m := command.Meta(ctx, project, time.Now())
		var events []*eventv1.Event
		if _, linked := d.Links["prop-key"]; linked {
			events, err = d.Unlink(m, "prop-key", live)
		} else {
			events, err = d.Link(m, "prop-key", live)
		}
		if err != nil {
			b.Fatal(err)
		}
		res, err := w.events.Append(ctx, agg, version, events)
		if err != nil {
			b.Fatal(err)
		}
		acked := time.Now()
		// Each change's own bound: a wait that ended on it would be no
		// figure at all, and fails the run.
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		type result struct {
			took time.Duration
			err  error
		}
		got := make(chan result, 2)
		for _, g := range w.gateways {
			go func() {
				err := g.WaitApplied(wctx, res.Sequence)
				got <- result{time.Since(acked), err}
			}()
		}
		p := w.tracker.Wait(ctx, res.Sequence, []string{"eu", "us"}, 2*time.Second)
		confirmed = append(confirmed, time.Since(acked))
		for range 2 {
			r := <-got
			if r.err != nil {
				b.Fatalf("change %d not applied: %v", res.Sequence, r.err)
			}
			applied = append(applied, r.took)
		}
		cancel()
		if !p.GetConfirmed() || p.GetGatewaysApplied() != 2 {
			unconfirmed++
		}
		for _, e := range events {
			d.Apply(e)
		}
		version = res.Sequence
	}
	b.StopTimer()
	b.ReportMetric(stats.Micros(stats.Percentile(applied, 50)), "applied-p50-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(applied, 99)), "applied-p99-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(applied, 100)), "applied-max-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(confirmed, 50)), "confirmed-p50-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(confirmed, 99)), "confirmed-p99-µs")
	b.ReportMetric(float64(unconfirmed), "unconfirmed")
}

// BenchmarkRegionCatchUp cuts region eu off, appends 100,000 records on
// the hub (keys created, one command per message, as the services write
// them), heals the link and measures how long eu's gateway takes to have
// applied the last one: the mirror's catch-up over the leaf link and the
// gateway's replay from the mirror. Run with -benchtime=1x.
func BenchmarkRegionCatchUp(b *testing.B) {
	const n = 100_000
	w := newRegionWorld(b)
	ctx := context.Background()
	eu := w.gateways["eu"]
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for !eu.Ready() {
		time.Sleep(10 * time.Millisecond)
	}
	w.links["eu"].Cut()
	cutAt := time.Now()
	writer, err := seed.New(ctx, natstest.Connect(b, w.hub), project)
	if err != nil {
		b.Fatal(err)
	}
	keys, err := seed.NewKeys(n)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < n; i += 2_000 {
		if err := writer.CreateKeys(keys[i:i+2_000], nil); err != nil {
			b.Fatal(err)
		}
		if err := writer.Wait(wctx); err != nil {
			b.Fatal(err)
		}
	}
	last, err := w.events.LastSequence(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := w.gateways["us"].WaitApplied(wctx, last); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	b.ReportMetric(start.Sub(cutAt).Seconds(), "cut-s")
	cpu := stats.ProcessCPU()
	if err := w.links["eu"].Heal(); err != nil {
		b.Fatal(err)
	}
	// When the first record arrives: the region resumes the mirror's feed
	// on the hub once the link is back (docs/benchmarks.md).
	resumed := make(chan time.Duration, 1)
	before := eu.Applied()
	go func() {
		for eu.Applied() == before && wctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		resumed <- time.Since(start)
	}()
	if err := eu.WaitApplied(wctx, last); err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	used := stats.ProcessCPU() - cpu
	b.StopTimer()
	first := <-resumed
	b.ReportMetric(took.Seconds(), "catch-up-s")
	b.ReportMetric(first.Seconds(), "resume-s")
	b.ReportMetric(float64(n)/(took-first).Seconds(), "records/s-after-resume")
	b.ReportMetric(used.Seconds(), "cpu-s")
}
