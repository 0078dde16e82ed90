package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
	"github.com/infergate/infergate/services/internal/snapshots"
)

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
	if c.g.flusher != nil {
		// Usage is counted by the map's numbers: count against the new
		// map from now on (what the old one counted is kept for the
		// next flush).
		c.g.flusher.MapChanged(m)
	}
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
