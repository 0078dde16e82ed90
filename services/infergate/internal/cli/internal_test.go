package cli

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	propagationv1 "github.com/infergate/infergate/gen/infergate/propagation/v1"
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

// The receipt names every gateway that lags, and says which refuse.
func TestDescribePropagationNamesLaggards(t *testing.T) {
	t.Parallel()
	heard := timestamppb.New(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	p := &propagationv1.Propagation{Sequence: 42, Gateways: 3, GatewaysApplied: 1, Lagging: []*propagationv1.LaggingGateway{
		{Id: "gw-eu-2", Region: "eu", AppliedSequence: 40, LastHeard: heard},
		{Id: "gw-us-1", Region: "us", AppliedSequence: 12, LastHeard: heard, RefusingAsStale: true},
	}}
	got := describePropagation(p)
	for _, want := range []string{"NOT confirmed", "1/3", "gw-eu-2 (eu): lagging, applied 40, last heard 2026-11-30T12:00:00Z",
		"gw-us-1 (us): refusing as stale, applied 12"} {
		if !strings.Contains(got, want) {
			t.Errorf("describePropagation = %q; want it to contain %q", got, want)
		}
	}
}
