// Package follow is the one way infergate consumers follow the event
// stream: the gateway's auth map, the read models, the audit index, the
// deployment status checker and the snapshot writer all run on it.
//
// A consumer's checkpoint is {stream identity, sequence}. A Follower reads
// the stream's state, compares it with the consumer's checkpoint and, when
// the stream is another life of it (deleted and created again) or went
// back below what was applied, or is gone, tells the consumer to Reset
// before anything else: a consumer never serves the state of a stream that
// no longer exists as current. Otherwise it resumes at sequence+1. It
// retries every failure with a jittered backoff, keeps watching the stream
// while it follows (lag, contact, identity), and lets callers wait for a
// sequence.
package follow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/internal/eventstore"
)

// Checkpoint is where a consumer stands: the life of the stream its state
// was built from and the last sequence of it applied.
type Checkpoint struct {
	Stream   eventstore.Identity
	Sequence uint64
}

// Source is the part of the event store a follower reads.
type Source interface {
	State(ctx context.Context) (eventstore.StreamState, error)
	Follow(ctx context.Context, from uint64, fn func(eventstore.Record) error, opts ...eventstore.FollowOption) error
}

// ChangeNotifier is what a Source may also do: call fn when the stream is
// announced deleted, created or updated (eventstore.Store does, from
// JetStream's advisories). The follower then checks the stream's life at
// once, instead of at its next poll.
type ChangeNotifier interface {
	OnStreamChange(fn func()) (stop func(), err error)
}

// Consumer is what a follower feeds.
type Consumer interface {
	// Checkpoint says where the consumer stands; the zero Checkpoint when
	// it holds nothing.
	Checkpoint(ctx context.Context) (Checkpoint, error)
	// Reset drops everything the consumer holds, atomically, and makes its
	// checkpoint {to, 0}. to is zero when the stream is gone.
	Reset(ctx context.Context, to eventstore.Identity) error
	// Apply applies one record and moves the checkpoint's sequence to it,
	// atomically. Records come in stream order, each once per life.
	Apply(ctx context.Context, rec eventstore.Record) error
}

// ErrStreamChanged is the cause a follow is stopped with when the stream
// turned out to be another life of it, or went back.
var ErrStreamChanged = errors.New("follow: the stream changed under the follower")

// Config says what to follow into what.
type Config struct {
	// Name is the consumer's name in logs ("gateway", "read model", …).
	Name     string
	Source   Source
	Consumer Consumer
	Log      *slog.Logger
	Now      func() time.Time
	// PollInterval is how often the stream's state is read while
	// following (lag, contact, identity); default 1 s.
	PollInterval time.Duration
	// Connected reports the NATS connection's state; nil means "the last
	// poll succeeded recently".
	Connected func() bool
	// OnApplied, if set, runs after every applied record, on the applying
	// goroutine; it must not block.
	OnApplied func(seq uint64)
	// OnReady, if set, runs each time the follower becomes ready: caught
	// up with the stream as it was when this life of it was first read.
	OnReady func()
}

// Follower feeds one consumer. Create it with New and start it with Run.
type Follower struct {
	cfg Config

	applied     atomic.Uint64
	target      atomic.Uint64 // the stream's last sequence when this life was first read
	ready       atomic.Bool
	streamLast  atomic.Uint64
	lastContact atomic.Int64 // Unix ns of the last successful state read; 0: never
	lastEvent   atomic.Int64 // Unix ns of the last record applied; 0: never
	resets      atomic.Uint64
	// suspected counts the times the watcher found the stream not to be
	// the life being followed; cleared is the count once() had seen when
	// it last compared the stream with the consumer's checkpoint. While
	// cleared < suspected the follower is not ready: the follow it runs
	// may take a while to stop, and its state must not pass for current
	// meanwhile.
	suspected atomic.Uint64
	cleared   atomic.Uint64
	// syncedAt is Unix ns of the latest state read by which everything
	// the stream then held had been applied: how current the consumer is
	// known to be. 0: never.
	syncedAt atomic.Int64

	// poke wakes the watcher for a check at once; wake cuts a retry's
	// backoff short (the stream that was missing may be back).
	poke, wake chan struct{}

	// mu guards the fields below.
	mu       sync.Mutex
	identity eventstore.Identity
	changed  chan struct{} // closed and replaced whenever applied or identity moves
	lastErr  error
	failing  bool                    // the last attempt failed (logged once per transition)
	stop     context.CancelCauseFunc // stops the current follow; nil between follows
	// pendingSeq and pendingAt are the latest state read not yet caught
	// up with: reaching pendingSeq makes the consumer synced as of
	// pendingAt.
	pendingSeq uint64
	pendingAt  int64
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
	if cfg.Name == "" {
		cfg.Name = "consumer"
	}
	cfg.Log = cfg.Log.With("follower", cfg.Name)
	return &Follower{cfg: cfg, changed: make(chan struct{}), poke: make(chan struct{}, 1), wake: make(chan struct{}, 1)}
}

// Poke asks for a check of the stream's life now (it never blocks).
func (f *Follower) Poke() {
	for _, ch := range []chan struct{}{f.poke, f.wake} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Run follows the stream until ctx ends, then returns ctx's error. Every
// other failure is retried.
func (f *Follower) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if n, ok := f.cfg.Source.(ChangeNotifier); ok {
		if stop, err := n.OnStreamChange(f.Poke); err != nil {
			f.cfg.Log.Warn("cannot watch the stream's advisories; relying on polls", "err", err)
		} else {
			defer stop()
		}
	}
	wg.Go(func() { f.watch(ctx) })
	var b backoff
	for {
		before := f.applied.Load()
		err := f.once(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrStreamChanged) {
			continue // at once: once resets the consumer
		}
		f.failed(err)
		wait := b.next(f.applied.Load() > before)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		case <-f.wake: // the stream changed (e.g. created again): try now
		}
	}
}

// once brings the consumer to the stream's current life and follows it
// until something fails.
func (f *Follower) once(ctx context.Context) error {
	suspected := f.suspected.Load()
	// The checkpoint first: read after the state, a checkpoint moved on by
	// another process sharing the store could look ahead of the stream.
	cp, err := f.cfg.Consumer.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("follow: %s checkpoint: %w", f.cfg.Name, err)
	}
	st, err := f.state(ctx)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		// The stream is gone: what the consumer holds describes nothing
		// that exists any more.
		if rerr := f.reset(ctx, eventstore.Identity{}, 0); rerr != nil {
			return rerr
		}
		return err
	case err != nil:
		return err
	}
	id := st.Identity()
	// A region's mirror may lack records the hub holds (st.Behind):
	// ready means caught up with the hub as far as it can be known.
	target := st.LastSeq + st.Behind
	if !cp.Stream.Equal(id) || cp.Sequence > st.LastSeq {
		if err := f.reset(ctx, id, target); err != nil {
			return err
		}
		if cp.Sequence > 0 || !cp.Stream.IsZero() {
			f.cfg.Log.Warn("the event stream is not the one the state was built from; rebuilt from the new stream",
				"was", cp.Stream.String(), "was_sequence", cp.Sequence, "now", id.String(), "stream_last", st.LastSeq)
		}
		if cp, err = f.cfg.Consumer.Checkpoint(ctx); err != nil {
			return fmt.Errorf("follow: %s checkpoint: %w", f.cfg.Name, err)
		}
	} else if !f.Identity().Equal(id) {
		// First run on a consumer that kept its state (a restarted read
		// model): take its checkpoint as it is.
		f.setLife(id, cp.Sequence, target)
	}
	if cp.Sequence > f.applied.Load() {
		f.advance(cp.Sequence) // a consumer reset may start from a snapshot
	}
	// The consumer now matches the stream as read after every suspicion
	// noted before this attempt began.
	f.cleared.Store(suspected)
	f.noteState(st, f.applied.Load(), f.lastContact.Load())
	f.checkReady()
	f.cfg.Log.Debug("following the event stream", "from", f.applied.Load()+1, "stream", id.String())

	fctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	f.mu.Lock()
	f.stop = stop
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.stop = nil
		f.mu.Unlock()
	}()
	// A suspicion raised since this attempt began may have found no
	// follow to stop: look again before following (suspect counts first,
	// then looks for the follow; this sets the follow, then counts).
	if f.suspected.Load() != suspected {
		return fmt.Errorf("%w: while starting to follow", ErrStreamChanged)
	}
	err = f.cfg.Source.Follow(fctx, f.applied.Load()+1, func(rec eventstore.Record) error {
		if err := f.cfg.Consumer.Apply(fctx, rec); err != nil {
			return fmt.Errorf("follow: %s apply %d: %w", f.cfg.Name, rec.Sequence, err)
		}
		f.lastEvent.Store(f.cfg.Now().UnixNano())
		f.advance(rec.Sequence)
		f.recovered()
		f.checkReady()
		if f.cfg.OnApplied != nil {
			f.cfg.OnApplied(rec.Sequence)
		}
		return nil
	})
	if cause := context.Cause(fctx); ctx.Err() == nil && errors.Is(cause, ErrStreamChanged) {
		return cause
	}
	return err
}

// reset drops the consumer's state for the stream's life id whose last
// sequence is last.
func (f *Follower) reset(ctx context.Context, id eventstore.Identity, last uint64) error {
	// Not ready first: from here until the consumer has caught up with the
	// new life, its state must not be taken as current.
	f.ready.Store(false)
	if err := f.cfg.Consumer.Reset(ctx, id); err != nil {
		return fmt.Errorf("follow: %s reset: %w", f.cfg.Name, err)
	}
	f.resets.Add(1)
	f.setLife(id, 0, last)
	return nil
}

// setLife starts counting a life of the stream at applied.
func (f *Follower) setLife(id eventstore.Identity, applied, target uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ready.Store(false)
	f.identity = id
	f.syncedAt.Store(0)
	f.pendingAt = 0
	f.applied.Store(applied)
	f.target.Store(target)
	f.streamLast.Store(target)
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *Follower) advance(seq uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if seq <= f.applied.Load() {
		return
	}
	f.applied.Store(seq)
	if f.pendingAt != 0 && seq >= f.pendingSeq {
		f.syncedAt.Store(max(f.syncedAt.Load(), f.pendingAt))
		f.pendingAt = 0
	}
	close(f.changed)
	f.changed = make(chan struct{})
}

// noteState records a state read at readAt (Unix ns) by which applied
// had been applied: the consumer is synced as of then if that covers the
// stream's last sequence, else once it gets there.
func (f *Follower) noteState(st eventstore.StreamState, applied uint64, readAt int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !st.Identity().Equal(f.identity) {
		return
	}
	// A region's mirror is as current as when it last heard the hub, and
	// then lacked st.Behind records: staleness is counted from the hub.
	last := st.LastSeq + st.Behind
	if !st.CurrentAt.IsZero() {
		readAt = min(readAt, st.CurrentAt.UnixNano())
	}
	if applied >= last || f.applied.Load() >= last {
		f.syncedAt.Store(max(f.syncedAt.Load(), readAt))
		return
	}
	f.pendingSeq, f.pendingAt = last, readAt
}

func (f *Follower) checkReady() {
	if f.ready.Load() || f.Identity().IsZero() || f.applied.Load() < f.target.Load() || f.cleared.Load() < f.suspected.Load() {
		return
	}
	if f.ready.CompareAndSwap(false, true) {
		f.cfg.Log.Info("caught up with the event stream", "applied", f.applied.Load(), "stream", f.Identity().String())
		if f.cfg.OnReady != nil {
			f.cfg.OnReady()
		}
		f.mu.Lock()
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
	}
}

func (f *Follower) state(ctx context.Context) (eventstore.StreamState, error) {
	ctx, cancel := context.WithTimeout(ctx, max(f.cfg.PollInterval, 2*time.Second))
	defer cancel()
	// The time the question was asked: the answer is at least that
	// current, so staleness counted from it is never understated.
	asked := f.cfg.Now().UnixNano()
	st, err := f.cfg.Source.State(ctx)
	if err != nil {
		return st, err
	}
	f.streamLast.Store(st.LastSeq)
	f.lastContact.Store(asked)
	return st, nil
}

// watch reads the stream's state every PollInterval while following, and
// stops the follow when the stream is not the life being followed.
func (f *Follower) watch(ctx context.Context) {
	t := time.NewTicker(f.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.poke:
		}
		// What was applied before the state is read cannot be past the
		// stream's last sequence unless the stream went back; read after,
		// it could be (records appended and applied in between).
		f.mu.Lock()
		id := f.identity
		f.mu.Unlock()
		if id.IsZero() {
			continue // no life followed yet, or the stream is gone: once() decides
		}
		applied := f.applied.Load()
		st, err := f.state(ctx)
		if ctx.Err() != nil {
			return
		}
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			f.suspect(fmt.Errorf("%w: %s is gone", ErrStreamChanged, id))
		case err != nil:
			f.setErr(err)
		case !st.Identity().Equal(id) || st.LastSeq < applied:
			f.suspect(fmt.Errorf("%w: %s is now %s at %d", ErrStreamChanged, id, st.Identity(), st.LastSeq))
		default:
			f.noteState(st, applied, f.lastContact.Load())
			f.setErr(nil)
			f.checkReady()
		}
	}
}

// suspect notes that the stream is not the life being followed: the
// follower is not ready from now until once() has compared the stream with
// the consumer's checkpoint again (and reset it if need be), however long
// the current follow takes to stop.
func (f *Follower) suspect(cause error) {
	f.suspected.Add(1)
	if f.ready.CompareAndSwap(true, false) {
		f.cfg.Log.Warn("the event stream changed; not ready until the state is rebuilt", "reason", cause)
	}
	f.mu.Lock()
	stop := f.stop
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	if stop != nil {
		stop(cause)
	}
}

// failed records a failed attempt; it is logged once per transition from
// working to failing, then at debug level.
func (f *Follower) failed(err error) {
	f.mu.Lock()
	first := !f.failing
	f.failing, f.lastErr = true, err
	f.mu.Unlock()
	if first {
		f.cfg.Log.Warn("following the event stream failed; retrying with backoff", "applied", f.applied.Load(), "err", err)
	} else {
		f.cfg.Log.Debug("following the event stream failed again", "err", err)
	}
}

func (f *Follower) recovered() {
	f.mu.Lock()
	was := f.failing
	f.failing, f.lastErr = false, nil
	f.mu.Unlock()
	if was {
		f.cfg.Log.Info("following the event stream again", "applied", f.applied.Load())
	}
}

func (f *Follower) setErr(err error) {
	f.mu.Lock()
	f.lastErr = err
	if err == nil && f.failing {
		f.failing = false
		f.mu.Unlock()
		f.cfg.Log.Info("the event stream answers again", "applied", f.applied.Load())
		return
	}
	f.mu.Unlock()
}

// Ready reports whether the consumer has caught up with the current life
// of the stream as it was first read. It stays true while NATS is away
// (the state is then stale, not wrong; see Status) and turns false at a
// reset until the consumer has caught up with the new life.
func (f *Follower) Ready() bool { return f.ready.Load() }

// Applied is the last applied sequence of the current life.
func (f *Follower) Applied() uint64 { return f.applied.Load() }

// Identity is the life of the stream being followed; zero before the
// first read and while the stream is gone.
func (f *Follower) Identity() eventstore.Identity {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.identity
}

// Checkpoint is the follower's position: identity and applied sequence.
func (f *Follower) Checkpoint() Checkpoint {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Checkpoint{Stream: f.identity, Sequence: f.applied.Load()}
}

// Synced is when the consumer was last known to hold everything the
// stream held: the time of the latest state read it had caught up with.
// The zero time when never (or not since the last reset). A consumer's
// staleness is the time since.
func (f *Follower) Synced() time.Time {
	if ns := f.syncedAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// SyncedUnixNano is Synced as Unix nanoseconds (0: never), for a check
// on every request that should not build a time.Time.
func (f *Follower) SyncedUnixNano() int64 { return f.syncedAt.Load() }

// Resets counts how many times the consumer was reset (the first
// placement on a stream included).
func (f *Follower) Resets() uint64 { return f.resets.Load() }

// Changed returns a channel closed at the next applied record, reset or
// readiness change.
func (f *Follower) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// WaitFor blocks until the record at seq (or a later one) of the current
// life has been applied, or ctx ends.
func (f *Follower) WaitFor(ctx context.Context, seq uint64) error {
	for {
		ch := f.Changed()
		if f.applied.Load() >= seq {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("follow: %s waiting for sequence %d (applied %d): %w", f.cfg.Name, seq, f.applied.Load(), context.Cause(ctx))
		case <-ch:
		}
	}
}

// WaitCaughtUp blocks until everything appended before the call has been
// applied, or ctx ends.
func (f *Follower) WaitCaughtUp(ctx context.Context) error {
	st, err := f.cfg.Source.State(ctx)
	if err != nil {
		return err
	}
	for {
		if err := f.WaitFor(ctx, st.LastSeq); err != nil {
			return err
		}
		if f.Identity().Equal(st.Identity()) {
			return nil
		}
		// Applied is from another life: wait for the change to settle.
		ch := f.Changed()
		if f.Identity().Equal(st.Identity()) {
			continue
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-ch:
		}
	}
}

// Status is the follower's state for /readyz and /metrics.
type Status struct {
	Ready      bool
	Stream     eventstore.Identity
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
	// SinceSynced is the time since Synced: the consumer's staleness
	// (-1: never synced).
	SinceSynced time.Duration
	Resets      uint64
	// Err is the last error following or polling the stream, cleared by
	// the next success.
	Err error
}

// Status returns the current state.
func (f *Follower) Status() Status {
	now := f.cfg.Now()
	s := Status{
		Ready:            f.Ready(),
		Applied:          f.applied.Load(),
		StreamLast:       f.streamLast.Load(),
		SinceLastEvent:   since(now, f.lastEvent.Load()),
		SinceLastContact: since(now, f.lastContact.Load()),
		SinceSynced:      since(now, f.syncedAt.Load()),
		Resets:           f.resets.Load(),
	}
	if s.StreamLast > s.Applied {
		s.Lag = s.StreamLast - s.Applied
	}
	fresh := s.SinceLastContact >= 0 && s.SinceLastContact <= 3*f.cfg.PollInterval
	if f.cfg.Connected != nil {
		s.Connected = f.cfg.Connected()
	} else {
		s.Connected = fresh
	}
	s.Stale = !s.Connected || !fresh
	f.mu.Lock()
	s.Stream, s.Err = f.identity, f.lastErr
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
// over after an attempt that made progress.
type backoff struct{ d time.Duration }

func (b *backoff) next(progressed bool) time.Duration {
	const first, most = 100 * time.Millisecond, 5 * time.Second
	if progressed || b.d == 0 {
		b.d = first
	} else {
		b.d = min(2*b.d, most)
	}
	return b.d/2 + rand.N(b.d/2+1)
}
