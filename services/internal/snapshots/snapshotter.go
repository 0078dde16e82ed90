package snapshots

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
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
	cfg SnapshotterConfig
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
	cfg.Log = cfg.Log.With("component", "snapshotter")
	return &Snapshotter{cfg: cfg}, nil
}

// errStreamChanged ends one life of the snapshotter's map: the stream was
// recreated, so the map starts over.
var errStreamChanged = errors.New("snapshots: the event stream was recreated")

// Run saves snapshots until ctx ends; it returns ctx's error. Trouble
// with NATS is logged and retried, never fatal: snapshots are only a
// short cut.
func (s *Snapshotter) Run(ctx context.Context) error {
	for wait := time.Second; ; wait = min(2*wait, time.Minute) {
		err := s.runOnce(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errStreamChanged) {
			wait = 0
		}
		s.cfg.Log.Warn("snapshotter restarting", "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// runOnce builds a map of one life of the stream, from the latest usable
// snapshot on, and saves snapshots of it while the stream stays the same.
func (s *Snapshotter) runOnce(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start, err := s.cfg.Events.State(ctx)
	if err != nil {
		return err
	}
	m := authmap.New()
	if _, err := s.cfg.Store.Restore(ctx, m, start); err != nil && !errors.Is(err, ErrNone) {
		s.cfg.Log.Info("not starting from the latest snapshot", "err", err)
	}
	followErr := make(chan error, 1)
	go func() { followErr <- follow(ctx, s.cfg.Events, m) }()

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
			return ctx.Err()
		case err := <-followErr:
			return fmt.Errorf("snapshots: following the stream: %w", err)
		case <-t.C:
		}
		if err := s.maybeSave(ctx, m, start, every); err != nil {
			return err
		}
		t.Reset(s.cfg.Check)
	}
}

// follow applies every record after the map's own to it, live, until ctx
// ends or the stream fails. It is the snapshotter's whole stream reading.
func follow(ctx context.Context, events *eventstore.Store, m *authmap.Map) error {
	return events.Follow(ctx, m.Applied()+1, func(r eventstore.Record) error {
		m.Apply(r.Sequence, r.Events)
		return nil
	})
}

// maybeSave saves m if it is every records past the latest snapshot of
// this stream. errStreamChanged: the stream is not the one m follows.
func (s *Snapshotter) maybeSave(ctx context.Context, m *authmap.Map, start eventstore.StreamState, every uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	state, err := s.cfg.Events.State(ctx)
	if err != nil {
		s.cfg.Log.Warn("cannot read the stream's state", "err", err)
		return nil
	}
	if state.Stream != start.Stream || !state.Created.Equal(start.Created) || state.LastSeq < m.Applied() {
		return errStreamChanged
	}
	var base uint64
	latest, err := s.cfg.Store.Latest(ctx)
	switch {
	case err == nil && usable(latest, state) == nil:
		base = latest.Sequence
	case err == nil, errors.Is(err, ErrNone), errors.Is(err, ErrNotUsable):
		// None usable for this stream: one is due.
	default:
		s.cfg.Log.Warn("cannot read the latest snapshot's state", "err", err)
		return nil
	}
	if m.Applied() < base+every {
		return nil
	}
	began := time.Now()
	info, err := s.cfg.Store.Save(ctx, m, state)
	if err != nil {
		if ctx.Err() == nil {
			s.cfg.Log.Warn("saving a snapshot failed", "err", err)
		}
		return nil
	}
	s.cfg.Log.Info("saved a snapshot", "sequence", info.Sequence, "bytes", info.Size,
		"took", time.Since(began).Round(time.Millisecond))
	return nil
}
