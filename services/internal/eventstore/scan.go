package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrStopScan, returned by a Scan callback, ends the scan without error.
var ErrStopScan = errors.New("eventstore: stop scan")

// WithStartTime starts a Scan at the first message stored at or after t
// (instead of at a sequence).
func WithStartTime(t time.Time) FollowOption {
	return func(_ *Store, o *followOptions) { o.startTime = &t }
}

// Scan calls fn for each record from sequence from on (0 or 1: from the
// start) that was in the stream when Scan began, in order, then returns the
// sequence of the last record it delivered (0 if none). Records appended
// while it runs are not delivered, so a scan is a stable snapshot. fn may
// return ErrStopScan to end early. While the NATS connection is down it
// returns ErrUnavailable at once.
func (s *Store) Scan(ctx context.Context, from uint64, fn func(Record) error, opts ...FollowOption) (uint64, error) {
	if err := s.checkConnected(); err != nil {
		return 0, err
	}
	var o followOptions
	for _, opt := range opts {
		opt(s, &o)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: o.subjects, DeliverPolicy: jetstream.DeliverAllPolicy}
	switch {
	case o.startTime != nil && from <= 1:
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = o.startTime
	case from > 1:
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from
	}
	cons, err := s.js.OrderedConsumer(ctx, s.cfg.Stream, cfg)
	if err != nil {
		return 0, fmt.Errorf("eventstore: scan: %w", s.unavailable(err))
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("eventstore: scan: %w", err)
	}
	// What is pending now is the snapshot; the last one we may deliver is
	// the stream's last sequence at this moment.
	remaining := info.NumPending
	var last uint64
	for remaining > 0 {
		batch := min(remaining, 1000)
		msgs, err := cons.Fetch(int(batch), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return last, fmt.Errorf("eventstore: scan: %w", err)
		}
		got := 0
		for msg := range msgs.Messages() {
			got++
			meta, err := msg.Metadata()
			if err != nil {
				return last, fmt.Errorf("eventstore: scan: metadata: %w", err)
			}
			rec, err := s.decode(meta.Sequence.Stream, meta.Timestamp, msg.Subject(), msg.Headers().Get(jetstream.MsgIDHeader), msg.Data())
			if err != nil {
				return last, err
			}
			if err := fn(rec); err != nil {
				if errors.Is(err, ErrStopScan) {
					return rec.Sequence, nil
				}
				return last, err
			}
			last = rec.Sequence
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return last, fmt.Errorf("eventstore: scan: %w", err)
		}
		if got == 0 {
			return last, fmt.Errorf("eventstore: scan: %d messages pending but none delivered", remaining)
		}
		remaining -= uint64(got)
	}
	return last, nil
}
