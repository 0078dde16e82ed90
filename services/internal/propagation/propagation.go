// Package propagation reports how far a change has reached the edge
// gateways (SPEC §5). A Waiter blocks, bounded, until every live gateway of
// the given regions has applied a stream sequence.
package propagation

import (
	"context"
	"time"

	propagationv1 "github.com/infergate/infergate/gen/infergate/propagation/v1"
)

// DefaultTimeout bounds the wait when a call does not set its own.
const DefaultTimeout = 2 * time.Second

// Waiter waits for gateways to apply a sequence. regions empty means every
// region.
type Waiter interface {
	Wait(ctx context.Context, sequence uint64, regions []string, timeout time.Duration) *propagationv1.Propagation
}

// Unconfirmed is the Waiter used until gateways report what they applied:
// it reports the sequence and never claims confirmation.
type Unconfirmed struct{}

// Wait returns at once with confirmed false.
func (Unconfirmed) Wait(_ context.Context, sequence uint64, _ []string, _ time.Duration) *propagationv1.Propagation {
	return &propagationv1.Propagation{Sequence: sequence}
}
