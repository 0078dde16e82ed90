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
// Idempotency-Key header and retries a call that failed in transit — as
// unavailable (no connection, or a control plane that cannot reach NATS),
// or as canceled or unknown while the caller's own context is still live
// (what connect-go reports for a connection reset mid-call, e.g. a
// service killed while answering) — with the same id. The control plane makes that id the append's Nats-Msg-Id, so a
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
				if err == nil || !retryable(ctx, err) || attempt >= attempts {
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

// retryable reports whether err may be a call lost in transit, which the
// same request id makes safe to send again.
func retryable(ctx context.Context, err error) bool {
	switch connect.CodeOf(err) {
	case connect.CodeUnavailable:
		return true
	case connect.CodeCanceled, connect.CodeUnknown:
		// Only when the server's answer did not say so itself: a wire
		// error carries the server's code, a transport failure does not.
		return ctx.Err() == nil && !connect.IsWireError(err)
	}
	return false
}

// noteReadModel tells the user, when a change's answer says so, that
// lists may not show it for a moment.
func noteReadModel(w io.Writer, behind bool) {
	if behind {
		fmt.Fprintln(w, "note: the change is saved, but the read model had not applied it yet; list and get may not show it for a moment")
	}
}
