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
	// Records are the aggregate's records the decision was made on; for
	// a duplicate, its records up to and including the earlier message.
	// With Events they are the aggregate right after the caller's change,
	// so the caller can answer from it without waiting for a read model.
	Records []Record
	// Events are the events appended; none for a duplicate or an
	// unchanged aggregate.
	Events []*eventv1.Event
}

// State is the aggregate's events right after the caller's change, oldest
// first: fold it to answer the command.
func (r DecideResult) State() []*eventv1.Event {
	return append(Events(r.Records), r.Events...)
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
//
// While the NATS connection is down it returns ErrUnavailable at once,
// before loading anything.
func (s *Store) Decide(ctx context.Context, agg Aggregate, msgID string, attempts int, decide DecideFunc) (DecideResult, error) {
	if attempts <= 0 {
		attempts = 5
	}
	if err := s.checkConnected(); err != nil {
		return DecideResult{}, err
	}
	for attempt := range attempts {
		records, version, err := s.Load(ctx, agg)
		if err = s.unavailable(err); err != nil {
			return DecideResult{}, err
		}
		if res, ok := duplicateIn(records, msgID); ok {
			return res, nil
		}
		events, err := decide(records)
		if err != nil {
			return DecideResult{}, err
		}
		if len(events) == 0 {
			return DecideResult{Sequence: version, Unchanged: true, Records: records}, nil
		}
		var opts []AppendOption
		if msgID != "" {
			opts = append(opts, WithMsgID(msgID))
		}
		res, err := s.Append(ctx, agg, version, events, opts...)
		if err == nil && res.Duplicate {
			// Stored by an earlier attempt that raced this one: answer
			// from the aggregate as that attempt left it.
			if records, _, err = s.Load(ctx, agg); err == nil {
				if dup, ok := duplicateIn(records, msgID); ok {
					return dup, nil
				}
			}
			return DecideResult{Sequence: res.Sequence, Duplicate: true}, nil
		}
		if err == nil {
			return DecideResult{Sequence: res.Sequence, Records: records, Events: events}, nil
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

// duplicateIn finds the record a message id was appended as, and returns
// the result of the command that appended it.
func duplicateIn(records []Record, msgID string) (DecideResult, bool) {
	if msgID == "" {
		return DecideResult{}, false
	}
	for i, r := range records {
		if r.MsgID == msgID {
			return DecideResult{Sequence: r.Sequence, Duplicate: true, Records: records[: i+1 : i+1]}, true
		}
	}
	return DecideResult{}, false
}
