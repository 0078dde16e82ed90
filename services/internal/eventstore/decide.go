package eventstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
)

// ErrTooManyConflicts means Decide lost the race for the aggregate on every
// attempt.
var ErrTooManyConflicts = errors.New("eventstore: too many conflicts")

// DecideResult says what Decide did.
type DecideResult struct {
	// Sequence is the stream sequence the caller's change is at: the
	// appended message, the earlier message of a duplicate, or the
	// aggregate's version when nothing needed to change.
	Sequence uint64
	// Duplicate is true when the message id had been appended before.
	Duplicate bool
	// Unchanged is true when the decision was to append nothing.
	Unchanged bool
}

// DecideFunc returns the events to append given the aggregate's records.
// It may be called more than once; it must not have side effects other
// than reads.
type DecideFunc func(records []Record) ([]*eventv1.Event, error)

// Decide runs one command against an aggregate: it loads the records, asks
// decide for the events, and appends them at the loaded version. When
// another command wins the race it reloads and decides again, up to
// attempts times (0 means 5), then returns ErrTooManyConflicts (which wraps
// ErrConflict). A command whose msgID is already among the aggregate's
// records is not decided again: the result reports the duplicate.
func (s *Store) Decide(ctx context.Context, agg Aggregate, msgID string, attempts int, decide DecideFunc) (DecideResult, error) {
	if attempts <= 0 {
		attempts = 5
	}
	for attempt := range attempts {
		records, version, err := s.Load(ctx, agg)
		if err != nil {
			return DecideResult{}, err
		}
		if msgID != "" {
			for _, r := range records {
				if r.MsgID == msgID {
					return DecideResult{Sequence: r.Sequence, Duplicate: true}, nil
				}
			}
		}
		events, err := decide(records)
		if err != nil {
			return DecideResult{}, err
		}
		if len(events) == 0 {
			return DecideResult{Sequence: version, Unchanged: true}, nil
		}
		var opts []AppendOption
		if msgID != "" {
			opts = append(opts, WithMsgID(msgID))
		}
		res, err := s.Append(ctx, agg, version, events, opts...)
		if err == nil {
			return DecideResult{Sequence: res.Sequence, Duplicate: res.Duplicate}, nil
		}
		if !errors.Is(err, ErrConflict) {
			return DecideResult{}, err
		}
		// Back off a little, with jitter, so racers spread out.
		wait := time.Duration(1+attempt) * time.Duration(1+rand.IntN(3)) * time.Millisecond
		select {
		case <-ctx.Done():
			return DecideResult{}, ctx.Err()
		case <-time.After(wait):
		}
	}
	return DecideResult{}, fmt.Errorf("%w: %w: %s after %d attempts", ErrTooManyConflicts, ErrConflict, agg, attempts)
}
