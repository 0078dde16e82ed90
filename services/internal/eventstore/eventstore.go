// Package eventstore is the event store every infergate service appends to
// and reads from: one JetStream stream, one subject per aggregate, optimistic
// concurrency on the aggregate's subject and idempotent appends.
//
// Subjects are <prefix>.<project>.<type>.<name>, e.g.
// infergate.events.team-a.key.ci-runner. One stream message carries one
// eventv1.Batch: the events of one command, applied together.
package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
)

var (
	// ErrConflict means the aggregate changed since the caller loaded it:
	// another command won the race. Reload and decide again.
	ErrConflict = errors.New("eventstore: conflict: aggregate changed since it was loaded")
	// ErrInvalid means the caller's arguments cannot be appended or read.
	ErrInvalid = errors.New("eventstore: invalid argument")
	// ErrCorrupt means a stream message is not a valid event batch.
	ErrCorrupt = errors.New("eventstore: corrupt message")
)

// Aggregate types, the third subject token.
const (
	TypeKey        = "key"
	TypeDeployment = "deployment"
)

// Aggregate addresses one aggregate: one subject of the stream.
type Aggregate struct {
	Project string
	Type    string
	Name    string
}

func (a Aggregate) String() string { return a.Project + "/" + a.Type + "/" + a.Name }

// Validate reports whether every part is a usable subject token.
func (a Aggregate) Validate() error {
	var errs []error
	for _, p := range []struct{ field, v string }{
		{"project", a.Project}, {"type", a.Type}, {"name", a.Name},
	} {
		if err := validToken(p.v); err != nil {
			errs = append(errs, fmt.Errorf("%w: aggregate %s: %w", ErrInvalid, p.field, err))
		}
	}
	return errors.Join(errs...)
}

func validToken(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if i := strings.IndexAny(s, ".*> \t\r\n"); i >= 0 {
		return fmt.Errorf("%q contains %q", s, s[i])
	}
	return nil
}

// Record is one stream message: the events of one command.
type Record struct {
	// Sequence is the message's stream sequence; every event of the record
	// shares it.
	Sequence uint64
	// Time is when the stream stored the message.
	Time      time.Time
	Subject   string
	MsgID     string
	Aggregate Aggregate
	Events    []*eventv1.Event
	// Data is the message as stored, on a stream whose messages are not
	// event batches (the usage stream: Config.Raw); nil on the event
	// stream.
	Data []byte
}

// Store appends events to and reads them from the stream.
type Store struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	cfg    Config
	cache  *aggCache
	avail  availability
	// mirror is set on a store opened on a region's mirror (OpenMirror).
	mirror *mirror
}

// Subject is the subject an aggregate's events are stored on.
func (s *Store) Subject(a Aggregate) string {
	return s.cfg.SubjectPrefix + "." + a.Project + "." + a.Type + "." + a.Name
}

// ProjectSubject matches every event of one project.
func (s *Store) ProjectSubject(project string) string {
	return s.cfg.SubjectPrefix + "." + project + ".>"
}

func (s *Store) aggregateOf(subject string) Aggregate {
	rest := strings.TrimPrefix(subject, s.cfg.SubjectPrefix+".")
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) != 3 {
		return Aggregate{}
	}
	return Aggregate{Project: parts[0], Type: parts[1], Name: parts[2]}
}

type appendOptions struct {
	msgID   string
	timeout time.Duration
}

// AppendOption changes how Append publishes.
type AppendOption func(*appendOptions)

// WithMsgID sets the idempotency id (Nats-Msg-Id). Within the stream's
// duplicate window a second append with the same id stores nothing and
// reports the first one's sequence. The default is the first event's id.
func WithMsgID(id string) AppendOption {
	return func(o *appendOptions) { o.msgID = id }
}

// WithTimeout bounds the wait for JetStream's acknowledgement instead of
// DefaultAppendTimeout.
func WithTimeout(d time.Duration) AppendOption {
	return func(o *appendOptions) { o.timeout = d }
}

// AppendResult says where the events went.
type AppendResult struct {
	// Sequence is the stream sequence of the stored message; it is the
	// aggregate's new version.
	Sequence uint64
	// Duplicate is true when the message id had been appended before and
	// nothing new was stored; Sequence is then the earlier message's.
	Duplicate bool
}

// Append stores events on the aggregate's subject as one message, if and
// only if the aggregate's version is still expectedVersion (0 for an
// aggregate with no events). A lost race returns ErrConflict. A retry of an
// append that already succeeded (same message id) stores nothing and
// returns the stored message's sequence with Duplicate set. While the NATS
// connection is down, or the stream is missing, it returns ErrUnavailable
// at once; an acknowledgement that does not come within the bound
// (WithTimeout) is ErrUnacknowledged.
func (s *Store) Append(ctx context.Context, agg Aggregate, expectedVersion uint64, events []*eventv1.Event, opts ...AppendOption) (AppendResult, error) {
	if err := agg.Validate(); err != nil {
		return AppendResult{}, err
	}
	if s.mirror != nil {
		return AppendResult{}, fmt.Errorf("append to %s: %w", agg, ErrReadOnly)
	}
	if len(events) == 0 {
		return AppendResult{}, fmt.Errorf("%w: no events to append", ErrInvalid)
	}
	for i, e := range events {
		if e == nil || e.GetPayload() == nil {
			return AppendResult{}, fmt.Errorf("%w: event %d has no payload", ErrInvalid, i)
		}
	}
	o := appendOptions{msgID: events[0].GetId(), timeout: DefaultAppendTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.msgID == "" {
		return AppendResult{}, fmt.Errorf("%w: no message id (set the first event's id or WithMsgID)", ErrInvalid)
	}
	data, err := proto.Marshal(&eventv1.Batch{Events: events})
	if err != nil {
		return AppendResult{}, fmt.Errorf("eventstore: marshal: %w", err)
	}
	if err := s.checkConnected(); err != nil {
		return AppendResult{}, err
	}
	pctx, cancel := publishContext(ctx, o.timeout)
	ack, err := s.js.Publish(pctx, s.Subject(agg), data,
		jetstream.WithMsgID(o.msgID),
		jetstream.WithExpectStream(s.cfg.Stream),
		jetstream.WithExpectLastSequencePerSubject(expectedVersion),
	)
	if cause := context.Cause(pctx); err != nil && errors.Is(cause, ErrUnacknowledged) {
		cancel()
		return AppendResult{}, fmt.Errorf("append to %s: %w", agg, cause)
	}
	cancel()
	if err = s.unavailable(err); err != nil {
		if isWrongLastSequence(err) {
			// JetStream checks the expected sequence before the duplicate
			// window, so a retry of an append that already succeeded
			// lands here: look for its message id among what came after.
			if seq, found, ferr := s.findMsgID(ctx, agg, expectedVersion, o.msgID); ferr == nil && found {
				return AppendResult{Sequence: seq, Duplicate: true}, nil
			}
			return AppendResult{}, fmt.Errorf("%w: %s at version %d", ErrConflict, agg, expectedVersion)
		}
		return AppendResult{}, fmt.Errorf("eventstore: append to %s: %w", agg, err)
	}
	return AppendResult{Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// findMsgID looks for a message with the id among the aggregate's records
// after the given sequence.
func (s *Store) findMsgID(ctx context.Context, agg Aggregate, after uint64, msgID string) (uint64, bool, error) {
	recs, _, err := s.LoadAfter(ctx, agg, after)
	if err != nil {
		return 0, false, err
	}
	for _, r := range recs {
		if r.MsgID == msgID {
			return r.Sequence, true, nil
		}
	}
	return 0, false, nil
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// Load returns every record of the aggregate, oldest first, and its version
// (the sequence of its last record; 0 when it has none). Recently loaded
// aggregates are cached, so a load reads only what was appended since the
// last one — one round trip when nothing was.
func (s *Store) Load(ctx context.Context, agg Aggregate) ([]Record, uint64, error) {
	if err := agg.Validate(); err != nil {
		return nil, 0, err
	}
	subject := s.Subject(agg)
	cached, cachedVersion := s.cache.get(subject)
	fresh, version, err := s.LoadAfter(ctx, agg, cachedVersion)
	if err != nil {
		return nil, 0, err
	}
	if version < cachedVersion {
		// The stream went backwards (recreated): forget what was cached.
		cached = nil
		if fresh, version, err = s.LoadAfter(ctx, agg, 0); err != nil {
			return nil, 0, err
		}
	}
	if len(fresh) == 0 && cached != nil {
		// Nothing new: the cached slice is never written to, share it.
		return cached[:len(cached):len(cached)], version, nil
	}
	records := s.cache.extend(subject, cached, cachedVersion, fresh, version)
	return records[:len(records):len(records)], version, nil
}

// LoadAfter returns the aggregate's records with a sequence above after, and
// its version. A caller that caches an aggregate's state uses it to read
// only what is new.
func (s *Store) LoadAfter(ctx context.Context, agg Aggregate, after uint64) ([]Record, uint64, error) {
	if err := agg.Validate(); err != nil {
		return nil, 0, err
	}
	subject := s.Subject(agg)
	last, err := s.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("eventstore: load %s: %w", agg, err)
	}
	version := last.Sequence
	var records []Record
	for seq := after + 1; seq <= version; {
		var raw *jetstream.RawStreamMsg
		if seq == version {
			raw = last
		} else if raw, err = s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject)); err != nil {
			return nil, 0, fmt.Errorf("eventstore: load %s at %d: %w", agg, seq, err)
		}
		rec, err := s.decode(raw.Sequence, raw.Time, raw.Subject, raw.Header.Get(jetstream.MsgIDHeader), raw.Data)
		if err != nil {
			return nil, 0, err
		}
		records = append(records, rec)
		seq = raw.Sequence + 1
	}
	return records, version, nil
}

func (s *Store) decode(seq uint64, t time.Time, subject, msgID string, data []byte) (Record, error) {
	if s.cfg.Raw {
		return Record{Sequence: seq, Time: t, Subject: subject, MsgID: msgID, Data: data}, nil
	}
	var b eventv1.Batch
	if err := proto.Unmarshal(data, &b); err != nil {
		return Record{}, fmt.Errorf("%w: sequence %d on %s: %w", ErrCorrupt, seq, subject, err)
	}
	return Record{
		Sequence:  seq,
		Time:      t,
		Subject:   subject,
		MsgID:     msgID,
		Aggregate: s.aggregateOf(subject),
		Events:    b.Events,
	}, nil
}

// LastSequence is the stream's last sequence now. A reader that has applied
// it has caught up with everything appended before the call.
func (s *Store) LastSequence(ctx context.Context) (uint64, error) {
	info, err := s.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("eventstore: stream info: %w", err)
	}
	return info.State.LastSeq, nil
}

// Identity tells one life of a stream from another: a stream deleted and
// created again under the same name starts its sequences over, and only
// its creation time says so. Every consumer's checkpoint holds it.
type Identity struct {
	Stream  string
	Created time.Time
}

// IsZero reports whether the identity is unknown.
func (i Identity) IsZero() bool { return i.Stream == "" && i.Created.IsZero() }

// Equal reports whether both name the same life of the same stream.
func (i Identity) Equal(o Identity) bool {
	return i.Stream == o.Stream && i.Created.Equal(o.Created)
}

func (i Identity) String() string {
	if i.IsZero() {
		return "none"
	}
	return i.Stream + "@" + i.Created.UTC().Format(time.RFC3339Nano)
}

// StreamState is the stream's identity and extent.
type StreamState struct {
	Stream string
	// Created tells one life of the stream from another: a stream deleted
	// and created again starts its sequences over.
	Created  time.Time
	FirstSeq uint64
	LastSeq  uint64
	// Replicas is the stream's replica count, as configured.
	Replicas int
	// CurrentAt and Behind say how current a region's mirror is with the
	// hub's stream: when it last heard the hub, it lacked Behind of the
	// records the hub then held. CurrentAt is zero on the hub's stream
	// itself, which is current as of the read.
	CurrentAt time.Time
	Behind    uint64
}

// Identity is the life of the stream the state was read from. Its time is
// kept to the microsecond, as PostgreSQL keeps a checkpoint's.
func (st StreamState) Identity() Identity {
	return Identity{Stream: st.Stream, Created: st.Created}.truncated()
}

// State reads the stream's state now.
func (s *Store) State(ctx context.Context) (StreamState, error) {
	asked := time.Now()
	info, err := s.stream.Info(ctx)
	if err != nil {
		return StreamState{}, fmt.Errorf("eventstore: stream info: %w", err)
	}
	if s.mirror != nil {
		return s.mirrorState(ctx, asked, info)
	}
	return StreamState{
		Stream:   s.cfg.Stream,
		Created:  info.Created,
		FirstSeq: info.State.FirstSeq,
		LastSeq:  info.State.LastSeq,
		Replicas: info.Config.Replicas,
	}, nil
}

// Identity reads the life of the stream now.
func (s *Store) Identity(ctx context.Context) (Identity, error) {
	st, err := s.State(ctx)
	if err != nil {
		return Identity{}, err
	}
	return st.Identity(), nil
}

// OnStreamChange calls fn (on a NATS goroutine; it must not block) when
// JetStream announces the stream was deleted, created or updated, so a
// follower checks the stream's life at once instead of at its next poll.
// The announcements are core NATS advisories: a reader that misses one
// still finds the change at its next poll.
func (s *Store) OnStreamChange(fn func()) (stop func(), err error) {
	sub, err := s.js.Conn().Subscribe("$JS.EVENT.ADVISORY.STREAM.*."+s.cfg.Stream, func(*nats.Msg) { fn() })
	if err != nil {
		return nil, fmt.Errorf("eventstore: watch stream %s: %w", s.cfg.Stream, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

type followOptions struct {
	subjects  []string
	startTime *time.Time
}

// FollowOption narrows what Follow delivers.
type FollowOption func(*Store, *followOptions)

// WithProject delivers only the events of one project.
func WithProject(project string) FollowOption {
	return func(s *Store, o *followOptions) {
		o.subjects = append(o.subjects, s.ProjectSubject(project))
	}
}

// WithAggregates delivers only the events of the given aggregates.
func WithAggregates(aggs ...Aggregate) FollowOption {
	return func(s *Store, o *followOptions) {
		for _, a := range aggs {
			o.subjects = append(o.subjects, s.Subject(a))
		}
	}
}

// WithAggregateType delivers only the events of one kind of aggregate of
// one project (e.g. every deployment of team-a).
func WithAggregateType(project, typ string) FollowOption {
	return func(s *Store, o *followOptions) {
		o.subjects = append(o.subjects, s.cfg.SubjectPrefix+"."+project+"."+typ+".*")
	}
}

// Follow calls fn for every record from sequence from on (0 or 1: from the
// start), in stream order, each exactly once, then keeps following new
// appends live. It returns when ctx ends (with ctx's error) or when fn
// returns an error (with that error). To resume after a restart, call it
// again with the last applied sequence + 1.
func (s *Store) Follow(ctx context.Context, from uint64, fn func(Record) error, opts ...FollowOption) error {
	var o followOptions
	for _, opt := range opts {
		opt(s, &o)
	}
	for _, subj := range o.subjects {
		if strings.Count(subj, ".") < strings.Count(s.cfg.SubjectPrefix, ".")+1 {
			return fmt.Errorf("%w: follow subject %q", ErrInvalid, subj)
		}
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: o.subjects,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if from > 1 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from
	}
	cons, err := s.js.OrderedConsumer(ctx, s.cfg.Stream, cfg)
	if err != nil {
		return fmt.Errorf("eventstore: follow: %w", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2048))
	if err != nil {
		return fmt.Errorf("eventstore: follow: %w", err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()

	// One goroutine receives and decodes ahead while this one applies, so
	// a reader replaying a long stream (a gateway starting) uses both
	// cores; records still reach fn one at a time, in order.
	type decoded struct {
		rec Record
		err error
	}
	ahead := make(chan decoded, 1024)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		defer close(ahead)
		for {
			msg, err := it.Next()
			var d decoded
			switch {
			case err != nil && ctx.Err() != nil:
				d.err = ctx.Err()
			case err != nil:
				d.err = fmt.Errorf("eventstore: follow: %w", err)
			default:
				meta, merr := msg.Metadata()
				if merr != nil {
					d.err = fmt.Errorf("eventstore: follow: metadata: %w", merr)
				} else {
					d.rec, d.err = s.decode(meta.Sequence.Stream, meta.Timestamp, msg.Subject(), msg.Headers().Get(jetstream.MsgIDHeader), msg.Data())
				}
			}
			select {
			case ahead <- d:
			case <-quit:
				return
			}
			if d.err != nil {
				return
			}
		}
	}()
	for {
		// Return as soon as ctx ends: an ordered consumer whose stream was
		// deleted can sit in its own reset loop for seconds before Next
		// notices Stop, and a caller that stopped following (the stream
		// changed) must not wait for it. The receiving goroutine leaves
		// when Next returns (quit is closed).
		select {
		case <-ctx.Done():
			return ctx.Err()
		case d, ok := <-ahead:
			if !ok {
				return ctx.Err()
			}
			if d.err != nil {
				return d.err
			}
			if err := fn(d.rec); err != nil {
				return err
			}
		}
	}
}

// Events flattens records into their events, in order.
func Events(records []Record) []*eventv1.Event {
	var out []*eventv1.Event
	for _, r := range records {
		out = append(out, r.Events...)
	}
	return out
}
