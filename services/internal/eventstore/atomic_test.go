package eventstore_test

import (
	"errors"
	"slices"
	"testing"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
)

// TestAppendAtomicAllOrNothing: an atomic append stores one message per
// aggregate, each at its own version, or — when any aggregate moved since
// it was loaded — none at all; a retry of a stored one stores nothing.
func TestAppendAtomicAllOrNothing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := openStore(t)
	a, b := keyAgg("atomic-a"), keyAgg("atomic-b")
	moved, err := s.Append(ctx, b, 0, []*eventv1.Event{updated("b0")})
	if err != nil {
		t.Fatal(err)
	}

	// b is not at version 0 any more: nothing of the batch is stored.
	_, err = s.AppendAtomic(ctx, "batch-1", []eventstore.Change{
		{Aggregate: a, ExpectedVersion: 0, Events: []*eventv1.Event{updated("a1")}},
		{Aggregate: b, ExpectedVersion: 0, Events: []*eventv1.Event{updated("b1")}},
	})
	if !errors.Is(err, eventstore.ErrConflict) {
		t.Fatalf("AppendAtomic with a stale version = %v, want ErrConflict", err)
	}
	if recs, _, _ := s.Load(ctx, a); len(recs) != 0 {
		t.Fatalf("a failed atomic append stored %v on a", descriptions(recs))
	}

	res, err := s.AppendAtomic(ctx, "batch-2", []eventstore.Change{
		{Aggregate: a, ExpectedVersion: 0, Events: []*eventv1.Event{updated("a1")}},
		{Aggregate: b, ExpectedVersion: moved.Sequence, Events: []*eventv1.Event{updated("b1")}},
	})
	if err != nil || res.Duplicate {
		t.Fatalf("AppendAtomic = %+v, %v", res, err)
	}
	ra, va, _ := s.Load(ctx, a)
	rb, vb, _ := s.Load(ctx, b)
	if !slices.Equal(descriptions(ra), []string{"a1"}) || !slices.Equal(descriptions(rb), []string{"b0", "b1"}) || vb != res.Sequence || va != res.Sequence-1 {
		t.Fatalf("after the batch: a %v (v%d), b %v (v%d), result %d", descriptions(ra), va, descriptions(rb), vb, res.Sequence)
	}

	// The same batch again (a retry after a lost answer): nothing new.
	again, err := s.AppendAtomic(ctx, "batch-2", []eventstore.Change{
		{Aggregate: a, ExpectedVersion: 0, Events: []*eventv1.Event{updated("a1")}},
		{Aggregate: b, ExpectedVersion: moved.Sequence, Events: []*eventv1.Event{updated("b1")}},
	})
	if err != nil || !again.Duplicate || again.Sequence != va {
		t.Fatalf("retried AppendAtomic = %+v, %v; want a duplicate at %d", again, err, va)
	}
	if ra, _, _ := s.Load(ctx, a); len(ra) != 1 {
		t.Fatalf("the retry stored again: %v", descriptions(ra))
	}
	if _, err := s.AppendAtomic(ctx, "batch-3", []eventstore.Change{
		{Aggregate: a, ExpectedVersion: va, Events: []*eventv1.Event{updated("a2")}},
		{Aggregate: a, ExpectedVersion: va, Events: []*eventv1.Event{updated("a3")}},
	}); !errors.Is(err, eventstore.ErrInvalid) {
		t.Errorf("one aggregate twice = %v, want ErrInvalid", err)
	}
}
