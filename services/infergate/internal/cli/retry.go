package cli

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	"github.com/infergate/infergate/services/internal/command"
)

// Retries of a call that failed as unavailable.
const (
	retryAttempts = 3
	retryBackoff  = 200 * time.Millisecond
)

// newRequestIDInterceptor gives every call a request id in the
// Idempotency-Key header and retries a call that failed as unavailable —
// a transport error, or a control plane that cannot reach NATS — with the
// same id. The control plane makes that id the append's Nats-Msg-Id, so a
// write whose answer was lost on the way is recognised and answered as the
// first time instead of applied twice (a CreateKey answer then has
// replayed set and no secret). Reads ignore the header.
func newRequestIDInterceptor(attempts int, backoff time.Duration) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if req.Header().Get(command.IdempotencyHeader) == "" {
				req.Header().Set(command.IdempotencyHeader, rand.Text())
			}
			wait := backoff
			for attempt := 1; ; attempt++ {
				res, err := next(ctx, req)
				if err == nil || connect.CodeOf(err) != connect.CodeUnavailable || attempt >= attempts {
					return res, err
				}
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil, err
				case <-t.C:
				}
				wait *= 2
			}
		}
	}
}

// noteReadModel tells the user, when a change's answer says so, that
// lists may not show it for a moment.
func noteReadModel(w io.Writer, behind bool) {
	if behind {
		fmt.Fprintln(w, "note: the change is saved, but the read model had not applied it yet; list and get may not show it for a moment")
	}
}
