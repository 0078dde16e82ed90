package readmodel

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/infergate/infergate/services/internal/eventstore"
)

// Backoff between attempts after a failure, doubling up to the cap.
const (
	minRetryBackoff = 100 * time.Millisecond
	maxRetryBackoff = 10 * time.Second
)

// Projector follows the event stream into a Store, from the store's
// checkpoint on, and tells callers when a sequence has been applied (so an
// RPC that just appended can answer from the read model).
type Projector struct {
	events *eventstore.Store
	store  Store
	log    *slog.Logger

	mu sync.Mutex // mu guards applied and advanced
	// applied is the highest sequence known to be in the store.
	applied uint64
	// advanced is closed, and replaced, whenever applied grows: waiters
	// wake on it and look again.
	advanced chan struct{}
}

// NewProjector returns a Projector that applies events' records to store.
// A nil log discards.
func NewProjector(events *eventstore.Store, store Store, log *slog.Logger) *Projector {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Projector{events: events, store: store, log: log, advanced: make(chan struct{})}
}

// Run follows the stream until ctx ends, and then returns ctx's error. Any
// other failure (NATS or the database unreachable, a record the store
// rejects) is logged and retried after a backoff that doubles up to 10 s,
// resuming from the store's checkpoint, so nothing is skipped or applied
// twice. Call Run once at a time.
func (p *Projector) Run(ctx context.Context) error {
	backoff := minRetryBackoff
	for {
		before := p.Applied()
		err := p.follow(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p.Applied() > before {
			// It made progress before failing: the trouble is new.
			backoff = minRetryBackoff
		}
		p.log.Warn("readmodel: projection interrupted; will retry",
			"error", err, "applied", p.Applied(), "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, maxRetryBackoff)
	}
}

// follow applies records from the store's checkpoint on until ctx ends or
// something fails.
func (p *Projector) follow(ctx context.Context) error {
	checkpoint, err := p.store.Checkpoint(ctx)
	if err != nil {
		return err
	}
	p.advance(checkpoint)
	p.log.Debug("readmodel: following the stream", "from", checkpoint+1)
	return p.events.Follow(ctx, checkpoint+1, func(rec eventstore.Record) error {
		if err := p.store.Apply(ctx, rec); err != nil {
			return fmt.Errorf("apply sequence %d: %w", rec.Sequence, err)
		}
		p.advance(rec.Sequence)
		return nil
	})
}

func (p *Projector) advance(seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seq <= p.applied {
		return
	}
	p.applied = seq
	close(p.advanced)
	p.advanced = make(chan struct{})
}

// Applied is the sequence of the last record known to be in the store: 0
// until Run has read the store's checkpoint.
func (p *Projector) Applied() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied
}

// WaitFor blocks until the record with sequence seq (and all before it)
// has been applied, or ctx ends, in which case it returns ctx's error.
func (p *Projector) WaitFor(ctx context.Context, seq uint64) error {
	for {
		p.mu.Lock()
		applied, advanced := p.applied, p.advanced
		p.mu.Unlock()
		if applied >= seq {
			return nil
		}
		select {
		case <-advanced:
		case <-ctx.Done():
			return fmt.Errorf("readmodel: waiting for sequence %d (applied %d): %w", seq, applied, context.Cause(ctx))
		}
	}
}

// WaitCaughtUp blocks until everything appended to the stream before the
// call has been applied, or ctx ends.
func (p *Projector) WaitCaughtUp(ctx context.Context) error {
	last, err := p.events.LastSequence(ctx)
	if err != nil {
		return err
	}
	return p.WaitFor(ctx, last)
}
