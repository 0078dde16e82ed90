package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
)

// ErrAtomicDisabled means the stream was made before atomic batches were
// part of its declaration: `infergate admin stream update` turns them on.
var ErrAtomicDisabled = errors.New(`eventstore: the stream does not allow atomic batches; run "infergate admin stream update"`)

// MaxAtomicChanges bounds the aggregates of one atomic append (JetStream
// allows 1000 messages in a batch).
const MaxAtomicChanges = 100

// Change is one aggregate's part of an atomic append: its events, stored
// as one message on its subject if the aggregate is still at
// ExpectedVersion.
type Change struct {
	Aggregate       Aggregate
	ExpectedVersion uint64
	Events          []*eventv1.Event
}

// JetStream's atomic batch headers (ADR-50).
const (
	batchIDHeader     = "Nats-Batch-Id"
	batchSeqHeader    = "Nats-Batch-Sequence"
	batchCommitHeader = "Nats-Batch-Commit"
)

// JetStream error codes of an atomic batch.
const (
	errCodeAtomicDisabled  = 10174
	errCodeAtomicDuplicate = 10201
)

// AppendAtomic stores several aggregates' changes, each as one message on
// its own subject with its own optimistic check, as one JetStream atomic
// batch: either every message is stored, in order, or none is. It is for
// a command whose facts belong to more than one aggregate (a key created
// together with its links, which belong to the deployments), so that no
// reader ever sees one without the others' chance to fail.
//
// Any aggregate that moved since it was loaded fails the whole batch with
// ErrConflict. msgID is the first message's idempotency id (the others get
// msgID/1, msgID/2, …): a retry of a stored batch stores nothing and
// reports the first message's sequence with Duplicate set. The result's
// Sequence is otherwise the last message's, the one a reader must have
// applied to have applied the whole change.
func (s *Store) AppendAtomic(ctx context.Context, msgID string, changes []Change, opts ...AppendOption) (AppendResult, error) {
	if s.mirror != nil {
		return AppendResult{}, fmt.Errorf("append atomic: %w", ErrReadOnly)
	}
	if len(changes) == 0 || len(changes) > MaxAtomicChanges {
		return AppendResult{}, fmt.Errorf("%w: %d changes in one atomic append (1..%d)", ErrInvalid, len(changes), MaxAtomicChanges)
	}
	if msgID == "" {
		return AppendResult{}, fmt.Errorf("%w: no message id", ErrInvalid)
	}
	o := appendOptions{timeout: DefaultAppendTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	msgs := make([]*nats.Msg, len(changes))
	batch := uuid.NewString()
	seen := map[string]bool{}
	for i, c := range changes {
		if err := c.Aggregate.Validate(); err != nil {
			return AppendResult{}, err
		}
		subject := s.Subject(c.Aggregate)
		if seen[subject] {
			return AppendResult{}, fmt.Errorf("%w: %s twice in one atomic append", ErrInvalid, c.Aggregate)
		}
		seen[subject] = true
		if len(c.Events) == 0 {
			return AppendResult{}, fmt.Errorf("%w: no events for %s", ErrInvalid, c.Aggregate)
		}
		for j, e := range c.Events {
			if e == nil || e.GetPayload() == nil {
				return AppendResult{}, fmt.Errorf("%w: %s: event %d has no payload", ErrInvalid, c.Aggregate, j)
			}
		}
		data, err := proto.Marshal(&eventv1.Batch{Events: c.Events})
		if err != nil {
			return AppendResult{}, fmt.Errorf("eventstore: marshal: %w", err)
		}
		m := nats.NewMsg(subject)
		m.Data = data
		id := msgID
		if i > 0 {
			id += "/" + strconv.Itoa(i)
		}
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Header.Set(jetstream.ExpectedStreamHeader, s.cfg.Stream)
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(c.ExpectedVersion, 10))
		m.Header.Set(batchIDHeader, batch)
		m.Header.Set(batchSeqHeader, strconv.Itoa(i+1))
		msgs[i] = m
	}
	msgs[len(msgs)-1].Header.Set(batchCommitHeader, "1")
	if err := s.checkConnected(); err != nil {
		return AppendResult{}, err
	}
	nc := s.js.Conn()
	for _, m := range msgs[:len(msgs)-1] {
		if err := nc.PublishMsg(m); err != nil {
			return AppendResult{}, s.unavailable(fmt.Errorf("eventstore: append atomic: %w", err))
		}
	}
	pctx, cancel := publishContext(ctx, o.timeout)
	reply, err := nc.RequestMsgWithContext(pctx, msgs[len(msgs)-1])
	if cause := context.Cause(pctx); err != nil && errors.Is(cause, ErrUnacknowledged) {
		cancel()
		return AppendResult{}, fmt.Errorf("append atomic to %s: %w", changes[0].Aggregate, cause)
	}
	cancel()
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return AppendResult{}, s.unavailable(jetstream.ErrNoStreamResponse)
		}
		return AppendResult{}, s.unavailable(fmt.Errorf("eventstore: append atomic: %w", err))
	}
	s.streamFound()
	var ack struct {
		Sequence  uint64 `json:"seq"`
		Duplicate bool   `json:"duplicate"`
		Error     *struct {
			Code        int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(reply.Data, &ack); err != nil {
		return AppendResult{}, fmt.Errorf("eventstore: append atomic: acknowledgement %q: %w", reply.Data, err)
	}
	if ack.Error == nil {
		return AppendResult{Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
	}
	first := changes[0]
	switch jetstream.ErrorCode(ack.Error.Code) {
	case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant, errCodeAtomicDuplicate:
		// A retry of a batch that was stored fails one of these ways:
		// look for its first message among what came after.
		if seq, found, ferr := s.findMsgID(ctx, first.Aggregate, first.ExpectedVersion, msgID); ferr == nil && found {
			return AppendResult{Sequence: seq, Duplicate: true}, nil
		}
		if ack.Error.Code == errCodeAtomicDuplicate {
			return AppendResult{}, fmt.Errorf("%w: %s: message id stored before, by another change", ErrConflict, first.Aggregate)
		}
		return AppendResult{}, fmt.Errorf("%w: atomic append to %s and %d more", ErrConflict, first.Aggregate, len(changes)-1)
	case errCodeAtomicDisabled:
		return AppendResult{}, fmt.Errorf("%w (stream %s)", ErrAtomicDisabled, s.cfg.Stream)
	}
	return AppendResult{}, fmt.Errorf("eventstore: append atomic: %s (JetStream error %d)", ack.Error.Description, ack.Error.Code)
}
