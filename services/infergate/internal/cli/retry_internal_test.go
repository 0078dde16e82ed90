package cli

import (
	"context"
	"errors"
	"testing"

	"connectrpc.com/connect"
)

// A call lost in transit is retried with its request id; an answer the
// server gave is not, nor a call the user canceled.
func TestRetryable(t *testing.T) {
	t.Parallel()
	live := context.Background()
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	lost := errors.New("connection reset by peer")
	for _, tt := range []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"unavailable", live, connect.NewError(connect.CodeUnavailable, lost), true},
		{"reset mid-call (canceled)", live, connect.NewError(connect.CodeCanceled, lost), true},
		{"reset mid-call (unknown)", live, connect.NewError(connect.CodeUnknown, lost), true},
		{"the user canceled", gone, connect.NewError(connect.CodeCanceled, context.Canceled), false},
		{"the server said canceled", live, connect.NewWireError(connect.CodeCanceled, lost), false},
		{"the server said unknown", live, connect.NewWireError(connect.CodeUnknown, lost), false},
		{"already exists", live, connect.NewWireError(connect.CodeAlreadyExists, lost), false},
		{"invalid argument", live, connect.NewError(connect.CodeInvalidArgument, lost), false},
	} {
		if got := retryable(tt.ctx, tt.err); got != tt.want {
			t.Errorf("%s: retryable = %v; want %v", tt.name, got, tt.want)
		}
	}
}
