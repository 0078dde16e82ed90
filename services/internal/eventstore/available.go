package eventstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrUnavailable means the stream cannot be written now: the NATS
// connection is down, the stream is missing, or JetStream did not
// acknowledge in time. A command that got it was not applied — except
// after an unacknowledged publish (ErrUnacknowledged), which may have been
// stored: retry it with the same message id and the stream recognises it.
var ErrUnavailable = errors.New("eventstore: unavailable")

// ErrUnacknowledged means a publish got no acknowledgement within its
// bound. It wraps ErrUnavailable; unlike the other causes of that error,
// the append may or may not have been stored.
var ErrUnacknowledged = fmt.Errorf("%w: no acknowledgement in time; the append may or may not be stored, retry with the same message id", ErrUnavailable)

// DefaultAppendTimeout bounds how long Append waits for JetStream's
// acknowledgement when the caller's context allows longer. A healthy
// stream acknowledges in milliseconds (docs/benchmarks.md); the bound
// keeps a write from hanging on a connection that is failing but not yet
// known to be down.
const DefaultAppendTimeout = 2 * time.Second

// availability tracks whether the stream could be found, so that losing
// it and finding it again are logged once each, not once per call.
type availability struct {
	log     atomic.Pointer[slog.Logger]
	missing atomic.Bool
}

// SetLogger makes the store log, once per transition, that its stream has
// gone missing or is back. Without it the store logs nothing.
func (s *Store) SetLogger(log *slog.Logger) { s.avail.log.Store(log) }

// checkConnected fails fast, with ErrUnavailable, when the NATS
// connection is not up: a request on a reconnecting connection would
// otherwise be buffered and wait for its context to end.
func (s *Store) checkConnected() error {
	nc := s.js.Conn()
	if nc == nil || nc.IsConnected() {
		return nil
	}
	return fmt.Errorf("%w: NATS connection is %s", ErrUnavailable, nc.Status())
}

// unavailable turns the errors of a stream that cannot be reached into
// ErrUnavailable, records a missing stream, and leaves other errors as
// they are.
func (s *Store) unavailable(err error) error {
	switch {
	case err == nil:
		s.streamFound()
		return nil
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, nats.ErrNoResponders):
		s.streamLost(err)
		return fmt.Errorf("%w: stream %s not found: %w", ErrUnavailable, s.cfg.Stream, err)
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrReconnectBufExceeded):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

func (s *Store) streamLost(err error) {
	if s.avail.missing.CompareAndSwap(false, true) {
		if log := s.avail.log.Load(); log != nil {
			log.Error("event stream not found; writes fail as unavailable until it is back", "stream", s.cfg.Stream, "err", err)
		}
	}
}

func (s *Store) streamFound() {
	if s.avail.missing.CompareAndSwap(true, false) {
		if log := s.avail.log.Load(); log != nil {
			log.Info("event stream found again; writes resume", "stream", s.cfg.Stream)
		}
	}
}

// publishContext bounds ctx by d unless ctx ends sooner; when the bound
// ends it, its cause is ErrUnacknowledged.
func publishContext(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, d, ErrUnacknowledged)
}
