package seed_test

import (
	"context"
	"testing"
	"time"

	"github.com/infergate/infergate/services/bench/internal/seed"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natstest"
)

// TestSeededStreamIsWhatAGatewayApplies seeds a small stream the way the
// cold-start and load benchmarks seed big ones, replays it into the
// gateway's auth map, and checks every key gets in where it is linked and
// nowhere else.
func TestSeededStreamIsWhatAGatewayApplies(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc := natstest.Connect(t, natstest.Start(t))
	w, err := seed.New(ctx, nc, "bench")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := seed.NewKeys(30)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.CreateKeys(keys, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// Two deployments created with 10 keys each; a third created bare and
	// linked to the last 10 in batches of 3.
	deps := []seed.Deployment{
		{Name: "dep-a", UpstreamURL: "http://127.0.0.1:9", Keys: keys[:10]},
		{Name: "dep-b", UpstreamURL: "http://127.0.0.1:9", Keys: keys[10:20]},
		{Name: "dep-c", UpstreamURL: "http://127.0.0.1:9"},
	}
	versions, err := w.CreateDeployments(ctx, deps, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.LinkKeys(ctx, deps[2], versions[2], keys[20:], 3); err != nil {
		t.Fatal(err)
	}
	last, err := w.Store().LastSequence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 30 keys, 3 creations, 3 DEPLOYED, 4 link batches.
	if last != 40 {
		t.Fatalf("stream has %d messages, want 40", last)
	}

	m := authmap.New()
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	_ = w.Store().Follow(fctx, 1, func(r eventstore.Record) error {
		m.Apply(r.Sequence, r.Events)
		if r.Sequence == last {
			stop()
		}
		return nil
	})
	if m.Applied() != last {
		t.Fatalf("applied %d of %d", m.Applied(), last)
	}
	now := time.Now()
	for i, k := range keys {
		owner := []string{"dep-a", "dep-b", "dep-c"}[i/10]
		for _, d := range []string{"dep-a", "dep-b", "dep-c"} {
			got := m.Decide("bench", d, "local", k.Secret, now).Result
			want := authmap.ResultInvalidAPIKey
			if d == owner {
				want = authmap.ResultAllowed
			}
			if got != want {
				t.Errorf("key %d at %s: %v, want %v", i, d, got, want)
			}
		}
	}
}
