// Package snapshots keeps the latest saved auth map (authmap.Map.Save) in a
// JetStream object store, so a gateway starts from it and replays only
// the records after it, instead of the whole history (SPEC §1: a gateway
// builds its map "from the start (or from a snapshot)").
//
// A snapshot is derived state: the stream stays the source of truth. One
// is used only if it was saved from the same stream (same name, same
// creation time — a stream deleted and created again starts its sequences
// over) at a sequence the stream still holds the records after; anything
// else (none yet, another stream's, corrupt, unreadable) means replaying
// from the start, as without snapshots.
package snapshots

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
)

// DefaultBucket is the object store bucket snapshots are kept in.
const DefaultBucket = "INFERGATE_SNAPSHOTS"

// object is the name of the latest auth map snapshot in the bucket.
const object = "authmap"

// Metadata keys on the object.
const (
	metaSequence      = "sequence"
	metaStream        = "stream"
	metaStreamCreated = "stream-created"
)

var (
	// ErrNone means the bucket holds no snapshot yet.
	ErrNone = errors.New("snapshots: no snapshot")
	// ErrNotUsable means the snapshot is not of this stream, or the stream
	// no longer holds the records after it.
	ErrNotUsable = errors.New("snapshots: snapshot not usable")
)

// Config says where snapshots are kept.
type Config struct {
	// Bucket is the object store bucket; default DefaultBucket.
	Bucket string
	// Replicas of the bucket's stream when Open creates it; default 1.
	Replicas int
	// Memory keeps the bucket in memory (tests only).
	Memory bool
	// ReadOnly opens the bucket as it is, to read snapshots only: for
	// gateways, which may not write it (natsauth). Open then fails,
	// wrapping jetstream.ErrStreamNotFound, until the snapshotter has
	// created it.
	ReadOnly bool
}

// Store reads and writes snapshots. Reads go through direct gets on the
// bucket's stream, never a consumer: a reader needs no permission to
// create consumers (see natsauth), and reads the same bytes the object
// store would, checked against the object's digest.
type Store struct {
	obj    jetstream.ObjectStore // nil when read-only
	stream jetstream.Stream
	bucket string
}

// Open opens the bucket as it is, or creates it with cfg when there is
// none (unless ReadOnly): a bucket that exists is never reconfigured.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	s := &Store{bucket: cfg.Bucket}
	var err error
	if !cfg.ReadOnly {
		if s.obj, err = openWritable(ctx, js, cfg); err != nil {
			return nil, fmt.Errorf("snapshots: open bucket %s: %w", cfg.Bucket, err)
		}
	}
	if s.stream, err = js.Stream(ctx, "OBJ_"+cfg.Bucket); err != nil {
		return nil, fmt.Errorf("snapshots: open bucket %s: %w", cfg.Bucket, err)
	}
	return s, nil
}

func openWritable(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.ObjectStore, error) {
	obj, err := js.ObjectStore(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		storage := jetstream.FileStorage
		if cfg.Memory {
			storage = jetstream.MemoryStorage
		}
		obj, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket:      cfg.Bucket,
			Description: "infergate: auth map snapshots, derived from the event stream",
			Storage:     storage,
			Replicas:    cfg.Replicas,
			Compression: true,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			obj, err = js.ObjectStore(ctx, cfg.Bucket) // another writer was first
		}
	}
	return obj, err
}

// Info describes a stored snapshot.
type Info struct {
	// Sequence is the last stream record the snapshot holds.
	Sequence uint64
	// Stream and StreamCreated name the stream it was saved from.
	Stream        string
	StreamCreated time.Time
	// Size in bytes, and when it was saved.
	Size  uint64
	Saved time.Time
}

// Latest describes the latest snapshot; ErrNone when there is none.
func (s *Store) Latest(ctx context.Context) (Info, error) {
	oi, err := s.objectInfo(ctx)
	if err != nil {
		return Info{}, err
	}
	return infoOf(oi)
}

// objectInfo reads the object's metadata; ErrNone when there is none.
func (s *Store) objectInfo(ctx context.Context) (*jetstream.ObjectInfo, error) {
	meta := "$O." + s.bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(object))
	msg, err := s.stream.GetLastMsgForSubject(ctx, meta)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, ErrNone
	}
	if err != nil {
		return nil, fmt.Errorf("snapshots: %w", err)
	}
	var oi jetstream.ObjectInfo
	if err := json.Unmarshal(msg.Data, &oi); err != nil {
		return nil, fmt.Errorf("%w: metadata: %w", ErrNotUsable, err)
	}
	if oi.Deleted {
		return nil, ErrNone
	}
	oi.ModTime = msg.Time
	return &oi, nil
}

// readObject reads the object's chunks in order and checks them against
// its size and digest.
func (s *Store) readObject(ctx context.Context, oi *jetstream.ObjectInfo) ([]byte, error) {
	subject := "$O." + s.bucket + ".C." + oi.NUID
	data := make([]byte, 0, oi.Size)
	h := sha256.New()
	seq := uint64(1)
	for range oi.Chunks {
		msg, err := s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if err != nil {
			return nil, fmt.Errorf("snapshots: read: %w", err)
		}
		data = append(data, msg.Data...)
		h.Write(msg.Data)
		seq = msg.Sequence + 1
	}
	if uint64(len(data)) != oi.Size || jetstream.GetObjectDigestValue(h) != oi.Digest {
		return nil, fmt.Errorf("%w: %d bytes read of %d, digest %s", authmap.ErrBadSnapshot, len(data), oi.Size, oi.Digest)
	}
	return data, nil
}

func infoOf(oi *jetstream.ObjectInfo) (Info, error) {
	info := Info{Stream: oi.Metadata[metaStream], Size: oi.Size, Saved: oi.ModTime}
	seq, err1 := strconv.ParseUint(oi.Metadata[metaSequence], 10, 64)
	created, err2 := time.Parse(time.RFC3339Nano, oi.Metadata[metaStreamCreated])
	if err := errors.Join(err1, err2); err != nil {
		return Info{}, fmt.Errorf("%w: metadata: %w", ErrNotUsable, err)
	}
	info.Sequence, info.StreamCreated = seq, created
	return info, nil
}

// usable says why a snapshot cannot start a map following stream; nil
// when it can.
func usable(info Info, stream eventstore.StreamState) error {
	// Lives compared as identities (to the microsecond): a region's
	// mirror reports the hub stream's life it copies at that precision.
	saved := eventstore.StreamState{Stream: info.Stream, Created: info.StreamCreated}.Identity()
	switch {
	case !saved.Equal(stream.Identity()):
		return fmt.Errorf("%w: saved from stream %s created %s, not %s created %s", ErrNotUsable,
			info.Stream, info.StreamCreated.Format(time.RFC3339Nano), stream.Stream, stream.Created.Format(time.RFC3339Nano))
	case info.Sequence > stream.LastSeq:
		return fmt.Errorf("%w: saved at sequence %d, after the stream's last %d", ErrNotUsable, info.Sequence, stream.LastSeq)
	case stream.FirstSeq > info.Sequence+1 && stream.LastSeq > info.Sequence:
		return fmt.Errorf("%w: the stream no longer holds sequence %d", ErrNotUsable, info.Sequence+1)
	}
	return nil
}

// ErrReadOnly means Save was called on a store opened ReadOnly.
var ErrReadOnly = errors.New("snapshots: opened read-only")

// Save writes m's state as the latest snapshot of stream (the stream m
// follows) and describes it. The map keeps applying records meanwhile.
func (s *Store) Save(ctx context.Context, m *authmap.Map, stream eventstore.StreamState) (Info, error) {
	if s.obj == nil {
		return Info{}, ErrReadOnly
	}
	p := m.SavePoint()
	pr, pw := io.Pipe()
	go func() {
		_, err := p.WriteTo(pw)
		pw.CloseWithError(err)
	}()
	oi, err := s.obj.Put(ctx, jetstream.ObjectMeta{
		Name:        object,
		Description: "auth map snapshot",
		Metadata: map[string]string{
			metaSequence:      strconv.FormatUint(p.Sequence(), 10),
			metaStream:        stream.Stream,
			metaStreamCreated: stream.Created.Format(time.RFC3339Nano),
		},
	}, pr)
	// Unblock the writer if Put stopped reading early.
	pr.CloseWithError(errors.New("snapshots: put ended"))
	if err != nil {
		return Info{}, fmt.Errorf("snapshots: save: %w", err)
	}
	return Info{
		Sequence:      p.Sequence(),
		Stream:        stream.Stream,
		StreamCreated: stream.Created,
		Size:          oi.Size,
		Saved:         oi.ModTime,
	}, nil
}

// Restore loads the latest snapshot into m, which must be new, if it is
// usable for stream: m is then at the snapshot's sequence and is to follow
// the stream from the record after it. ErrNone: there is none;
// ErrNotUsable: it is not of this stream or not usable any more; any other
// error: it could not be read or is corrupt. Whatever the error, m is left
// as it was.
func (s *Store) Restore(ctx context.Context, m *authmap.Map, stream eventstore.StreamState) (Info, error) {
	oi, err := s.objectInfo(ctx)
	if err != nil {
		return Info{}, err
	}
	info, err := infoOf(oi)
	if err != nil {
		return Info{}, err
	}
	if err := usable(info, stream); err != nil {
		return info, err
	}
	buf, err := s.readObject(ctx, oi)
	if err != nil {
		return info, err
	}
	if seq, err := authmap.SnapshotSequence(bytes.NewReader(buf)); err != nil || seq != info.Sequence {
		return info, fmt.Errorf("%w: header says sequence %d, metadata %d (%v)", authmap.ErrBadSnapshot, seq, info.Sequence, err)
	}
	if err := m.RestoreBytes(buf); err != nil {
		return info, err
	}
	return info, nil
}
