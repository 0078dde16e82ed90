package gateway

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
	"github.com/infergate/infergate/services/internal/snapshots"
)

// DefaultSnapshotEvery is how many stream records a gateway lets pass
// between snapshots it saves, by default.
const DefaultSnapshotEvery = 100_000

// MapOffHeapBytes is the memory the gateway's auth map holds outside the
// Go heap (its key table, once big; see authmap.Map.OffHeapBytes):
// runtime.MemStats does not count it.
func (g *Gateway) MapOffHeapBytes() int { return g.authMap.Load().OffHeapBytes() }

// mapConsumer feeds the gateway's auth map: it is the follower's
// follow.Consumer.
type mapConsumer struct{ g *Gateway }

func (c mapConsumer) Checkpoint(context.Context) (follow.Checkpoint, error) {
	return follow.Checkpoint{Stream: c.g.follower.Identity(), Sequence: c.g.authMap.Load().Applied()}, nil
}

// Reset swaps in a new map for the stream's life to: empty, or started
// from the latest usable snapshot of that life. Until the follower has
// caught up with it the gateway is not ready and refuses requests with
// 503 gateway_not_ready: it never decides on a map of a stream that no
// longer exists.
func (c mapConsumer) Reset(ctx context.Context, to eventstore.Identity) error {
	m := authmap.New()
	seq := c.g.restore(ctx, m, to)
	c.g.authMap.Store(m)
	c.g.snapshotSeq.Store(seq)
	return nil
}

func (c mapConsumer) Apply(_ context.Context, rec eventstore.Record) error {
	c.g.authMap.Load().Apply(rec.Sequence, rec.Events)
	return nil
}

// restore fills m from the latest usable snapshot of the stream's life
// to, if there is one, and returns its sequence (0: none; the follower
// then replays the stream from the start). A snapshot that cannot be used
// is never fatal: the stream is the source of truth and the snapshot only
// a short cut.
func (g *Gateway) restore(ctx context.Context, m *authmap.Map, to eventstore.Identity) uint64 {
	if g.cfg.Snapshots == nil || to.IsZero() {
		return 0
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	state, err := g.cfg.Events.State(ctx)
	if err != nil {
		g.cfg.Log.Warn("cannot read the stream's state; replaying it from the start", "err", err)
		return 0
	}
	if !state.Identity().Equal(to) {
		return 0 // the stream moved on again; the follower will notice
	}
	info, err := g.cfg.Snapshots.Restore(ctx, m, state)
	switch {
	case errors.Is(err, snapshots.ErrNone):
		g.cfg.Log.Info("no snapshot yet; replaying the stream from the start")
	case err != nil:
		g.cfg.Log.Warn("snapshot not used; replaying the stream from the start", "err", err)
	default:
		g.cfg.Log.Info("started from a snapshot", "sequence", info.Sequence, "bytes", info.Size,
			"saved", info.Saved, "took", time.Since(start).Round(time.Millisecond))
		return info.Sequence
	}
	return 0
}

// saveSnapshots saves a snapshot of the auth map whenever the gateway is
// ready and SnapshotEvery records (plus its slack) past the latest one in
// the bucket, whoever saved it, checking every SnapshotCheck, until ctx
// ends.
func (g *Gateway) saveSnapshots(ctx context.Context) {
	if g.cfg.Snapshots == nil || g.cfg.SnapshotEvery == 0 {
		return
	}
	// Gateways started together spread their checks, and each waits for
	// a random 0–50 % more than SnapshotEvery records, so that usually the
	// first one due saves and the others find its snapshot, rather than
	// all of them uploading one at once.
	slack := rand.N(g.cfg.SnapshotEvery/2 + 1)
	t := time.NewTimer(g.cfg.SnapshotCheck/2 + rand.N(g.cfg.SnapshotCheck))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.maybeSave(ctx, g.cfg.SnapshotEvery+slack)
		t.Reset(g.cfg.SnapshotCheck)
	}
}

// maybeSave saves a snapshot if the map is every records past the latest.
func (g *Gateway) maybeSave(ctx context.Context, every uint64) {
	if !g.Ready() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	state, err := g.cfg.Events.State(ctx)
	if err != nil {
		return // the follower reports NATS trouble
	}
	var base uint64
	latest, err := g.cfg.Snapshots.Latest(ctx)
	switch {
	case err == nil && latest.Stream == state.Stream && latest.StreamCreated.Equal(state.Created):
		base = latest.Sequence
	case err == nil, errors.Is(err, snapshots.ErrNone), errors.Is(err, snapshots.ErrNotUsable):
		// None of this stream: one is due.
	default:
		g.cfg.Log.Warn("cannot read the latest snapshot's state", "err", err)
		return
	}
	if g.Applied() < base+every {
		return
	}
	start := time.Now()
	if !state.Identity().Equal(g.follower.Identity()) {
		return // the map is not of this stream's life
	}
	info, err := g.cfg.Snapshots.Save(ctx, g.authMap.Load(), state)
	if err != nil {
		if ctx.Err() == nil {
			g.metrics.SnapshotSaved(0, err)
			g.cfg.Log.Warn("saving a snapshot failed", "err", err)
		}
		return
	}
	g.metrics.SnapshotSaved(info.Sequence, nil)
	g.cfg.Log.Info("saved a snapshot", "sequence", info.Sequence, "bytes", info.Size,
		"took", time.Since(start).Round(time.Millisecond))
}
