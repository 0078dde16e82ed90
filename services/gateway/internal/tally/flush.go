package tally

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	usagev1 "github.com/infergate/infergate/gen/infergate/usage/v1"
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
	// and is encoded in a quarter of a millisecond (the flush yields
	// before each).
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

// rowKey is one pending row: a pair in a minute.
type rowKey struct {
	project, deployment, key string
	minute                   int64
}

type pairKey struct{ project, deployment, key string }

// pendingRow is a pending row's counts (its names and minute are its key).
type pendingRow struct {
	n                  [usage.NumClasses]uint64
	prompt, completion uint64
	last               int64
}

// Flusher publishes a Counter's counts to the usage stream: one message
// at a time, in order, each retried with its own message id until it is
// acknowledged, while later counts wait — merged by minute, bounded —
// behind it.
type Flusher struct {
	cfg     FlusherConfig
	boot    string
	subject string

	// mu serializes flushes and guards the fields below.
	mu  sync.Mutex
	seq uint64
	// inflight is the frozen message, encoded: sent at least once, resent
	// as is until acknowledged; nil: none. inflightSeq is its sequence.
	inflight    []byte
	inflightSeq uint64
	pending     map[rowKey]*pendingRow
	// slab is where pending rows are allocated, 1,024 at a time.
	slab []pendingRow
	// msg, rows and counts are freeze's scratch: a message is encoded
	// from them and they are used again for the next one.
	msg    usagev1.Flush
	rows   []usagev1.Row
	counts []usagev1.Counts
	ptrs   []*usagev1.Row
	// buf holds inflight's bytes, and the next message's once it is
	// acknowledged.
	buf []byte
	// newest is the newest pending minute of each pair, needed only past
	// MaxPending: made when pending first reaches it, dropped when pending
	// empties (nil meanwhile: a map update per row of every flush saved).
	newest map[pairKey]int64
	// order is pending's keys, oldest minute first, for freeze to take
	// from the front: made once, not once per message (a flush of
	// 100,000 pairs is 391 messages); nil once a row was added.
	order   []rowKey
	dropped uint64 // requests dropped since the last frozen message

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
		pending: map[rowKey]*pendingRow{},
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
// flush).
func (f *Flusher) Flush(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.merge(f.cfg.Counter.Swap(f.cfg.Map()))
	for {
		if f.inflight == nil {
			if len(f.pending) == 0 && f.dropped == 0 {
				return nil
			}
			if err := f.freeze(); err != nil {
				return err
			}
		}
		if f.cfg.JS == nil {
			f.failures.Add(1)
			return errors.New("usage: no NATS")
		}
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		_, err := f.cfg.JS.Publish(pctx, f.subject, f.inflight,
			jetstream.WithMsgID(usage.MsgID(f.cfg.Region, f.cfg.ID, f.boot, f.inflightSeq)),
			jetstream.WithExpectStream(eventstore.UsageStream))
		cancel()
		if err != nil {
			f.failures.Add(1)
			return fmt.Errorf("usage: publish flush %d: %w", f.inflightSeq, err)
		}
		f.published.Add(1)
		f.inflight = nil
	}
}

// MapChanged makes the counter count against m, the gateway's new auth
// map, from now on; what was counted against the old one waits for the
// next flush.
func (f *Flusher) MapChanged(m *authmap.Map) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.merge(f.cfg.Counter.Swap(m))
}

// merge adds rows to what is pending, by minute; past MaxPending a row of
// a new minute joins its pair's newest pending minute, and a row of a
// pair with nothing pending is dropped (counted).
func (f *Flusher) merge(rows []Row) {
	for i := range rows {
		yield(i)
		r := &rows[i]
		if r.Last == 0 { // tokens only, of a request counted before
			r.Last = time.Now().UnixNano()
		}
		minute := r.Last / int64(time.Minute) * 60
		k := rowKey{r.Project, r.Deployment, r.Key, minute}
		p := pairKey{r.Project, r.Deployment, r.Key}
		row, ok := f.pending[k]
		if !ok && len(f.pending) >= f.cfg.MaxPending {
			if f.newest == nil {
				f.newest = newestOf(f.pending)
			}
			n := requests(r)
			if m, has := f.newest[p]; has {
				row, ok = f.pending[rowKey{r.Project, r.Deployment, r.Key, m}], true
				f.merged.Add(n)
			} else {
				f.dropped += n
				f.droppedTotal.Add(n)
				continue
			}
		}
		if !ok {
			row = f.newRow()
			f.pending[k] = row
			f.order = nil
			if f.newest != nil && minute > f.newest[p] {
				f.newest[p] = minute
			}
		}
		for c := range row.n {
			row.n[c] += r.Counts[c]
		}
		row.prompt += r.Prompt
		row.completion += r.Completion
		row.last = max(row.last, r.Last)
	}
	f.pendingRows.Store(int64(len(f.pending)))
}

// newRow is a zero pending row from the slab (one allocation per 1,024
// rows; a slab is freed once none of its rows is pending).
func (f *Flusher) newRow() *pendingRow {
	if len(f.slab) == cap(f.slab) {
		f.slab = make([]pendingRow, 0, 1024)
	}
	f.slab = f.slab[:len(f.slab)+1]
	return &f.slab[len(f.slab)-1]
}

// newestOf is the newest minute of each pair in pending.
func newestOf(pending map[rowKey]*pendingRow) map[pairKey]int64 {
	newest := make(map[pairKey]int64, len(pending))
	for k := range pending {
		p := pairKey{k.project, k.deployment, k.key}
		if m, ok := newest[p]; !ok || k.minute > m {
			newest[p] = k.minute
		}
	}
	return newest
}

func requests(r *Row) uint64 {
	var n uint64
	for _, v := range r.Counts {
		n += v
	}
	return n
}

// freeze makes and encodes the next message of up to maxRows pending
// rows, oldest minutes first: from now on it is sent as it is, with its
// sequence, until acknowledged. (Oldest first keeps newest true: a pair's
// newest minute leaves the pending rows last.)
func (f *Flusher) freeze() error {
	f.seq++
	msg := &f.msg
	proto.Reset(msg)
	msg.Gateway, msg.Region, msg.Boot, msg.Sequence, msg.Dropped = f.cfg.ID, f.cfg.Region, f.boot, f.seq, f.dropped
	if f.order == nil {
		f.order = make([]rowKey, 0, len(f.pending))
		for k := range f.pending {
			f.order = append(f.order, k)
		}
		if len(f.order) > maxRows {
			slices.SortFunc(f.order, func(a, b rowKey) int { return cmp.Compare(a.minute, b.minute) })
		}
	}
	n := min(len(f.order), maxRows)
	keys := f.order[:n]
	if f.order = f.order[n:]; len(f.order) == 0 {
		f.order = nil
	}
	if len(f.rows) < n {
		f.rows, f.counts = make([]usagev1.Row, maxRows), make([]usagev1.Counts, maxRows)
	}
	msg.Rows = f.ptrs[:0]
	var carried uint64 // requests the message carries
	for i, k := range keys {
		yield(i)
		p := f.pending[k]
		for _, v := range p.n {
			carried += v
		}
		r, c := &f.rows[i], &f.counts[i]
		proto.Reset(r)
		proto.Reset(c)
		c.Ok, c.ClientErrors, c.ServerErrors, c.Refused = p.n[usage.ClassOK], p.n[usage.ClassClientError], p.n[usage.ClassServerError], p.n[usage.ClassRefused]
		c.PromptTokens, c.CompletionTokens = p.prompt, p.completion
		r.Project, r.Deployment, r.Key, r.Minute, r.Counts, r.LastUsedUnixNano = k.project, k.deployment, k.key, k.minute, c, p.last
		msg.Rows = append(msg.Rows, r)
		delete(f.pending, k)
		if f.newest != nil {
			p := pairKey{k.project, k.deployment, k.key}
			if f.newest[p] == k.minute {
				delete(f.newest, p)
			}
		}
	}
	if len(f.pending) == 0 {
		f.newest = nil
	}
	f.pendingRows.Store(int64(len(f.pending)))
	runtime.Gosched() // the encoding takes a quarter of a millisecond
	data, err := proto.MarshalOptions{}.MarshalAppend(f.buf[:0], msg)
	f.ptrs, msg.Rows = msg.Rows[:0], nil
	if err != nil {
		// Not with names the control plane validated; the rows are
		// lost, and counted as dropped.
		f.droppedTotal.Add(carried)
		return fmt.Errorf("usage: encode flush %d: %w", f.seq, err)
	}
	f.dropped = 0
	f.buf, f.inflight, f.inflightSeq = data, data, f.seq
	return nil
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
