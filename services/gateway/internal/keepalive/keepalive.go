// Package keepalive is the gateway's keep-alive connections to upstreams
// — one connection type for the HTTP/1.1 fast path and for the net/http
// path's synchronous client alike — and the pool of idle ones, which
// tells with one non-blocking peek whether a pooled connection can still
// carry a request.
package keepalive

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/sockprobe"
)

// Defaults of a Pool.
const (
	DefaultMaxPerHost  = 1024
	DefaultIdleTimeout = 90 * time.Second
)

// Pooled is what a Pool needs of a connection (a *Conn; tests pool
// stand-ins).
type Pooled interface {
	// Usable reports whether the idle connection can carry another
	// request: the upstream has not closed it, nor sent anything unasked.
	Usable() bool
	Close() error
}

// Pool holds idle connections by address, most recent last. The zero value
// is ready to use, with the defaults.
type Pool[C Pooled] struct {
	// MaxPerHost is how many idle connections an address keeps; 0:
	// DefaultMaxPerHost.
	MaxPerHost int
	// IdleTimeout is how long a connection may stay idle; 0:
	// DefaultIdleTimeout.
	IdleTimeout time.Duration

	mu   sync.Mutex // mu protects idle
	idle map[string][]entry[C]
}

type entry[C Pooled] struct {
	c     C
	since time.Time
}

func (p *Pool[C]) timeout() time.Duration {
	if p.IdleTimeout > 0 {
		return p.IdleTimeout
	}
	return DefaultIdleTimeout
}

// Get returns the most recent idle connection to addr that is still
// usable, closing the stale and dead ones it finds on the way; false when
// there is none. now is the current time (the caller has read the clock
// already).
func (p *Pool[C]) Get(addr string, now time.Time) (C, bool) {
	for {
		p.mu.Lock()
		list := p.idle[addr]
		if len(list) == 0 {
			p.mu.Unlock()
			var none C
			return none, false
		}
		e := list[len(list)-1]
		list[len(list)-1] = entry[C]{}
		p.idle[addr] = list[:len(list)-1]
		p.mu.Unlock()
		if now.Sub(e.since) < p.timeout() && e.c.Usable() {
			return e.c, true
		}
		_ = e.c.Close()
	}
}

// Put makes c an idle connection to addr, or closes it when addr has
// MaxPerHost already. The oldest idle connection, if idle too long, is
// let go (one per Put keeps the pool from holding a burst's connections
// for ever). now is the current time.
func (p *Pool[C]) Put(addr string, c C, now time.Time) {
	max := p.MaxPerHost
	if max <= 0 {
		max = DefaultMaxPerHost
	}
	p.mu.Lock()
	if p.idle == nil {
		p.idle = map[string][]entry[C]{}
	}
	list := p.idle[addr]
	if len(list) > 0 && now.Sub(list[0].since) > p.timeout() {
		old := list[0].c
		list = list[1:]
		defer old.Close()
	}
	if len(list) >= max {
		p.idle[addr] = list
		p.mu.Unlock()
		_ = c.Close()
		return
	}
	p.idle[addr] = append(list, entry[C]{c, now})
	p.mu.Unlock()
}

// CloseIdle closes every idle connection.
func (p *Pool[C]) CloseIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, list := range idle {
		for _, e := range list {
			_ = e.c.Close()
		}
	}
}

// Idempotent reports whether a request of method may be sent a second
// time, on a fresh connection, when the upstream closed a reused one after
// the request was written but before any of the response came.
func Idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// DialFunc connects to an upstream address ("host:port"); its context
// bounds the connect.
type DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// Conn is a keep-alive connection to an upstream, the one type both
// front ends use: the fast path writes its request bytes and reads the
// response from Reader; the net/http path's synchronous client writes
// with http.Request.Write and reads with http.ReadResponse on the same
// Reader.
//
// A Conn holds no read buffer while it has nothing buffered: Reader
// borrows one from a pool, Release gives it back, and Wait waits for the
// upstream without one. An idle pooled connection and a stream waiting
// between two chunks so cost a few hundred bytes, not ReadBufSize.
//
// Its reads (and Wait) can be bounded (Bound): they fail with
// ErrHeadTimeout past a deadline (the upstream response head's bound)
// and with ErrClientGone once a Watcher says the request's client has
// gone — checked every PollEvery while a read waits for a response head
// and every StreamPollEvery while it waits for more of a body, since
// nothing else watches the client meanwhile.
type Conn struct {
	nc    net.Conn
	br    *bufio.Reader // nil while not borrowed
	addr  string
	probe sockprobe.Probe

	// watch and until bound the current request's reads (Bound).
	watch Watcher
	until time.Time
	// deadline is the read deadline set on nc.
	deadline time.Time
	// now is a clock reading the next arm uses instead of its own
	// (Clock); zero: none.
	now time.Time
	// armed: Send armed the bounds and its wait has ended; the read
	// that follows needs no arming of its own.
	armed bool
	// unread are bytes read from nc by someone else (the h1 event loop)
	// that the next reads return first (Unread).
	unread []byte
}

// Watcher says whether a request's client has gone.
type Watcher interface{ Gone() bool }

// PollEvery is how often a read that waits for a response head asks its
// Watcher: a client that leaves a slow request is noticed within it.
const PollEvery = time.Second

// StreamPollEvery is how often a read of a response body (no head bound)
// asks its Watcher. Longer than PollEvery: while a stream flows, a write
// to a client that left fails at once anyway, so the poll matters only
// for a silent stream; and a deadline renewed at most every half of it
// costs a stream sending a chunk a second a timer update every few
// chunks instead of one per chunk (and no wake-up between chunks).
const StreamPollEvery = 5 * time.Second

// ReadBufSize is a connection's read buffer (the largest response head
// the fast path reads).
const ReadBufSize = 32 << 10

// readers are the read buffers connections borrow. A sync.Pool: the
// garbage collector empties it, so a burst's buffers are not kept.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, ReadBufSize) }}

// Errors of a bounded read.
var (
	ErrHeadTimeout = errors.New("keepalive: the upstream's response head did not come in time")
	ErrClientGone  = errors.New("keepalive: the client went away")
)

// Dial connects to addr with dial and ctx (which bounds the connect).
func Dial(ctx context.Context, dial DialFunc, addr string) (*Conn, error) {
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &Conn{nc: nc, addr: addr}
	c.probe.Init(nc)
	return c, nil
}

// Addr is the address dialled, the connection's key in a Pool.
func (c *Conn) Addr() string { return c.addr }

// Reader reads the upstream's responses. Its buffer is borrowed until
// Release.
func (c *Conn) Reader() *bufio.Reader {
	if c.br == nil {
		c.br = readers.Get().(*bufio.Reader)
		c.br.Reset(connReader{c})
	}
	return c.br
}

// Buffered is how many bytes were read from the upstream and not yet
// consumed.
func (c *Conn) Buffered() int {
	if c.br == nil {
		return len(c.unread)
	}
	return c.br.Buffered() + len(c.unread)
}

// Unread gives back bytes read from the connection's socket directly
// (the h1 event loop's reads): the reads that follow return them before
// anything newer. b is copied. Only while nothing is buffered.
func (c *Conn) Unread(b []byte) {
	if len(b) > 0 {
		c.unread = append(c.unread[:0], b...)
	}
}

// Raw is the connection's socket (nil if it is not one), for the event
// loop's non-blocking reads.
func (c *Conn) Raw() syscall.RawConn { return c.probe.Raw() }

// Release gives the read buffer back when nothing is buffered in it (a
// later Reader borrows one again); with bytes buffered it does nothing.
func (c *Conn) Release() {
	if c.br != nil && c.br.Buffered() == 0 {
		c.br.Reset(nil)
		readers.Put(c.br)
		c.br = nil
	}
}

// Wait returns once the upstream has sent something (or closed the
// connection), holding no buffer meanwhile, within the bounds of Bound;
// at once if bytes are buffered.
func (c *Conn) Wait() error {
	if c.Buffered() > 0 {
		return nil
	}
	for {
		if err := c.arm(); err != nil {
			return err
		}
		err := c.probe.Wait()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if c.watch != nil && c.watch.Gone() {
				return ErrClientGone
			}
			continue
		}
		return err
	}
}

// Write writes to the upstream.
func (c *Conn) Write(b []byte) (int, error) { return c.probe.Write(b) }

// Send writes b, a whole request, to the upstream and returns once its
// answer has begun to come (or the upstream closed, or a wait of Bound's
// ended: the reads that follow take it from there) without first trying
// a read that finds nothing (sockprobe.Probe.Send). An error is the
// write's: the request did not get out whole.
func (c *Conn) Send(b []byte) error {
	if c.Buffered() > 0 {
		_, err := c.probe.Write(b)
		return err
	}
	if err := c.arm(); err != nil {
		return err
	}
	err := c.probe.Send(b)
	c.armed = err == nil
	return err
}

// Close closes the connection (at once: it also ends a blocked read). It
// may be called from another goroutine, so it leaves the read buffer to
// the garbage collector rather than to the pool.
func (c *Conn) Close() error { return c.nc.Close() }

// Usable reports, with one non-blocking peek, whether the upstream has not
// closed an idle connection (nor sent anything unasked on it).
func (c *Conn) Usable() bool {
	return c.Buffered() == 0 && c.probe.State() == sockprobe.Empty
}

// Bound makes the reads that follow fail with ErrHeadTimeout after until
// (zero: no deadline) and with ErrClientGone once w reports its client
// gone (nil: nobody to watch). Bound(nil, time.Time{}) lifts both.
func (c *Conn) Bound(w Watcher, until time.Time) {
	c.watch, c.until, c.armed = w, until, false
}

// Clock gives the connection the current time as its user has just read
// it: the next read (or Wait, or Send) reckons its bounds from it instead
// of reading the clock itself — a clock reading costs as much as the rest
// of a read's bookkeeping. A read that waited out a deadline reads the
// clock again.
func (c *Conn) Clock(now time.Time) { c.now = now }

// arm sets the read deadline the bounds call for: none without bounds,
// else the next poll of the watcher or the bound, whichever is sooner;
// ErrHeadTimeout once the bound has passed. The deadline is renewed only
// when half of a poll is gone: a timer update per read would cost more
// than the read's bookkeeping.
func (c *Conn) arm() error {
	now := c.now
	c.now = time.Time{}
	if c.watch == nil && c.until.IsZero() {
		if !c.deadline.IsZero() {
			c.deadline = time.Time{}
			_ = c.nc.SetReadDeadline(c.deadline)
		}
		return nil
	}
	if now.IsZero() {
		now = time.Now()
	}
	if !c.until.IsZero() && !now.Before(c.until) {
		return ErrHeadTimeout
	}
	every := PollEvery
	if c.until.IsZero() {
		every = StreamPollEvery
	}
	target := c.until
	if c.watch != nil && (target.IsZero() || now.Add(every).Before(target)) {
		target = now.Add(every)
	}
	if c.deadline.IsZero() || c.deadline.After(target) || (c.deadline.Sub(now) < every/2 && c.deadline.Before(target)) {
		c.deadline = target
		_ = c.nc.SetReadDeadline(target)
	}
	return nil
}

// connReader reads from the upstream within the connection's bounds.
type connReader struct{ c *Conn }

func (r connReader) Read(b []byte) (int, error) {
	c := r.c
	if len(c.unread) > 0 {
		n := copy(b, c.unread)
		c.unread = c.unread[n:]
		if len(c.unread) == 0 {
			c.unread = nil
		}
		return n, nil
	}
	for {
		if c.armed {
			// Send's wait ended: the answer has begun to come (the read
			// returns it), or the deadline passed (the read says so and
			// the next round arms again).
			c.armed = false
		} else if err := c.arm(); err != nil {
			return 0, err
		}
		n, err := c.probe.Read(b)
		if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && (c.watch != nil || !c.until.IsZero()) {
			if c.watch != nil && c.watch.Gone() {
				return 0, ErrClientGone
			}
			continue
		}
		return n, err
	}
}
