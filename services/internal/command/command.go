// Package command is what every write RPC of the control plane does
// before deciding: who is acting (the admin token's name), when, with which
// ids, and the idempotency id that makes a retried request append once.
package command

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/infergate/infergate/services/internal/adminauth"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/eventstore"
)

// IdempotencyHeader is the request header a client sets to make a write
// safe to retry: two requests with the same value, from the same token, to
// the same RPC and aggregate, append at most once.
const IdempotencyHeader = "Idempotency-Key"

// SystemActor is the actor of events the services cause on their own.
const SystemActor = "system"

// Meta builds the domain's command metadata for a call.
func Meta(ctx context.Context, project string, now time.Time) aggregate.Meta {
	actor := SystemActor
	if p, ok := adminauth.FromContext(ctx); ok {
		actor = p.Name
	}
	return aggregate.Meta{Actor: actor, Project: project, Now: now.UTC(), NewID: uuid.NewString}
}

// MsgID is the Nats-Msg-Id of a call's append: derived from the
// Idempotency-Key header when the client sent one, else empty (each
// attempt then gets its own id).
func MsgID(header http.Header, meta aggregate.Meta, procedure string, agg eventstore.Aggregate) string {
	key := header.Get(IdempotencyHeader)
	if key == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(meta.Actor + "\x00" + procedure + "\x00" + agg.String() + "\x00" + key))
	return "idem-" + hex.EncodeToString(sum[:16])
}

// PropagationTimeout is a call's own bound on the wait for the gateways
// (at most a minute), or def when the call sets none.
func PropagationTimeout(d *durationpb.Duration, def time.Duration) (time.Duration, error) {
	if d == nil {
		return def, nil
	}
	if err := d.CheckValid(); err != nil || d.AsDuration() < 0 || d.AsDuration() > time.Minute {
		return 0, &aggregate.FieldError{Field: "propagation_timeout", Problem: "must be between 0 and 60s"}
	}
	return d.AsDuration(), nil
}

// DefaultReadYourWritesTimeout is how long a write waits, by default, for
// its read model to apply it before answering. It is short: the write is
// durable once appended, and the answer is built from the aggregate; the
// wait only lets a Get or List right after see the write.
const DefaultReadYourWritesTimeout = time.Second

// ReadProgress is how far a read model has applied the stream (a
// readmodel.Projector).
type ReadProgress interface {
	// WaitFor blocks until seq has been applied or ctx ends.
	WaitFor(ctx context.Context, seq uint64) error
}

// WaitRead waits, at most timeout, until the read model has applied seq,
// and reports whether it had. A read model that is behind is not an error
// after a write — the write is durable — so the caller says so in its
// answer (read_model_behind) instead of failing.
func WaitRead(ctx context.Context, p ReadProgress, seq uint64, timeout time.Duration) (caughtUp bool) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return p.WaitFor(ctx, seq) == nil
}
