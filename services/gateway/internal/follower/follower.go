// Package follower keeps a gateway's auth map in step with the event
// stream: it replays the stream from the start, follows it live, resumes
// from the last applied record after any failure, and knows how far
// behind the stream it is and whether it has caught up since it started.
package follower

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
)

// Stream is the part of the event store the follower reads.
type Stream interface {
	Follow(ctx context.Context, from uint64, fn func(eventstore.Record) error, opts ...eventstore.FollowOption) error
	LastSequence(ctx context.Context) (uint64, error)
}

// Config says what to follow into which map.
type Config struct {
	Stream Stream
	Map    *authmap.Map
	Log    *slog.Logger
	Now    func() time.Time
	// PollInterval is how often the stream's last sequence is read (for
	// lag and staleness); default 1 s.
	PollInterval time.Duration
	// Connected reports the NATS connection's state; nil means "the last
	// poll succeeded recently".
	Connected func() bool
	// OnApplied, if set, is called after every applied record, on the
	// applying goroutine; it must not block.
	OnApplied func()
}

// Follower feeds the map. Create it with New and start it with Run.
type Follower struct {
	cfg Config

	target      atomic.Uint64 // the stream's last sequence when first read
	targetKnown atomic.Bool
	ready       atomic.Bool
	streamLast  atomic.Uint64
	lastContact atomic.Int64 // Unix ns of the last successful poll; 0: never
	lastEvent   atomic.Int64 // Unix ns of the last record applied; 0: never

	// mu guards the fields below.
	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever a record is applied
	lastErr error
}

// New returns a follower; it does nothing until Run.
func New(cfg Config) *Follower {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Follower{cfg: cfg, changed: make(chan struct{})}
}

// Run follows the stream until ctx ends, then returns ctx's error.
func (f *Follower) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { f.poll(ctx) })
	defer wg.Wait()
	backoff := newBackoff()
	for {
		from := f.cfg.Map.Applied() + 1
		err := f.cfg.Stream.Follow(ctx, from, f.apply)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		f.setErr(err)
		wait := backoff.next(f.cfg.Map.Applied() >= from)
		f.cfg.Log.Warn("following the event stream failed; retrying", "from", f.cfg.Map.Applied()+1, "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

func (f *Follower) apply(rec eventstore.Record) error {
	if f.cfg.Map.Apply(rec.Sequence, rec.Events) {
		f.lastEvent.Store(f.cfg.Now().UnixNano())
		f.checkReady()
		f.mu.Lock()
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
		if f.cfg.OnApplied != nil {
			f.cfg.OnApplied()
		}
	}
	return nil
}

// poll reads the stream's last sequence now and every PollInterval.
func (f *Follower) poll(ctx context.Context) {
	t := time.NewTicker(f.cfg.PollInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, max(f.cfg.PollInterval, 2*time.Second))
		last, err := f.cfg.Stream.LastSequence(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			f.setErr(err)
		default:
			f.streamLast.Store(last)
			f.lastContact.Store(f.cfg.Now().UnixNano())
			if f.targetKnown.CompareAndSwap(false, true) {
				f.target.Store(last)
				f.cfg.Log.Info("replaying the event stream", "to", last)
			}
			f.checkReady()
			f.setErr(nil)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkReady makes the follower ready, for good, once it has applied the
// stream as it was when first read.
func (f *Follower) checkReady() {
	if f.ready.Load() || !f.targetKnown.Load() {
		return
	}
	if f.cfg.Map.Applied() >= f.target.Load() && f.ready.CompareAndSwap(false, true) {
		f.cfg.Log.Info("caught up with the event stream", "applied", f.cfg.Map.Applied())
	}
}

func (f *Follower) setErr(err error) {
	f.mu.Lock()
	f.lastErr = err
	f.mu.Unlock()
}

// Ready reports whether the map has caught up with the stream's last
// sequence as it was first read at start-up. It stays true afterwards,
// also while NATS is away: the map is then stale, not wrong (see Status).
func (f *Follower) Ready() bool { return f.ready.Load() }

// Applied is the last applied stream sequence.
func (f *Follower) Applied() uint64 { return f.cfg.Map.Applied() }

// Changed returns a channel closed at the next applied record (for
// reporting the applied sequence as it moves).
func (f *Follower) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// WaitApplied blocks until a record at or after seq is applied, or ctx
// ends.
func (f *Follower) WaitApplied(ctx context.Context, seq uint64) error {
	for {
		ch := f.Changed()
		if f.Applied() >= seq {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// Status is the follower's state for /readyz and /metrics.
type Status struct {
	Ready      bool
	Applied    uint64
	StreamLast uint64
	// Lag is StreamLast minus Applied, as of the last poll.
	Lag       uint64
	Connected bool
	// Stale is true while the follower cannot confirm it is up to date:
	// NATS is disconnected or the last successful poll is older than three
	// intervals.
	Stale            bool
	SinceLastEvent   time.Duration // -1: none yet
	SinceLastContact time.Duration // -1: none yet
	// Err is the last error following or polling the stream, cleared by
	// the next successful poll.
	Err error
}

// Status returns the current state.
func (f *Follower) Status() Status {
	now := f.cfg.Now()
	s := Status{
		Ready:            f.Ready(),
		Applied:          f.Applied(),
		StreamLast:       f.streamLast.Load(),
		SinceLastEvent:   since(now, f.lastEvent.Load()),
		SinceLastContact: since(now, f.lastContact.Load()),
	}
	s.StreamLast = max(s.StreamLast, s.Applied)
	s.Lag = s.StreamLast - s.Applied
	fresh := s.SinceLastContact >= 0 && s.SinceLastContact <= 3*f.cfg.PollInterval
	if f.cfg.Connected != nil {
		s.Connected = f.cfg.Connected()
	} else {
		s.Connected = fresh
	}
	s.Stale = !s.Connected || !fresh
	f.mu.Lock()
	s.Err = f.lastErr
	f.mu.Unlock()
	return s
}

func since(now time.Time, unixNano int64) time.Duration {
	if unixNano == 0 {
		return -1
	}
	return max(now.Sub(time.Unix(0, unixNano)), 0)
}

// backoff spaces retries: 100 ms doubling to 5 s, with jitter, starting
// over after a follow that made progress.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{} }

func (b *backoff) next(progressed bool) time.Duration {
	const first, most = 100 * time.Millisecond, 5 * time.Second
	if progressed || b.d == 0 {
		b.d = first
	} else {
		b.d = min(2*b.d, most)
	}
	return b.d/2 + rand.N(b.d/2+1)
}
