package eventstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A region keeps a mirror of the hub's stream in its leaf server's own
// JetStream domain (SPEC §7, docs/multi-region.md): same name, same
// sequence numbers, no subjects of its own, fed by JetStream through the
// leaf-node link from a durable consumer on the hub (FeedConsumer). Its
// gateways read only the mirror.
//
// Stream identity through a mirror: receipts are compared with the hub
// stream's identity, so a reader of a mirror reports the identity of the
// origin life the mirror copies. CreateMirror writes that identity into
// the mirror's metadata when it creates the mirror, and a mirror is only
// ever of one origin life: JetStream keeps a mirror of a deleted origin
// with its old records, so when the hub's stream is recreated the mirror
// must be recreated too (CreateMirror does it when it finds the mirror of
// a previous life). A store opened on a mirror with the hub reachable
// (OpenMirror's origin) checks the origin's life at every state read and
// reports the stream gone while the mirror copies a life that no longer
// exists: its followers reset and wait, never serving the old life's
// records as current.

// Metadata keys on a mirror naming the origin life it copies.
const (
	MetaOriginStream  = "infergate.origin.stream"
	MetaOriginCreated = "infergate.origin.created"
)

// DefaultHubDomain is the hub's JetStream domain in deploy/nats.
const DefaultHubDomain = "hub"

// ErrReadOnly means the store is a region's mirror: appends go to the hub.
var ErrReadOnly = errors.New("eventstore: read-only: a region's mirror; append on the hub")

// ErrStaleMirror means the mirror copies a life of the hub's stream that
// no longer exists (the hub's stream was deleted or recreated). It wraps
// jetstream.ErrStreamNotFound: to readers the stream they followed is gone.
var ErrStaleMirror = fmt.Errorf("eventstore: the mirror copies a previous life of the hub's stream; recreate it with \"infergate admin stream create-mirror\": %w", jetstream.ErrStreamNotFound)

// MirrorConfig describes a region's mirror of the hub's stream.
type MirrorConfig struct {
	// Config names the hub's stream (the mirror has the same name and
	// prefix) and, for CreateMirror, the mirror's replicas and storage.
	Config
	// OriginDomain is the hub's JetStream domain; default "hub".
	OriginDomain string
	// Region is the region's JetStream domain, where the mirror lives:
	// it names the hub's consumer that feeds the mirror (Feed). Required
	// by CreateMirror.
	Region string
}

func (c *MirrorConfig) setDefaults() {
	c.Config.setDefaults()
	c.OriginDomain = cmp.Or(c.OriginDomain, DefaultHubDomain)
}

// mirrorDeclared is the mirror's whole configuration.
func (c *MirrorConfig) declared(origin Identity) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        c.Stream,
		Description: "infergate events: a region's mirror of the hub's stream",
		Mirror:      Feed(c.Stream, c.Region).Source(c.OriginDomain),
		Storage:     c.storage(),
		Replicas:    cmp.Or(c.Replicas, DefaultReplicas),
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		// Aggregates are loaded with direct gets by subject, here too.
		AllowDirect: true,
		DenyDelete:  true,
		DenyPurge:   true,
		Metadata: map[string]string{
			MetaOriginStream:  origin.Stream,
			MetaOriginCreated: origin.Created.UTC().Format(time.RFC3339Nano),
		},
	}
}

// originOf reads the origin life a mirror's metadata names.
func originOf(cfg jetstream.StreamConfig) (Identity, error) {
	name, created := cfg.Metadata[MetaOriginStream], cfg.Metadata[MetaOriginCreated]
	t, err := time.Parse(time.RFC3339Nano, created)
	if name == "" || err != nil {
		return Identity{}, fmt.Errorf("%w: stream %s: no origin in its metadata (%s=%q, %s=%q): not made by \"infergate admin stream create-mirror\"",
			ErrStreamMismatch, cfg.Name, MetaOriginStream, name, MetaOriginCreated, created)
	}
	return Identity{Stream: name, Created: t}.truncated(), nil
}

// truncated is i with its time in UTC, to the microsecond: the one
// precision every identity is compared at.
func (i Identity) truncated() Identity {
	return Identity{Stream: i.Stream, Created: i.Created.UTC().Truncate(time.Microsecond)}
}

// verifyMirror reports how got differs from a mirror of the hub's stream.
func (c *MirrorConfig) verifyMirror(got jetstream.StreamConfig) error {
	var errs []error
	differ := func(field string, expected, actual any) {
		errs = append(errs, &MismatchError{Stream: c.Stream, Field: field, Expected: fmt.Sprint(expected), Actual: fmt.Sprint(actual)})
	}
	switch {
	case got.Mirror == nil:
		differ("mirror", c.Stream+" in domain "+c.OriginDomain, "none (not a mirror)")
	case got.Mirror.Name != c.Stream || mirrorDomain(got.Mirror) != c.OriginDomain:
		differ("mirror", c.Stream+" in domain "+c.OriginDomain, got.Mirror.Name+" in domain "+mirrorDomain(got.Mirror))
	}
	if !got.AllowDirect {
		differ("allow direct", true, false)
	}
	if _, err := originOf(got); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// mirrorDomain is the domain a mirror reads from: the server keeps a
// domain as the external API prefix $JS.<domain>.API.
func mirrorDomain(src *jetstream.StreamSource) string {
	if src.Domain != "" {
		return src.Domain
	}
	if src.External != nil {
		if d, ok := strings.CutPrefix(src.External.APIPrefix, "$JS."); ok {
			if d, ok := strings.CutSuffix(d, ".API"); ok {
				return d
			}
		}
	}
	return ""
}

// CreateMirror creates the region's mirror of the hub's stream in the
// domain js addresses (the region's leaf server, cfg.Region), with the
// identity of the origin's current life (read through hub, a JetStream
// context on the hub's domain, as the stream's owner) in its metadata, and
// the durable consumer on the hub that feeds it (FeedConsumer). A mirror
// of that life with its feed already there is left as it is (its feed made
// again if lost); a mirror of a previous life (the hub's stream was
// recreated), or one fed otherwise, is deleted and created again, since
// JetStream would keep its old records.
// This is what `infergate admin stream create-mirror --domain <region>`
// runs: the mirror, like the hub's stream, is declared once, here.
func CreateMirror(ctx context.Context, js, hub jetstream.JetStream, cfg MirrorConfig) (*jetstream.StreamInfo, error) {
	cfg.setDefaults()
	if err := errors.Join(cfg.Validate(), ValidRegion(cfg.Region)); err != nil {
		return nil, err
	}
	origin, err := hub.Stream(ctx, cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("eventstore: create mirror: the hub's stream %s in domain %s: %w", cfg.Stream, cfg.OriginDomain, err)
	}
	oinfo := origin.CachedInfo()
	if err := cfg.Verify(oinfo.Config); err != nil {
		return nil, fmt.Errorf("eventstore: create mirror: the hub's stream: %w", err)
	}
	life := Identity{Stream: cfg.Stream, Created: oinfo.Created}.truncated()
	want := cfg.declared(life)
	feed := Feed(cfg.Stream, cfg.Region)
	if cur, err := js.Stream(ctx, cfg.Stream); err == nil {
		got := cur.CachedInfo().Config
		if cfg.verifyMirror(got) != nil {
			return nil, fmt.Errorf("eventstore: create mirror: %s exists and is not this region's mirror: %w", cfg.Stream, cfg.verifyMirror(got))
		}
		if was, _ := originOf(got); was.Equal(life) && feed.Feeds(got) {
			// The feed made again if it was lost: from the first record,
			// which the mirror skips up to what it holds.
			if err := feed.Ensure(ctx, hub, false); err != nil {
				return nil, err
			}
			return cur.CachedInfo(), nil
		}
		// A mirror of a previous life, or fed otherwise (made before
		// mirrors had a feed): replaced.
		if err := js.DeleteStream(ctx, cfg.Stream); err != nil {
			return nil, fmt.Errorf("eventstore: create mirror: delete the mirror of a previous life: %w", err)
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("eventstore: create mirror: %w", err)
	}
	if err := feed.Ensure(ctx, hub, true); err != nil {
		return nil, err
	}
	stream, err := js.CreateStream(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("eventstore: create mirror %s: %w", cfg.Stream, err)
	}
	return stream.CachedInfo(), nil
}

// mirror is what a Store opened on a region's mirror knows of it.
type mirror struct {
	domain string
	// origin, if set, reads the hub's stream through its domain; nil: the
	// origin's life is taken on trust from the metadata.
	origin jetstream.JetStream
}

// OpenMirror binds to the region's mirror of the hub's stream in the
// domain js addresses, and verifies it is one (made by CreateMirror); it
// never creates or changes it. The store reads like one opened on the
// hub — same subjects, same sequences — and reports the identity of the
// origin life the mirror copies; Append returns ErrReadOnly. origin, if
// not nil, is a JetStream context on the hub's domain (through the leaf
// link): every State then checks the origin's life, and a mirror of a
// life that no longer exists reads as gone (ErrStaleMirror). While the
// hub cannot be reached the mirror's metadata is trusted, and its
// readers' staleness bound (State's CurrentAt) is what limits them.
func OpenMirror(ctx context.Context, js, origin jetstream.JetStream, cfg MirrorConfig) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	stream, err := js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("eventstore: open mirror %s: %w; create it once with \"infergate admin stream create-mirror\"", cfg.Stream, err)
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: open mirror %s: %w", cfg.Stream, err)
	}
	got := stream.CachedInfo().Config
	if err := cfg.verifyMirror(got); err != nil {
		return nil, err
	}
	st := cfg.Config
	st.Replicas, st.Memory = got.Replicas, got.Storage == jetstream.MemoryStorage
	return &Store{js: js, stream: stream, cfg: st, cache: newAggCache(st.CachedAggregates),
		mirror: &mirror{domain: cfg.OriginDomain, origin: origin}}, nil
}

// IsMirror reports whether the store reads a region's mirror.
func (s *Store) IsMirror() bool { return s.mirror != nil }

// mirrorState is State on a mirror.
func (s *Store) mirrorState(ctx context.Context, asked time.Time, info *jetstream.StreamInfo) (StreamState, error) {
	life, err := originOf(info.Config)
	if err != nil {
		return StreamState{}, err
	}
	st := StreamState{
		Stream:   s.cfg.Stream,
		Created:  life.Created,
		FirstSeq: info.State.FirstSeq,
		LastSeq:  info.State.LastSeq,
		Replicas: info.Config.Replicas,
	}
	if s.mirror.origin != nil {
		// A short bound: a region cut off answers from its mirror at
		// once rather than after the hub's timeout.
		octx, cancel := context.WithTimeout(ctx, time.Second)
		oi, err := s.mirror.origin.Stream(octx, s.cfg.Stream)
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			return StreamState{}, fmt.Errorf("%w (the hub's stream is gone)", ErrStaleMirror)
		case err == nil:
			o := oi.CachedInfo()
			now := Identity{Stream: s.cfg.Stream, Created: o.Created}.truncated()
			if !life.Equal(now) {
				return StreamState{}, fmt.Errorf("%w (the mirror copies %s, the hub's stream is %s)", ErrStaleMirror, life, now)
			}
			// The hub answered: the mirror lacks what the hub holds
			// beyond it, as of the question.
			st.CurrentAt = asked
			if o.State.LastSeq > st.LastSeq {
				st.Behind = o.State.LastSeq - st.LastSeq
			}
			return st, nil
		}
		// Any other error: the hub is out of reach; the mirror says when
		// it last heard it.
	}
	mi := info.Mirror
	if mi == nil || mi.Active < 0 {
		return StreamState{}, fmt.Errorf("eventstore: the mirror %s has not heard from the hub yet", s.cfg.Stream)
	}
	// The mirror hears the origin at least every second (its consumer's
	// heartbeat) while the link is up: it held everything the origin
	// held, less Lag records, when it last heard it. Counted back from
	// when the question was asked, on this process's clock.
	st.CurrentAt = asked.Add(-mi.Active)
	st.Behind = mi.Lag
	return st, nil
}

// FeedConsumer is the hub's durable consumer that feeds a region's mirror
// of a hub stream (nats-server's durable sourcing). CreateMirror makes it
// on the hub, as the stream's owner; the mirror only asks it to resume
// (CONSUMER.RESET) and receives its deliveries on one subject. Versus the
// ephemeral consumer a mirror otherwise creates for itself:
//
//   - it outlives a cut link (an ephemeral one is deleted after 10 s
//     without interest), and once the link is back the mirror resumes it
//     within seconds (at the leaf connection's return, or at its next
//     heartbeat) instead of waiting out nats-server's consumer-create
//     timeout and retry backoff (docs/benchmarks.md, "Catch-up after a
//     100,000-record partition");
//   - the region's leaf user needs no right to create consumers on the
//     hub — a consumer may deliver to any subject, so that right would
//     let a region push a stream's records into another subject — only
//     to reset this one and to receive its deliveries.
type FeedConsumer struct {
	// Stream is the hub stream; Name the consumer; Deliver the subject it
	// delivers to, which only the region's leaf user may receive.
	Stream, Name, Deliver string
}

// feedMaxAckPending bounds the records in flight between a flow-control
// acknowledgement and the next: a mirror acknowledges through flow
// control, so this is the feed's window over the link.
const feedMaxAckPending = 20_000

// Feed names the consumer feeding region's mirror of stream.
func Feed(stream, region string) FeedConsumer {
	return FeedConsumer{Stream: stream, Name: "MIRROR_" + region, Deliver: "infergate.mirror." + region + "." + stream}
}

// Source is the mirror's source: the hub's stream in originDomain, fed by
// f.
func (f FeedConsumer) Source(originDomain string) *jetstream.StreamSource {
	return &jetstream.StreamSource{Name: f.Stream, Domain: originDomain,
		Consumer: &jetstream.StreamConsumerSource{Name: f.Name, DeliverSubject: f.Deliver}}
}

// Ensure makes the consumer on the hub if it is not there; fresh (a new
// mirror, which holds nothing yet) makes it anew from the stream's first
// record, since a mirror resumes a durable consumer where it stands.
func (f FeedConsumer) Ensure(ctx context.Context, hub jetstream.JetStream, fresh bool) error {
	if fresh {
		if err := hub.DeleteConsumer(ctx, f.Stream, f.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("eventstore: the mirror's feed %s on the hub: %w", f.Name, err)
		}
	}
	_, err := hub.CreateOrUpdatePushConsumer(ctx, f.Stream, jetstream.ConsumerConfig{
		Durable:        f.Name,
		Description:    "infergate: feeds a region's mirror (admin stream create-mirror)",
		DeliverSubject: f.Deliver,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckFlowControlPolicy,
		FlowControl:    true,
		IdleHeartbeat:  time.Second,
		MaxAckPending:  feedMaxAckPending,
	})
	if err != nil {
		return fmt.Errorf("eventstore: the mirror's feed %s on the hub: %w", f.Name, err)
	}
	return nil
}

// Feeds reports whether a mirror is fed by f.
func (f FeedConsumer) Feeds(got jetstream.StreamConfig) bool {
	c := got.Mirror
	return c != nil && c.Consumer != nil && c.Consumer.Name == f.Name && c.Consumer.DeliverSubject == f.Deliver
}

// ValidRegion reports a region name that cannot name a feed.
func ValidRegion(region string) error {
	if region == "" || strings.ContainsAny(region, ".*>/\\ \t\r\n") {
		return fmt.Errorf("eventstore: mirror: region %q: want the region's JetStream domain, a NATS subject token", region)
	}
	return nil
}
