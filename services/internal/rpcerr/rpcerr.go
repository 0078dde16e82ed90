// Package rpcerr maps the domain's sentinel errors to Connect codes, in one
// place, so every service answers the same condition with the same code.
package rpcerr

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"

	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/readmodel"
)

// errInternal is what a caller sees of an unexpected failure; the detail
// goes to the log.
var errInternal = errors.New("internal error; the server log has the details")

// From turns err into a *connect.Error with the code its sentinel calls
// for. Unexpected errors are logged and hidden behind a generic message.
func From(ctx context.Context, log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.Is(err, aggregate.ErrInvalid), errors.Is(err, eventstore.ErrInvalid):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, aggregate.ErrNotFound), errors.Is(err, readmodel.ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, aggregate.ErrAlreadyExists):
		return connect.NewError(connect.CodeAlreadyExists, err)
	case errors.Is(err, aggregate.ErrFailedPrecondition):
		return connect.NewError(connect.CodeFailedPrecondition, err)
	case errors.Is(err, eventstore.ErrConflict):
		return connect.NewError(connect.CodeAborted, err)
	case errors.Is(err, eventstore.ErrUnavailable):
		// Safe to retry: nothing was applied, or — when the publish was
		// not acknowledged — a retry with the same Idempotency-Key is
		// recognised.
		return connect.NewError(connect.CodeUnavailable, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	}
	log.ErrorContext(ctx, "request failed", "err", err)
	return connect.NewError(connect.CodeInternal, errInternal)
}
