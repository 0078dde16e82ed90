// Package tally is the gateway's usage counting (docs/usage.md): requests
// per deployment, key and status class, the last use, and tokens where
// the upstream reported them, counted on the request path without a lock
// or an allocation, and flushed every interval to the usage stream.
//
// Counting is a lookup in a fixed table of cache-line cells keyed by the
// auth map's numbers for the deployment and the key (authmap.Decision),
// and an atomic add. Each flush swaps in an empty table and drains the
// one it took out (twice: again at the next flush, for a counter that
// loaded the table just before the swap), so the table holds only what
// was counted in one interval; an interval with more pairs than fit makes
// the next tables larger (bounded: MaxCells). Names are looked up only
// at the flush, in the auth map the table was counted against.
package tally

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/pace"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/usage"
)

// DefaultCells is the number of (deployment, key) pairs a table starts
// with for one flush interval: 16,384 cells of 64 bytes, 1 MiB (three
// tables are kept: the one counted into, the one drained, a spare).
const DefaultCells = 1 << 14

// MaxCells bounds a table's growth: an interval in which requests found
// no free cell makes the next tables four times larger, up to 262,144
// cells (16 MiB each, 48 MiB for the three).
const MaxCells = 1 << 18

// hashMul spreads a pair's id over the table (Fibonacci hashing).
const hashMul = 0x9e3779b97f4a7c15

// maxProbe bounds a lookup: past it the count goes to overflow.
const maxProbe = 16

// cell is one (deployment, key) pair's counts in one interval: one cache
// line.
type cell struct {
	id   atomic.Uint64 // 0: free; else deployment<<32 | key
	n    [usage.NumClasses]atomic.Uint64
	tok  [2]atomic.Uint64 // prompt, completion
	last atomic.Int64     // Unix ns of the last request counted
}

type table struct {
	m     *authmap.Map // the map whose numbers the cells hold
	cells []cell
	shift uint
}

func newTable(size int) *table {
	n, shift := 1, uint(64)
	for n < size {
		n, shift = n*2, shift-1
	}
	return &table{cells: make([]cell, n), shift: shift}
}

// find returns id's cell, taking a free one; nil when none is free within
// maxProbe.
func (t *table) find(id uint64) *cell {
	mask := uint64(len(t.cells) - 1)
	i := (id * hashMul) >> t.shift
	for range maxProbe {
		c := &t.cells[i]
		v := c.id.Load()
		if v == id {
			return c
		}
		if v == 0 && (c.id.CompareAndSwap(0, id) || c.id.Load() == id) {
			return c
		}
		i = (i + 1) & mask
	}
	return nil
}

// Counter counts; its zero value is not usable, call NewCounter.
type Counter struct {
	cur atomic.Pointer[table]
	// overflow counts requests that found no free cell; other counts
	// those counted against another auth map than the table's (in the
	// interval after the gateway rebuilt its map). Neither reaches the
	// stream: /metrics shows them.
	overflow, other atomic.Uint64

	// mu serializes swap and guards the fields below.
	mu sync.Mutex
	// size is the cells of the next new table; lost is overflow at the
	// last swap.
	size  int
	lost  uint64
	prev  *table // taken out at the last swap: drained again at the next
	spare *table
}

// NewCounter returns a counter with tables of cells cells (0:
// DefaultCells), counting against m until the first swap.
func NewCounter(cells int, m *authmap.Map) *Counter {
	if cells <= 0 {
		cells = DefaultCells
	}
	c := &Counter{size: cells}
	t := newTable(c.size)
	t.m = m
	c.cur.Store(t)
	return c
}

// Count counts one request of deployment dep with key key (authmap
// Decision numbers; dep 0 is not counted) in class, at now (Unix ns),
// decided on map m. It never blocks and does not allocate.
func (c *Counter) Count(m *authmap.Map, dep, key uint32, class usage.Class, now int64) {
	if dep == 0 {
		return
	}
	t := c.cur.Load()
	id := uint64(dep)<<32 | uint64(key)
	// The common case in a few instructions: the pair's cell is the
	// first probed and already taken.
	cl := &t.cells[(id*hashMul)>>t.shift]
	if cl.id.Load() != id || t.m != m {
		if cl = c.slow(t, m, id); cl == nil {
			return
		}
	}
	cl.n[class].Add(1)
	// The last use is kept to the millisecond: a store (a locked
	// instruction on amd64, as costly as the add) at most once a
	// millisecond per cell, a plain load otherwise.
	if now-cl.last.Load() >= lastUsedPrecision {
		cl.last.Store(now)
	}
}

// slow is Count's lookup past the first probe.
func (c *Counter) slow(t *table, m *authmap.Map, id uint64) *cell {
	if t.m != m {
		c.other.Add(1)
		return nil
	}
	cl := t.find(id)
	if cl == nil {
		c.overflow.Add(1)
	}
	return cl
}

// lastUsedPrecision is how precisely the last use is kept, in ns.
const lastUsedPrecision = int64(time.Millisecond)

// Tokens adds the tokens an upstream reported for a request counted with
// Count.
func (c *Counter) Tokens(m *authmap.Map, dep, key uint32, prompt, completion uint64) {
	if dep == 0 || prompt|completion == 0 {
		return
	}
	t := c.cur.Load()
	if t.m != m {
		return
	}
	if cl := t.find(uint64(dep)<<32 | uint64(key)); cl != nil {
		cl.tok[0].Add(prompt)
		cl.tok[1].Add(completion)
	}
}

// Lost reports the requests counted into overflow (no free cell) and
// against another auth map, since the start.
func (c *Counter) Lost() (overflow, otherMap uint64) { return c.overflow.Load(), c.other.Load() }

// yieldEvery is how many rows (16 times as many table cells) a flush
// handles between two looks at the clock (~50 µs of work): it pauses
// when its slice is over (pace.Pacer).
const yieldEvery = 64

// counts are what one cell counted in an interval, as a flush takes them,
// and what a pending row sums.
type counts struct {
	n                  [usage.NumClasses]uint64
	prompt, completion uint64
	last               int64 // Unix ns of the last request
}

// add sums o into c.
func (c *counts) add(o *counts) {
	for k := range c.n {
		c.n[k] += o.n[k]
	}
	c.prompt += o.prompt
	c.completion += o.completion
	c.last = max(c.last, o.last)
}

// requests is how many requests c counts.
func (c *counts) requests() uint64 {
	var n uint64
	for _, v := range c.n {
		n += v
	}
	return n
}

// drainFunc takes one drained cell: the pair's id (deployment<<32 | key)
// in map m, the map its table was counted against, and its counts.
type drainFunc func(m *authmap.Map, id uint64, c *counts)

// swap starts a new interval counted against m and passes fn what the
// previous intervals counted, cell by cell, unnamed, as it is drained
// (paced by p): the table taken out now, and what came late into the one
// taken out at the previous swap.
func (c *Counter) swap(m *authmap.Map, p *pace.Pacer, fn drainFunc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Requests found no free cell since the last swap: the interval's
	// pairs outgrew the table, and the next tables are larger.
	if lost := c.overflow.Load(); lost != c.lost {
		c.lost = lost
		if c.size < MaxCells {
			c.size = min(c.size*4, MaxCells)
		}
	}
	next := c.spare
	if next == nil || len(next.cells) < c.size {
		next = newTable(c.size)
	}
	c.spare = nil
	next.m = m
	old := c.cur.Swap(next)
	drain(old, p, fn, false)
	if c.prev != nil {
		drain(c.prev, p, fn, true)
		c.prev.m = nil
		c.spare = c.prev
	}
	c.prev = old
}

// drain takes t's counts (leaving zeros, so draining again takes only
// what came since) and passes each cell that counted something to fn,
// paced by p. free: t is drained for the last time, and its cells are
// freed for its next interval as the spare table (atomic stores, though a
// request that loaded t before the last swap but one has long counted: a
// plain store beside an atomic add would be a data race).
func drain(t *table, p *pace.Pacer, fn drainFunc, free bool) {
	var rows int
	var c counts // one for every cell: fn's argument escapes
	for i := range t.cells {
		p.At(i, 16*yieldEvery) // an empty cell costs little
		cl := &t.cells[i]
		id := cl.id.Load()
		if id == 0 {
			continue
		}
		c = counts{}
		var any uint64
		for k := range cl.n {
			c.n[k] = take(&cl.n[k])
			any |= c.n[k]
		}
		c.prompt, c.completion = take(&cl.tok[0]), take(&cl.tok[1])
		c.last = cl.last.Load()
		if free {
			cl.id.Store(0)
			cl.last.Store(0)
		}
		if any|c.prompt|c.completion == 0 {
			continue
		}
		fn(t.m, id, &c)
		p.At(rows, yieldEvery)
		rows++
	}
}

// take swaps v's count for zero. A count that is zero is only loaded:
// most of a cell's counts are (all of them, in the table drained a second
// time), and a swap is a locked instruction.
func take(v *atomic.Uint64) uint64 {
	if v.Load() == 0 {
		return 0
	}
	return v.Swap(0)
}
