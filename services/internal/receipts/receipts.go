// Package receipts carries the gateways' propagation receipts (SPEC §5).
// Every gateway reports the last stream sequence it has applied — at once
// when it changes and as a heartbeat — on a NATS subject; the control plane
// tracks the reports and, after an append, waits until every live gateway
// of the change's regions has applied it.
//
// Reports are core NATS messages on infergate.gateways.<region>.<id>, JSON:
// {"id","region","stream","stream_created","sequence","ready","interval_ms"}:
// the sequence counts in the life of the stream named by stream and
// stream_created, so a receipt from a gateway still on a stream that was
// deleted and created again never confirms a write on the new one. A gateway whose reports
// stop for more than a few heartbeat intervals is no longer live. A gateway
// that is not ready (still replaying the stream at start-up) is not
// counted: it serves no traffic yet.
package receipts

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/infergate/infergate/services/internal/eventstore"
)

// SubjectPrefix starts every report subject.
const SubjectPrefix = "infergate.gateways"

// DefaultHeartbeat is how often a gateway reports when nothing changes.
const DefaultHeartbeat = time.Second

// missedHeartbeats is how many heartbeat intervals may pass without a
// report before a gateway stops counting as live.
const missedHeartbeats = 3

// Report is one gateway's receipt.
type Report struct {
	ID     string `json:"id"`
	Region string `json:"region"`
	// Stream and StreamCreated name the life of the stream Sequence
	// counts in (eventstore.Identity); empty while the gateway has none.
	Stream        string    `json:"stream"`
	StreamCreated time.Time `json:"stream_created"`
	Sequence      uint64    `json:"sequence"`
	Ready         bool      `json:"ready"`
	// IntervalMS is the gateway's heartbeat interval, so the tracker knows
	// when it has gone quiet.
	IntervalMS int64 `json:"interval_ms"`
	// MaxStalenessMS is the gateway's staleness bound: once it has not been
	// in step with the stream for that long it refuses requests to
	// auth-enabled deployments. 0: it never does (serves forever).
	MaxStalenessMS int64 `json:"max_staleness_ms"`
	// Stale is true while it refuses as stale.
	Stale bool `json:"stale"`
	// Leaving is the last report of a gateway shutting down: it serves no
	// more requests, so it no longer counts.
	Leaving bool `json:"leaving,omitempty"`
}

func (r Report) identity() eventstore.Identity {
	return eventstore.Identity{Stream: r.Stream, Created: r.StreamCreated}
}

func (r Report) validate() error {
	if r.ID == "" || r.Region == "" || r.IntervalMS <= 0 {
		return errors.New("receipts: report needs id, region and interval")
	}
	return nil
}

func (r Report) marshal() []byte {
	b, _ := json.Marshal(r)
	return b
}
