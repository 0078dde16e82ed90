package follow_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/servicetest"
)

// recorder is a Consumer that keeps the sequences it holds, per life.
type recorder struct {
	mu      sync.Mutex
	cp      follow.Checkpoint
	seqs    []uint64
	resets  []eventstore.Identity
	failFor int // Apply fails this many more times
}

func (r *recorder) Checkpoint(context.Context) (follow.Checkpoint, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cp, nil
}

func (r *recorder) Reset(_ context.Context, to eventstore.Identity) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cp, r.seqs = follow.Checkpoint{Stream: to}, nil
	r.resets = append(r.resets, to)
	return nil
}

func (r *recorder) Apply(_ context.Context, rec eventstore.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failFor > 0 {
		r.failFor--
		return errors.New("the consumer's database is away")
	}
	if rec.Sequence <= r.cp.Sequence {
		return fmt.Errorf("record %d applied twice (checkpoint %d)", rec.Sequence, r.cp.Sequence)
	}
	r.cp.Sequence = rec.Sequence
	r.seqs = append(r.seqs, rec.Sequence)
	return nil
}

func (r *recorder) held() ([]uint64, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seqs), len(r.resets)
}

type env struct {
	js     jetstream.JetStream
	events *eventstore.Store
}

func newEnv(t *testing.T) *env {
	t.Helper()
	_, js := natstest.JetStream(t)
	e := &env{js: js}
	e.open(t)
	return e
}

// open creates the stream if it is missing (a new life after a delete).
func (e *env) open(t *testing.T) {
	t.Helper()
	e.events = natstest.EventStore(t, e.js)
}

func (e *env) appendKey(t *testing.T, name string) uint64 {
	t.Helper()
	agg := eventstore.Aggregate{Project: "team-a", Type: eventstore.TypeKey, Name: name}
	res, err := e.events.Append(t.Context(), agg, 0, []*eventv1.Event{{
		Id:   name + "-" + time.Now().Format(time.RFC3339Nano),
		Time: timestamppb.Now(),
		Payload: &eventv1.Event_KeyCreated{KeyCreated: &eventv1.KeyCreated{
			KeyId: "id-" + name, Name: name,
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return res.Sequence
}

func run(t *testing.T, f *follow.Follower) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v; want context.Canceled", err)
		}
	})
}

func newFollower(e *env, c follow.Consumer) *follow.Follower {
	return follow.New(follow.Config{Name: "test", Source: e.events, Consumer: c, PollInterval: 20 * time.Millisecond})
}

func waitHeld(t *testing.T, r *recorder, want []uint64) {
	t.Helper()
	servicetest.WaitFor(t, fmt.Sprintf("consumer holds %v", want), func(context.Context) error {
		if got, _ := r.held(); !slices.Equal(got, want) {
			return fmt.Errorf("holds %v", got)
		}
		return nil
	})
}

func TestFollowsAndResumesFromCheckpoint(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, n := range []string{"k-one", "k-two", "k-three"} {
		e.appendKey(t, n)
	}
	st, err := e.events.State(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// A consumer that kept its state through a restart: it holds 1..2 of
	// this life and must get 3 on, nothing twice, and no reset.
	r := &recorder{cp: follow.Checkpoint{Stream: st.Identity(), Sequence: 2}}
	f := newFollower(e, r)
	run(t, f)
	waitHeld(t, r, []uint64{3})
	if err := f.WaitCaughtUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !f.Ready() || f.Applied() != 3 {
		t.Fatalf("Ready %v, Applied %d; want ready at 3", f.Ready(), f.Applied())
	}
	if _, resets := r.held(); resets != 0 {
		t.Fatalf("a consumer on the current stream was reset %d times", resets)
	}
	seq := e.appendKey(t, "k-four")
	if err := f.WaitFor(t.Context(), seq); err != nil {
		t.Fatal(err)
	}
	waitHeld(t, r, []uint64{3, 4})
}

// A checkpoint without a stream identity (written before identities
// existed) cannot be trusted: the consumer is rebuilt.
func TestLegacyCheckpointIsRebuilt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.appendKey(t, "k-one")
	e.appendKey(t, "k-two")
	r := &recorder{cp: follow.Checkpoint{Sequence: 1}}
	run(t, newFollower(e, r))
	waitHeld(t, r, []uint64{1, 2})
	if _, resets := r.held(); resets != 1 {
		t.Fatalf("resets = %d; want 1", resets)
	}
}

// The stream deleted and created again under a running follower: the
// consumer is reset to the new life and holds only the new stream's
// records, though the new stream's sequences are lower than what was
// applied; until it has caught up, the follower is not ready.
func TestRecreatedStreamResetsTheConsumer(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, n := range []string{"k-one", "k-two", "k-three"} {
		e.appendKey(t, n)
	}
	r := &recorder{}
	f := newFollower(e, r)
	run(t, f)
	waitHeld(t, r, []uint64{1, 2, 3})
	old := f.Identity()

	if err := e.js.DeleteStream(t.Context(), "INFERGATE_EVENTS"); err != nil {
		t.Fatal(err)
	}
	// The stream gone: nothing held may pass for current.
	servicetest.WaitFor(t, "consumer reset while the stream is gone", func(context.Context) error {
		if got, _ := r.held(); len(got) != 0 || f.Ready() || !f.Identity().IsZero() {
			return fmt.Errorf("holds %v, ready %v, stream %s", got, f.Ready(), f.Identity())
		}
		return nil
	})
	e.open(t)
	e.appendKey(t, "k-new")
	waitHeld(t, r, []uint64{1})
	if err := f.WaitCaughtUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	if now := f.Identity(); now.Equal(old) || now.IsZero() || !f.Ready() {
		t.Fatalf("after the new stream: identity %s (old %s), ready %v", now, old, f.Ready())
	}
	if st := f.Status(); st.Resets < 3 {
		// First placement, the stream gone, the new life.
		t.Fatalf("Status().Resets = %d; want ≥ 3", st.Resets)
	}
}

// A stream replaced between two polls (never seen gone) is noticed by its
// identity, and one that went back below what was applied by its last
// sequence: either way the consumer starts over on the stream as it is.
func TestReplacedStreamIsNoticedByIdentity(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, n := range []string{"k-one", "k-two", "k-three", "k-four"} {
		e.appendKey(t, n)
	}
	st, err := e.events.State(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.js.DeleteStream(t.Context(), "INFERGATE_EVENTS"); err != nil {
		t.Fatal(err)
	}
	e.open(t)
	e.appendKey(t, "k-new")
	// A consumer built from the first life up to 4 starts on the second.
	r := &recorder{cp: follow.Checkpoint{Stream: st.Identity(), Sequence: 4}}
	f := newFollower(e, r)
	run(t, f)
	waitHeld(t, r, []uint64{1})
	if err := f.WaitCaughtUp(t.Context()); err != nil {
		t.Fatal(err)
	}
	if f.Applied() != 1 {
		t.Fatalf("Applied = %d; want 1", f.Applied())
	}
}

// A consumer that fails is retried, from its checkpoint, until it works.
func TestFailedApplyIsRetried(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.appendKey(t, "k-one")
	e.appendKey(t, "k-two")
	r := &recorder{failFor: 3}
	f := newFollower(e, r)
	run(t, f)
	waitHeld(t, r, []uint64{1, 2})
	if st := f.Status(); st.Err != nil {
		t.Fatalf("Status().Err = %v after recovering; want nil", st.Err)
	}
}

// Synced moves with every poll while the follower keeps up, and stops
// when the stream cannot be reached: it is what staleness counts from.
func TestSyncedStopsWhenTheStreamIsAway(t *testing.T) {
	t.Parallel()
	s, js := natstest.JetStream(t)
	e := &env{js: js, events: natstest.EventStore(t, js)}
	e.appendKey(t, "k-one")
	r := &recorder{}
	f := newFollower(e, r)
	run(t, f)
	waitHeld(t, r, []uint64{1})
	servicetest.WaitFor(t, "synced", func(context.Context) error {
		if f.Synced().IsZero() {
			return errors.New("never synced")
		}
		return nil
	})
	first := f.Synced()
	servicetest.WaitFor(t, "synced again at a later poll", func(context.Context) error {
		if !f.Synced().After(first) {
			return errors.New("not moved")
		}
		return nil
	})
	s.Shutdown()
	down := time.Now()
	servicetest.WaitFor(t, "stale", func(context.Context) error {
		if !f.Status().Stale {
			return errors.New("not stale yet")
		}
		return nil
	})
	if got := f.Synced(); got.After(down) {
		t.Fatalf("Synced = %s, after the server went down at %s", got, down)
	}
}

// JetStream's advisories wake the follower: with a poll interval far
// beyond the test's deadline, a replaced stream is still noticed.
func TestAdvisoryWakesTheFollower(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.appendKey(t, "k-one")
	e.appendKey(t, "k-two")
	r := &recorder{}
	f := follow.New(follow.Config{Name: "test", Source: e.events, Consumer: r, PollInterval: time.Hour})
	run(t, f)
	waitHeld(t, r, []uint64{1, 2})
	if err := e.js.DeleteStream(t.Context(), "INFERGATE_EVENTS"); err != nil {
		t.Fatal(err)
	}
	e.open(t)
	e.appendKey(t, "k-new")
	waitHeld(t, r, []uint64{1})
	if _, resets := r.held(); resets < 2 {
		t.Fatalf("resets = %d; want the first placement and the new stream", resets)
	}
}

// hubView is a region's mirror as a follower sees it: the stream's state
// with how current it is with the hub (CurrentAt, Behind) set by the test.
type hubView struct {
	*eventstore.Store
	mu        sync.Mutex
	currentAt time.Time
	behind    uint64
}

func (h *hubView) set(at time.Time, behind uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.currentAt, h.behind = at, behind
}

func (h *hubView) State(ctx context.Context) (eventstore.StreamState, error) {
	st, err := h.Store.State(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	st.CurrentAt, st.Behind = h.currentAt, h.behind
	return st, err
}

// TestStalenessIsCountedFromTheHub: a follower of a region's mirror is
// synced as of when the mirror last heard the hub, never later, however
// complete the mirror is; it is not ready while the mirror lacks records
// the hub holds, and becomes ready and synced once it has them.
func TestStalenessIsCountedFromTheHub(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.appendKey(t, "k-one")
	heard := time.Now().Add(-time.Hour)
	src := &hubView{Store: e.events}
	src.set(heard, 1) // the hub holds one more record than the mirror
	r := &recorder{}
	f := follow.New(follow.Config{Name: "test", Source: src, Consumer: r, PollInterval: 20 * time.Millisecond})
	run(t, f)
	waitHeld(t, r, []uint64{1})
	applied := time.Now()
	servicetest.WaitFor(t, "a poll after the record was applied", func(context.Context) error {
		if since := f.Status().SinceLastContact; since < 0 || time.Now().Add(-since).Before(applied.Add(20*time.Millisecond)) {
			return errors.New("no poll since")
		}
		return nil
	})
	if f.Ready() || !f.Synced().IsZero() {
		t.Fatalf("mirror one record behind the hub: ready %v, synced %s; want not ready, never synced", f.Ready(), f.Synced())
	}
	src.set(heard, 0)
	e.appendKey(t, "k-two") // the record the mirror lacked
	servicetest.WaitFor(t, "ready", func(context.Context) error {
		if !f.Ready() {
			return errors.New("not ready")
		}
		return nil
	})
	servicetest.WaitFor(t, "synced as of the hub's last contact", func(context.Context) error {
		if !f.Synced().Equal(heard) {
			return fmt.Errorf("synced %s, want %s", f.Synced(), heard)
		}
		return nil
	})
}
