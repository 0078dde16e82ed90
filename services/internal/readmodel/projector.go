package readmodel

import (
	"log/slog"

	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
)

// Projector follows the event stream into a Store, from the store's
// checkpoint on, and tells callers when a sequence has been applied (so an
// RPC that just appended can answer from the read model). It runs on the
// one follower primitive (package follow): a store built from a stream
// that was deleted and created again, or that went back, is emptied and
// rebuilt in one transaction; failures are retried with a jittered
// backoff, resuming from the store's checkpoint, so nothing is skipped or
// applied twice.
type Projector struct {
	*follow.Follower
}

// NewProjector returns a Projector that applies events' records to store.
// A nil log discards.
func NewProjector(events *eventstore.Store, store Store, log *slog.Logger) *Projector {
	return &Projector{follow.New(follow.Config{
		Name:     "read model",
		Source:   events,
		Consumer: store,
		Log:      log,
	})}
}
