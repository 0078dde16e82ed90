package tally

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/gateway/internal/pace"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/usage"
)

// Defaults of a Flusher.
const (
	DefaultInterval = 10 * time.Second
	// DefaultMaxPending is how many rows (deployment, key, minute) wait
	// while NATS is away: ~100 bytes each, ~10 MB.
	DefaultMaxPending = 100_000
	// maxRows is the most rows one message carries: a row is at most
	// ~280 bytes (three names of up to 63 bytes, eight numbers), so a
	// message stays under 75 KB, within NATS's default 1 MB payload,
	// and is named and encoded in ~50 µs (the flush may pause every
	// yieldEvery rows of it).
	maxRows = 256
	// publishTimeout bounds one attempt to publish a flush.
	publishTimeout = 5 * time.Second
)

// FlusherConfig says what to flush where.
type FlusherConfig struct {
	Counter *Counter
	// Map is the auth map requests are decided on now.
	Map func() *authmap.Map
	// JS publishes to the usage stream (nil: nothing is published; counts
	// wait, bounded, as while NATS is away).
	JS         jetstream.JetStream
	Region, ID string
	// Interval between flushes; 0: DefaultInterval.
	Interval time.Duration
	// MaxPending bounds the rows kept while publishing fails; 0:
	// DefaultMaxPending.
	MaxPending int
	Log        *slog.Logger
}

// rowKey is one pending row: a pair in a minute. The pair is its numbers
// in one auth map (its epoch), named only when its message is encoded:
// an auth map never gives a number to another key or deployment life
// (they only grow, authmap.Map.Names), so within one map the numbers
// stand for the names exactly, and hash as two words instead of three
// strings. After a map change a pair's rows of the two maps stay apart,
// as rows of the same names and minute in the stream: the projection
// adds them up.
type rowKey struct {
	id     uint64 // deployment<<32 | key, as the counter's cells
	minute int32  // Unix minutes
	epoch  uint32 // an index in Flusher.maps
}

// pairKey is a pair by its names: how pending rows are told apart past
// MaxPending, where a row joins its pair's newest minute.
type pairKey struct{ project, deployment, key string }

// pendingRow is a pending row: its key and its counts; or one frozen
// since (in a message), left in Flusher.rows and Flusher.index until
// pending empties.
type pendingRow struct {
	key rowKey
	counts
	frozen bool
}

// Flusher publishes a Counter's counts to the usage stream: one message
// at a time, in order, each retried with its own message id until it is
// acknowledged, while later counts wait — merged by minute, bounded —
// behind it.
type Flusher struct {
	cfg     FlusherConfig
	boot    string
	subject string

	// publishing serializes flushes: one message in flight, in order.
	// It is held while a message is published (up to publishTimeout a
	// try); mu is not, so MapChanged never waits for NATS.
	publishing sync.Mutex
	// mu guards the fields below. inflight and buf are also read by the
	// flush that holds publishing, without mu: only that flush sets
	// them (freeze) or clears inflight.
	mu  sync.Mutex
	seq uint64
	// pace slices a flush's work.
	pace pace.Pacer
	// inflight is the frozen message, encoded: sent at least once, resent
	// as is until acknowledged; nil: none. inflightSeq is its sequence.
	inflight    []byte
	inflightSeq uint64
	// rows are the pending rows in the order they came, and the frozen
	// ones until pending (how many rows are pending) comes to 0 (then rows
	// starts again from its start) or rows is full (then the pending ones
	// are moved over them). index is the index in rows of each row's key:
	// of a frozen row's too, rather than a delete per row (a quarter of a
	// message's time), until the key comes again or rows starts again.
	// None of these holds a pointer: the collector never scans them, and
	// they are kept, not made again for every flush.
	rows    []pendingRow
	index   map[rowKey]int32
	pending int
	// maps are the auth maps of the pending rows' epochs (numbers mean
	// something only within their map), forgotten when pending empties.
	maps []*authmap.Map
	// buf holds inflight's bytes, and the next message's once it is
	// acknowledged.
	buf []byte
	// newest is the newest pending row of each pair, needed only past
	// MaxPending: made when pending first reaches it, dropped when pending
	// empties (nil meanwhile: a map update per row of every flush saved).
	newest map[pairKey]rowKey
	// order is pending's rows, oldest minute first (a row's minute and
	// its index in rows, in one word), for freeze to take from the front:
	// made once, not once per message (a flush of 100,000 pairs is 391
	// messages); nil once a row was added. orderBuf is its memory.
	order, orderBuf []uint64
	dropped         uint64 // requests dropped since the last frozen message

	published, failures, merged, droppedTotal atomic.Uint64
	pendingRows                               atomic.Int64
}

// NewFlusher returns a flusher; run it with Run.
func NewFlusher(cfg FlusherConfig) *Flusher {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &Flusher{
		cfg: cfg, boot: hex.EncodeToString(b[:]), subject: usage.Subject(cfg.Region, cfg.ID),
		index: map[rowKey]int32{},
		// A flush is background work: it gives way to requests.
		pace: pace.Pacer{Pause: pace.Background},
	}
}

// Run flushes every interval until ctx ends, then once more (bounded).
func (f *Flusher) Run(ctx context.Context) error {
	t := time.NewTicker(f.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
			defer cancel()
			if err := f.Flush(fctx); err != nil {
				f.cfg.Log.Warn("usage: last flush not published; its counts are lost", "err", err)
			}
			return ctx.Err()
		case <-t.C:
			if err := f.Flush(ctx); err != nil && ctx.Err() == nil {
				f.cfg.Log.Debug("usage flush not published; kept and retried", "err", err)
			}
		}
	}
}

// Flush takes what was counted and publishes everything pending, in
// order, until done or an attempt fails (what is left waits for the next
// flush). It publishes without holding the pending rows' lock: counts
// taken meanwhile (MapChanged) wait for the next message, not for NATS.
func (f *Flusher) Flush(ctx context.Context) error {
	f.publishing.Lock()
	defer f.publishing.Unlock()
	f.mu.Lock()
	f.take(f.cfg.Map())
	f.mu.Unlock()
	for {
		msg, seq, ok := f.next()
		if !ok {
			return nil
		}
		if f.cfg.JS == nil {
			f.failures.Add(1)
			return errors.New("usage: no NATS")
		}
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		_, err := f.cfg.JS.Publish(pctx, f.subject, msg,
			jetstream.WithMsgID(usage.MsgID(f.cfg.Region, f.cfg.ID, f.boot, seq)),
			jetstream.WithExpectStream(eventstore.UsageStream))
		cancel()
		if err != nil {
			f.failures.Add(1)
			return fmt.Errorf("usage: publish flush %d: %w", seq, err)
		}
		f.published.Add(1)
		f.mu.Lock()
		f.inflight = nil
		f.mu.Unlock()
	}
}

// next is the message to publish: the one in flight, or the next one
// frozen from the pending rows; false when nothing is left. The caller
// holds publishing.
func (f *Flusher) next() (msg []byte, seq uint64, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inflight == nil {
		if f.pending == 0 && f.dropped == 0 {
			return nil, 0, false
		}
		f.freeze()
	}
	return f.inflight, f.inflightSeq, true
}

// MapChanged makes the counter count against m, the gateway's new auth
// map, from now on; what was counted against the old one waits for the
// next flush. It waits for a flush's own work at most (the table's
// drain, a message's freeze), never for a publish.
func (f *Flusher) MapChanged(m *authmap.Map) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.take(m)
}

// take swaps the counter onto m and adds what it drained to the pending
// rows (f.mu held).
func (f *Flusher) take(m *authmap.Map) {
	f.pace.Begin()
	f.cfg.Counter.swap(m, &f.pace, f.add)
	f.pendingRows.Store(int64(f.pending))
}

// add adds a drained cell (pair id in map m) to what is pending, by
// minute; past MaxPending a row of a new minute joins its pair's newest
// pending minute, and a row of a pair with nothing pending is dropped
// (counted).
func (f *Flusher) add(m *authmap.Map, id uint64, c *counts) {
	if c.last == 0 { // tokens only, of a request counted before
		c.last = time.Now().UnixNano()
	}
	k := rowKey{id: id, minute: int32(c.last / int64(time.Minute)), epoch: f.epoch(m)}
	i, ok := f.index[k]
	ok = ok && !f.rows[i].frozen
	if !ok && f.pending >= f.cfg.MaxPending {
		p, named := f.names(k)
		if !named {
			return // not a pair of m: never with a decision's numbers
		}
		if f.newest == nil {
			f.newest = f.newestOf()
		}
		n := c.requests()
		nk, has := f.newest[p]
		if !has {
			f.dropped += n
			f.droppedTotal.Add(n)
			return
		}
		i, ok = f.index[nk], true
		f.merged.Add(n)
	}
	if !ok {
		i = f.newRow(k)
		f.index[k] = i
		f.pending++
		f.order = nil
		if f.newest != nil {
			if p, named := f.names(k); named {
				if nk, has := f.newest[p]; !has || k.minute > nk.minute {
					f.newest[p] = k
				}
			}
		}
	}
	f.rows[i].add(c)
}

// epoch is m's number among the maps of the pending rows.
func (f *Flusher) epoch(m *authmap.Map) uint32 {
	for i := len(f.maps) - 1; i >= 0; i-- {
		if f.maps[i] == m {
			return uint32(i)
		}
	}
	f.maps = append(f.maps, m)
	return uint32(len(f.maps) - 1)
}

// names returns the names of k's pair; false when its numbers are not of
// its map (never with a decision's).
func (f *Flusher) names(k rowKey) (p pairKey, ok bool) {
	p.project, p.deployment, p.key, ok = f.maps[k.epoch].Names(uint32(k.id>>32), uint32(k.id))
	return p, ok
}

// newRow adds an empty row of key k to rows and returns its index. A
// full rows of which at least half is frozen rows is compacted instead
// of grown, so rows stays within twice the pending rows (plus a message)
// even if pending never empties.
func (f *Flusher) newRow(k rowKey) int32 {
	if len(f.rows) == cap(f.rows) && f.pending <= len(f.rows)/2 {
		f.compact()
	}
	f.rows = append(f.rows, pendingRow{key: k})
	return int32(len(f.rows) - 1)
}

// compact moves the pending rows over the frozen ones, to the front of
// rows, in their order, and forgets the frozen ones.
func (f *Flusher) compact() {
	live := f.rows[:0]
	for i := range f.rows {
		r := f.rows[i]
		switch {
		case !r.frozen:
			f.index[r.key] = int32(len(live))
			live = append(live, r)
		case f.index[r.key] == int32(i): // not a key pending again, in a later row
			delete(f.index, r.key)
		}
	}
	f.rows = live
	f.order = nil
}

// newestOf is the newest pending row of each pair.
func (f *Flusher) newestOf() map[pairKey]rowKey {
	newest := make(map[pairKey]rowKey, f.pending)
	for i := range f.rows {
		if f.rows[i].frozen {
			continue
		}
		k := f.rows[i].key
		p, ok := f.names(k)
		if !ok {
			continue
		}
		if nk, has := newest[p]; !has || k.minute > nk.minute {
			newest[p] = k
		}
	}
	return newest
}

// freeze makes and encodes the next message of up to maxRows pending
// rows, oldest minutes first: from now on it is sent as it is, with its
// sequence, until acknowledged. (Oldest first keeps newest true: a pair's
// newest minute leaves the pending rows last.)
func (f *Flusher) freeze() {
	f.seq++
	if f.order == nil {
		f.order = f.sortedRows()
	}
	n := min(len(f.order), maxRows)
	frozen := f.order[:n]
	if f.order = f.order[n:]; len(f.order) == 0 {
		f.order = nil
	}
	b := appendFlushHeader(f.buf[:0], f.cfg.ID, f.cfg.Region, f.boot, f.seq)
	for i, o := range frozen {
		f.pace.At(i, yieldEvery) // a row is named and encoded in ~0.2 µs
		r := &f.rows[uint32(o)]
		r.frozen = true
		f.pending--
		p, ok := f.names(r.key)
		if !ok {
			continue
		}
		if f.newest != nil && f.newest[p] == r.key {
			delete(f.newest, p)
		}
		if !utf8.ValidString(p.project) || !utf8.ValidString(p.deployment) || !utf8.ValidString(p.key) {
			// Not with names the control plane validated; a row proto
			// would not decode is lost, and counted as dropped.
			f.droppedTotal.Add(r.requests())
			continue
		}
		b = appendRow(b, &p, r)
	}
	b = appendUint(b, flushDropped, f.dropped)
	f.dropped = 0
	if f.pending == 0 {
		// Nothing refers to a row, nor to a map, any more.
		clear(f.index)
		f.rows = f.rows[:0]
		clear(f.maps)
		f.maps = f.maps[:0]
		f.newest = nil
	}
	f.pendingRows.Store(int64(f.pending))
	f.buf, f.inflight, f.inflightSeq = b, b, f.seq
}

// sortedRows is the pending rows, oldest minute first, and in the order
// they came within a minute (so that freeze reads rows in order).
func (f *Flusher) sortedRows() []uint64 {
	o := f.orderBuf[:0]
	for i := range f.rows {
		if !f.rows[i].frozen {
			o = append(o, orderOf(f.rows[i].key.minute, i))
		}
	}
	slices.Sort(o)
	f.orderBuf = o
	return o
}

// orderOf is a row's place in order: its minute (the sign bit flipped, so
// that the words sort as the minutes), then its index in rows.
func orderOf(minute int32, i int) uint64 {
	return uint64(uint32(minute)^1<<31)<<32 | uint64(uint32(i))
}

// Stats are the flusher's counters for /metrics.
type Stats struct {
	// Published and Failures count flush messages acknowledged and
	// publish attempts that failed.
	Published, Failures uint64
	// Merged and Dropped count requests whose counts were merged into an
	// earlier minute, or dropped, because MaxPending rows were waiting.
	Merged, Dropped uint64
	// PendingRows are the rows waiting (besides the message in flight).
	PendingRows int64
	// Overflow and OtherMap are requests not counted: no free cell in the
	// table, or counted against an auth map the gateway had just replaced.
	Overflow, OtherMap uint64
}

// Stats returns the counters.
func (f *Flusher) Stats() Stats {
	o, m := f.cfg.Counter.Lost()
	return Stats{
		Published: f.published.Load(), Failures: f.failures.Load(),
		Merged: f.merged.Load(), Dropped: f.droppedTotal.Load(),
		PendingRows: f.pendingRows.Load(), Overflow: o, OtherMap: m,
	}
}
