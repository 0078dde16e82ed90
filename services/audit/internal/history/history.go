// Package history answers "what was the auth state of project P at time
// T?" quickly. It follows the stream and keeps, per project, checkpoints of
// the gateway's auth map (frozen clones) along it, so a question about T
// starts from the nearest checkpoint at or before T and replays only the
// records after it, instead of the project's whole history.
//
// A project gets a checkpoint after max(Every, size of its state) of its
// records, so the checkpoints together cost memory in proportion to the
// history, and a question replays at most that many records. The records
// between checkpoints are kept too (up to MaxRecords in all; older ones are
// then dropped and read back from the stream when asked about), so a
// question is answered from memory.
package history

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
)

// Config tunes an Index.
type Config struct {
	// Events is the event store. Required.
	Events *eventstore.Store
	// Every is the least number of a project's records between two of its
	// checkpoints; default 1000.
	Every int
	// MaxRecords bounds the records kept in memory across projects;
	// default 2,000,000.
	MaxRecords int
	// CatchUpTimeout bounds how long a question waits for the index to
	// reach the stream's end; default 5 s. After it, the answer is replayed
	// from the start of the stream instead.
	CatchUpTimeout time.Duration
	// Log receives what the index does. Default slog.Default().
	Log *slog.Logger
}

// Index keeps the checkpoints. It runs on the one follower primitive
// (package follow): when the stream turns out to be another life of it
// (deleted and created again) or went back, the index drops everything
// and rebuilds from the new stream, so a question is never answered from
// the history of a stream that no longer exists.
type Index struct {
	cfg      Config
	follower *follow.Follower
	applied  atomic.Uint64

	mu sync.RWMutex // mu protects the fields below
	// projects holds each project's checkpoints and live state.
	projects map[string]*project
	// kept counts the records held in checkpoints' segments; order lists
	// the segments oldest first, to drop when over MaxRecords.
	kept  int
	order []*checkpoint
	// stream is the life of the stream the index holds.
	stream eventstore.Identity
}

type project struct {
	// live is the project's current state; only Run touches it.
	live  *authmap.Map
	since int
	// checkpoints are frozen states, by sequence (and so by time), the
	// first an empty state before any record; guarded by Index.mu.
	checkpoints []*checkpoint
}

type checkpoint struct {
	seq   uint64
	at    time.Time
	state *authmap.Map // nil: empty
	// next are the project's records after this checkpoint, up to the
	// next one; dropped (nil, dropped set) when memory is short.
	next    []eventstore.Record
	dropped bool
}

// New returns an Index; Run feeds it.
func New(cfg Config) (*Index, error) {
	if cfg.Events == nil {
		return nil, errors.New("history: Events is required")
	}
	if cfg.Every <= 0 {
		cfg.Every = 1000
	}
	if cfg.MaxRecords <= 0 {
		cfg.MaxRecords = 2_000_000
	}
	if cfg.CatchUpTimeout <= 0 {
		cfg.CatchUpTimeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	x := &Index{cfg: cfg, projects: map[string]*project{}}
	x.follower = follow.New(follow.Config{Name: "audit index", Source: cfg.Events, Consumer: (*indexConsumer)(x), Log: cfg.Log})
	return x, nil
}

// Run follows the stream from the start until ctx ends, retrying (from
// where it stopped) when the stream fails.
func (x *Index) Run(ctx context.Context) error {
	_ = x.follower.Run(ctx)
	return nil
}

// indexConsumer is the Index as the follower's follow.Consumer.
type indexConsumer Index

func (c *indexConsumer) Checkpoint(context.Context) (follow.Checkpoint, error) {
	x := (*Index)(c)
	x.mu.RLock()
	defer x.mu.RUnlock()
	return follow.Checkpoint{Stream: x.stream, Sequence: x.applied.Load()}, nil
}

func (c *indexConsumer) Reset(_ context.Context, to eventstore.Identity) error {
	x := (*Index)(c)
	x.mu.Lock()
	defer x.mu.Unlock()
	x.projects = map[string]*project{}
	x.kept, x.order = 0, nil
	x.stream = to
	x.applied.Store(0)
	return nil
}

func (c *indexConsumer) Apply(_ context.Context, rec eventstore.Record) error {
	return (*Index)(c).apply(rec)
}

func (x *Index) apply(rec eventstore.Record) error {
	name := rec.Aggregate.Project
	x.mu.RLock()
	p := x.projects[name]
	x.mu.RUnlock()
	x.mu.Lock()
	if p == nil {
		first := &checkpoint{}
		p = &project{live: authmap.New(), checkpoints: []*checkpoint{first}}
		x.projects[name] = p
		x.order = append(x.order, first)
	}
	tail := p.checkpoints[len(p.checkpoints)-1]
	tail.next = append(tail.next, rec)
	x.kept++
	x.mu.Unlock()

	p.live.Apply(rec.Sequence, rec.Events)
	p.since++
	x.mu.Lock()
	defer x.mu.Unlock()
	if p.since >= max(x.cfg.Every, p.live.Size()) {
		c := &checkpoint{seq: rec.Sequence, at: rec.Time, state: p.live.Clone()}
		p.checkpoints = append(p.checkpoints, c)
		x.order = append(x.order, c)
		p.since = 0
	}
	// Drop the oldest segments' records while over the bound; questions
	// about those times read them back from the stream.
	for x.kept > x.cfg.MaxRecords && len(x.order) > 1 {
		old := x.order[0]
		x.order = x.order[1:]
		x.kept -= len(old.next)
		old.next, old.dropped = nil, true
	}
	x.applied.Store(rec.Sequence)
	return nil
}

// caughtUp blocks until the index holds everything appended to the
// stream's current life before the call, or the timeout passes.
func (x *Index) caughtUp(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, x.cfg.CatchUpTimeout)
	defer cancel()
	return x.follower.WaitCaughtUp(ctx) == nil
}

// StateAt returns the project's auth state as of time at — every record
// of the project stored at or before at, applied — and the last sequence
// taken into account. The map is the caller's to keep.
func (x *Index) StateAt(ctx context.Context, projectName string, at time.Time) (*authmap.Map, uint64, error) {
	var (
		state   = authmap.New()
		from    uint64
		seq     uint64
		records []eventstore.Record
		scan    = true
	)
	if x.caughtUp(ctx) {
		x.mu.RLock()
		if p := x.projects[projectName]; p != nil {
			// The last checkpoint stored at or before at (the first one,
			// an empty state, is before everything).
			i := sort.Search(len(p.checkpoints), func(i int) bool {
				return i > 0 && p.checkpoints[i].at.After(at)
			})
			c := p.checkpoints[i-1]
			if c.state != nil {
				state = c.state.Clone()
			}
			from, seq = c.seq+1, c.seq
			if !c.dropped {
				records, scan = c.next, false
			}
		} else {
			scan = false // no record of the project at all
		}
		x.mu.RUnlock()
	} else {
		x.cfg.Log.Warn("history: index behind the stream; replaying from the start", "project", projectName)
	}
	if !scan {
		for _, rec := range records {
			if rec.Time.After(at) {
				break
			}
			state.Apply(rec.Sequence, rec.Events)
			seq = rec.Sequence
		}
		return state, seq, nil
	}
	return replayFrom(ctx, x.cfg.Events, projectName, from, state, seq, at)
}

// Replay folds the project's whole history up to at into a fresh auth map,
// reading the stream from its start: the answer without an Index.
func Replay(ctx context.Context, events *eventstore.Store, projectName string, at time.Time) (*authmap.Map, uint64, error) {
	return replayFrom(ctx, events, projectName, 0, authmap.New(), 0, at)
}

// replayFrom applies the project's records from sequence from on, stored at
// or before at, to state, whose last applied sequence is seq.
func replayFrom(ctx context.Context, events *eventstore.Store, projectName string, from uint64, state *authmap.Map, seq uint64, at time.Time) (*authmap.Map, uint64, error) {
	_, err := events.Scan(ctx, from, func(rec eventstore.Record) error {
		if rec.Time.After(at) {
			return eventstore.ErrStopScan
		}
		state.Apply(rec.Sequence, rec.Events)
		seq = rec.Sequence
		return nil
	}, eventstore.WithProject(projectName))
	if err != nil {
		return nil, 0, fmt.Errorf("history: replay %s: %w", projectName, err)
	}
	return state, seq, nil
}
