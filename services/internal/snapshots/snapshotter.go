package snapshots

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
)

// DefaultEvery is how many stream records the snapshotter lets pass
// between snapshots, by default.
const DefaultEvery = 100_000

// SnapshotterConfig configures a Snapshotter.
type SnapshotterConfig struct {
	// Events is the event stream to follow. Required.
	Events *eventstore.Store
	// Store is the bucket to save to, opened writable. Required.
	Store *Store
	// Every is how many records past the latest snapshot make a new one
	// due; default DefaultEvery.
	Every uint64
	// Check is how often it checks whether one is due; default 10 s.
	Check time.Duration
	// Log defaults to discarding.
	Log *slog.Logger
}

// Snapshotter is the one writer of snapshots (issue 11): a control-plane
// component that follows the event stream into its own auth map and
// saves it every Every records. Gateways only read snapshots, and their
// NATS identity cannot write them (natsauth), so a compromised edge
// cannot seed false state into other gateways.
type Snapshotter struct {
	cfg      SnapshotterConfig
	follower *follow.Follower
	// life is the map and the stream's life it is of, swapped together on
	// a reset, so a save never labels a map with another life.
	life atomic.Pointer[life]
}

type life struct {
	stream eventstore.Identity
	m      *authmap.Map
}

// NewSnapshotter returns a snapshotter; Run runs it.
func NewSnapshotter(cfg SnapshotterConfig) (*Snapshotter, error) {
	var errs []error
	if cfg.Events == nil {
		errs = append(errs, errors.New("snapshots: snapshotter needs Events"))
	}
	if cfg.Store == nil || cfg.Store.obj == nil {
		errs = append(errs, errors.New("snapshots: snapshotter needs a writable Store"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Every == 0 {
		cfg.Every = DefaultEvery
	}
	if cfg.Check <= 0 {
		cfg.Check = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Snapshotter{cfg: cfg}
	s.life.Store(&life{m: authmap.New()})
	s.follower = follow.New(follow.Config{Name: "snapshotter", Source: cfg.Events, Consumer: mapConsumer{s}, Log: cfg.Log})
	return s, nil
}

// mapConsumer feeds the snapshotter's map: its follow.Consumer.
type mapConsumer struct{ s *Snapshotter }

func (c mapConsumer) Checkpoint(context.Context) (follow.Checkpoint, error) {
	l := c.s.life.Load()
	return follow.Checkpoint{Stream: l.stream, Sequence: l.m.Applied()}, nil
}

// Reset starts a new map for the stream's life to, from the latest usable
// snapshot of it if there is one.
func (c mapConsumer) Reset(ctx context.Context, to eventstore.Identity) error {
	m := authmap.New()
	if !to.IsZero() {
		if state, err := c.s.cfg.Events.State(ctx); err == nil && state.Identity().Equal(to) {
			if _, err := c.s.cfg.Store.Restore(ctx, m, state); err != nil && !errors.Is(err, ErrNone) {
				c.s.cfg.Log.Info("snapshotter not starting from the latest snapshot", "err", err)
				m = authmap.New()
			}
		}
	}
	c.s.life.Store(&life{stream: to, m: m})
	return nil
}

func (c mapConsumer) Apply(_ context.Context, rec eventstore.Record) error {
	c.s.life.Load().m.Apply(rec.Sequence, rec.Events)
	return nil
}

// Run follows the stream and saves snapshots until ctx ends; it returns
// ctx's error. Trouble with NATS is logged and retried, never fatal:
// snapshots are only a short cut.
func (s *Snapshotter) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.follower.Run(ctx) }()

	// Several control-plane processes each run a snapshotter: their checks
	// are spread, and each waits for a random 0–50 % more than Every
	// records, so that usually the first one due saves and the others
	// find its snapshot, rather than all of them uploading one at once.
	every := s.cfg.Every + rand.N(s.cfg.Every/2+1)
	t := time.NewTimer(s.cfg.Check/2 + rand.N(s.cfg.Check))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return <-done
		case <-t.C:
		}
		s.maybeSave(ctx, every)
		t.Reset(s.cfg.Check)
	}
}

// maybeSave saves the map if it is every records past the latest
// snapshot of the stream's current life.
func (s *Snapshotter) maybeSave(ctx context.Context, every uint64) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	state, err := s.cfg.Events.State(ctx)
	if err != nil {
		return // the follower reports NATS trouble
	}
	l := s.life.Load()
	if !state.Identity().Equal(l.stream) {
		return // the map is not of this life of the stream (yet)
	}
	m := l.m
	var base uint64
	latest, err := s.cfg.Store.Latest(ctx)
	switch {
	case err == nil && usable(latest, state) == nil:
		base = latest.Sequence
	case err == nil, errors.Is(err, ErrNone), errors.Is(err, ErrNotUsable):
		// None usable for this stream: one is due.
	default:
		s.cfg.Log.Warn("cannot read the latest snapshot's state", "err", err)
		return
	}
	if m.Applied() < base+every {
		return
	}
	began := time.Now()
	info, err := s.cfg.Store.Save(ctx, m, state)
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Log.Warn("saving a snapshot failed", "err", err)
		}
		return
	}
	s.cfg.Log.Info("saved a snapshot", "sequence", info.Sequence, "bytes", info.Size,
		"took", time.Since(began).Round(time.Millisecond))
}
