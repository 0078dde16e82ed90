package snapshots

import (
	"cmp"
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/internal/eventstore"
)

// A region keeps a mirror of the hub's snapshot bucket next to its mirror
// of the event stream (SPEC §7, docs/multi-region.md), so that a gateway
// started while the region is cut off starts from a snapshot too, without
// the WAN. An object store is a stream, OBJ_<bucket>; its mirror in the
// region's domain has the same name, subjects and sequences, so Open, on
// the region's leaf server, reads it as it reads the hub's bucket. It is
// read-only: only the control plane's snapshotter writes snapshots, on the
// hub, and JetStream copies them. A snapshot names the hub stream's life it
// was saved from, which is the life a reader of the region's event mirror
// reports, so Restore's check holds there as on the hub.

// DefaultMirrorMaxBytes bounds a region's copy of the bucket. The hub
// purges a replaced snapshot's chunks; a mirror does not copy purges, so
// the region drops its oldest messages past this size instead. It should
// hold the latest snapshot a few times over (a million keys: 70 MiB).
const DefaultMirrorMaxBytes = 1 << 30

// MirrorConfig describes a region's mirror of the hub's snapshot bucket.
type MirrorConfig struct {
	// Bucket is the hub's bucket; default DefaultBucket.
	Bucket string
	// OriginDomain is the hub's JetStream domain; default "hub".
	OriginDomain string
	// Region is the region's JetStream domain, where the mirror lives.
	// Required.
	Region string
	// Replicas of the mirror; default 1.
	Replicas int
	// Memory keeps the mirror in memory (tests and demos only).
	Memory bool
	// MaxBytes bounds the mirror; default DefaultMirrorMaxBytes.
	MaxBytes int64
}

func (c *MirrorConfig) declared() jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if c.Memory {
		storage = jetstream.MemoryStorage
	}
	name := "OBJ_" + c.Bucket
	return jetstream.StreamConfig{
		Name:        name,
		Description: "infergate: a region's mirror of the hub's auth map snapshots",
		Mirror:      eventstore.Feed(name, c.Region).Source(c.OriginDomain),
		Storage:     storage,
		Replicas:    c.Replicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxMsgs:     -1,
		MaxBytes:    c.MaxBytes,
		Compression: jetstream.S2Compression,
		// Read by direct gets only, as on the hub (Store).
		AllowDirect: true,
		// Each object's metadata is a rollup on its subject: only the
		// latest is kept, here as on the hub.
		AllowRollup: true,
	}
}

// CreateMirror creates the region's mirror of the hub's snapshot bucket
// in the domain js addresses (the region's leaf server), fed by a durable
// consumer it makes on the hub through hub (eventstore.FeedConsumer), and
// the hub's bucket itself if there is none yet (as the snapshotter would,
// with the event stream's replicas). A mirror of the bucket already there is kept. This is
// part of `infergate admin stream create-mirror`, with the event stream's
// mirror (eventstore.CreateMirror).
func CreateMirror(ctx context.Context, js, hub jetstream.JetStream, cfg MirrorConfig) (*jetstream.StreamInfo, error) {
	cfg.Bucket = cmp.Or(cfg.Bucket, DefaultBucket)
	cfg.OriginDomain = cmp.Or(cfg.OriginDomain, eventstore.DefaultHubDomain)
	cfg.Replicas = cmp.Or(cfg.Replicas, 1)
	cfg.MaxBytes = cmp.Or(cfg.MaxBytes, DefaultMirrorMaxBytes)
	if err := eventstore.ValidRegion(cfg.Region); err != nil {
		return nil, err
	}
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("snapshots: mirror: max bytes %d: want a bound", cfg.MaxBytes)
	}
	// The hub's bucket, made as the snapshotter makes it (with the event
	// stream's replicas and storage) if it is not there yet: the feed
	// needs its stream.
	if _, err := Open(ctx, hub, Config{Bucket: cfg.Bucket, ReadOnly: true}); errors.Is(err, jetstream.ErrStreamNotFound) {
		events, err := hub.Stream(ctx, eventstore.DefaultStream)
		if err != nil {
			return nil, fmt.Errorf("snapshots: create mirror: the hub's event stream: %w", err)
		}
		ec := events.CachedInfo().Config
		if _, err := Open(ctx, hub, Config{Bucket: cfg.Bucket, Replicas: ec.Replicas, Memory: ec.Storage == jetstream.MemoryStorage}); err != nil {
			return nil, fmt.Errorf("snapshots: create mirror: the hub's bucket: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("snapshots: create mirror: the hub's bucket: %w", err)
	}
	want := cfg.declared()
	feed := eventstore.Feed(want.Name, cfg.Region)
	if cur, err := js.Stream(ctx, want.Name); err == nil {
		got := cur.CachedInfo().Config
		if got.Mirror == nil {
			return nil, fmt.Errorf("snapshots: create mirror: %s exists in domain %s and is not a mirror", want.Name, cfg.Region)
		}
		if feed.Feeds(got) {
			if err := feed.Ensure(ctx, hub, false); err != nil {
				return nil, err
			}
			return cur.CachedInfo(), nil
		}
		// A mirror fed otherwise: derived data, replaced.
		if err := js.DeleteStream(ctx, want.Name); err != nil {
			return nil, fmt.Errorf("snapshots: create mirror: replace %s: %w", want.Name, err)
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("snapshots: create mirror: %w", err)
	}
	if err := feed.Ensure(ctx, hub, true); err != nil {
		return nil, err
	}
	stream, err := js.CreateStream(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("snapshots: create mirror %s: %w", want.Name, err)
	}
	return stream.CachedInfo(), nil
}
