package bench_test

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/bench/internal/stats"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/command"
	"github.com/infergate/infergate/services/internal/eventstore"
)

const project = "bench"

// propagationWorld is a deployment and a key, on the three-gateway stack.
type propagationWorld struct {
	agg     eventstore.Aggregate
	d       aggregate.Deployment
	live    aggregate.LiveKeys
	key     string
	version uint64
}

// BenchmarkPropagation measures, for each of b.N link or unlink changes,
// the time from the append's acknowledgement (JetStream's PubAck) until the
// control plane's receipts tracker has heard from all three gateways —
// each on its own NATS connection — that they applied it: what LinkKey
// and UnlinkKey wait for before they answer confirmed. Run it with
// -benchtime=2000x for the 2,000 changes of docs/benchmarks.md.
func BenchmarkPropagation(b *testing.B) {
	s := stack(b, 3)
	ctx := context.Background()
	w := once(b, "propagation", func() *propagationWorld {
		if _, err := s.CreateKey(ctx, project, "prop-key"); err != nil {
			b.Fatal(err)
		}
		if err := s.Deploy(ctx, project, "prop", s.UpstreamURL, "prop-key"); err != nil {
			b.Fatal(err)
		}
		agg := eventstore.Aggregate{Project: project, Type: eventstore.TypeDeployment, Name: "prop"}
		recs, version, err := s.Plane.Events.Load(ctx, agg)
		if err != nil {
			b.Fatal(err)
		}
		keyRecs, _, err := s.Plane.Events.Load(ctx, eventstore.Aggregate{Project: project, Type: eventstore.TypeKey, Name: "prop-key"})
		if err != nil {
			b.Fatal(err)
		}
		k := aggregate.KeyFrom("prop-key", eventstore.Events(keyRecs))
		return &propagationWorld{
			agg: agg, d: aggregate.DeploymentFrom("prop", eventstore.Events(recs)),
			live: aggregate.LiveKeys{"prop-key": k.ID}, key: "prop-key", version: version,
		}
	})
	lat := make([]time.Duration, 0, b.N)
	acks := make([]time.Duration, 0, b.N)
	unconfirmed := 0
	b.ResetTimer()
	for range b.N {
		meta := command.Meta(ctx, project, time.Now())
		var (
			events []*eventv1.Event
			err    error
		)
		if _, linked := w.d.Links[w.key]; linked {
			events, err = w.d.Unlink(meta, w.key, w.live)
		} else {
			events, err = w.d.Link(meta, w.key, w.live)
		}
		if err != nil || len(events) == 0 {
			b.Fatalf("deciding a change: %v (%d events)", err, len(events))
		}
		start := time.Now()
		res, err := s.Plane.Events.Append(ctx, w.agg, w.version, events)
		if err != nil {
			b.Fatal(err)
		}
		acked := time.Now()
		p := s.Plane.Tracker.Wait(ctx, res.Sequence, nil, 2*time.Second)
		lat = append(lat, time.Since(acked))
		acks = append(acks, acked.Sub(start))
		if !p.GetConfirmed() || p.GetGateways() != 3 {
			unconfirmed++
		}
		for _, e := range events {
			w.d.Apply(e)
		}
		w.version = res.Sequence
	}
	b.StopTimer()
	b.ReportMetric(stats.Micros(stats.Percentile(lat, 50)), "p50-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(lat, 99)), "p99-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(lat, 100)), "max-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(lat, 90)), "p90-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(acks, 99)), "append-p99-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(acks, 50)), "append-p50-µs")
	b.ReportMetric(float64(unconfirmed), "unconfirmed")
}

// BenchmarkUnlinkKeyRPC measures UnlinkKey end to end through the Connect
// API on the three-gateway stack: validation, the decision (the deployment
// and its keys loaded from the stream), the append, the read model, and
// the wait for all three gateways' receipts. Each iteration links the key
// again first (not in the figures).
func BenchmarkUnlinkKeyRPC(b *testing.B) {
	s := stack(b, 3)
	ctx := context.Background()
	once(b, "unlink-rpc", func() bool {
		if _, err := s.CreateKey(ctx, project, "rpc-key"); err != nil {
			b.Fatal(err)
		}
		if err := s.Deploy(ctx, project, "rpc", s.UpstreamURL, "rpc-key"); err != nil {
			b.Fatal(err)
		}
		return true
	})
	unlinks := make([]time.Duration, 0, b.N)
	links := make([]time.Duration, 0, b.N)
	unconfirmed := 0
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		res, err := s.Deployments.UnlinkKey(ctx, connect.NewRequest(&deploymentv1.UnlinkKeyRequest{Project: project, Deployment: "rpc", Key: "rpc-key"}))
		if err != nil {
			b.Fatal(err)
		}
		unlinks = append(unlinks, time.Since(start))
		if p := res.Msg.GetPropagation(); !p.GetConfirmed() || p.GetGateways() != 3 {
			unconfirmed++
		}
		start = time.Now()
		if _, err := s.Deployments.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: project, Deployment: "rpc", Key: "rpc-key"})); err != nil {
			b.Fatal(err)
		}
		links = append(links, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(stats.Micros(stats.Percentile(unlinks, 50)), "unlink-p50-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(unlinks, 99)), "unlink-p99-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(links, 50)), "link-p50-µs")
	b.ReportMetric(float64(unconfirmed), "unconfirmed")
}
