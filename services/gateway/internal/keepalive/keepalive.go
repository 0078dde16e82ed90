// Package keepalive keeps the gateway's idle keep-alive connections to
// upstreams — for the HTTP/1.1 fast path and for the net/http path's
// synchronous client alike — and tells, with one non-blocking peek,
// whether a pooled connection can still carry a request.
package keepalive

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Defaults of a Pool.
const (
	DefaultMaxPerHost  = 1024
	DefaultIdleTimeout = 90 * time.Second
)

// Conn is what a Pool needs of a connection.
type Conn interface {
	// Usable reports whether the idle connection can carry another
	// request: the upstream has not closed it, nor sent anything unasked.
	Usable() bool
	Close() error
}

// Pool holds idle connections by address, most recent last. The zero value
// is ready to use, with the defaults.
type Pool[C Conn] struct {
	// MaxPerHost is how many idle connections an address keeps; 0:
	// DefaultMaxPerHost.
	MaxPerHost int
	// IdleTimeout is how long a connection may stay idle; 0:
	// DefaultIdleTimeout.
	IdleTimeout time.Duration

	mu   sync.Mutex // mu protects idle
	idle map[string][]entry[C]
}

type entry[C Conn] struct {
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
// there is none.
func (p *Pool[C]) Get(addr string) (C, bool) {
	now := time.Now()
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
// for ever).
func (p *Pool[C]) Put(addr string, c C) {
	now := time.Now()
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

// Liveness checks a connection's socket with one non-blocking peek: open
// means the upstream has neither closed it nor sent anything. The peek
// function is made once per connection, so a check allocates nothing.
// Only the connection's current user may call Open.
type Liveness struct {
	raw   syscall.RawConn
	peek  func(fd uintptr)
	alive bool
}

// NewLiveness returns the check for nc; for a connection without a
// socket (not a syscall.Conn) Open is always false.
func NewLiveness(nc net.Conn) *Liveness {
	l := &Liveness{}
	if sc, ok := nc.(syscall.Conn); ok {
		l.raw, _ = sc.SyscallConn()
	}
	l.peek = func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		l.alive = n < 0 && (errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK))
	}
	return l
}

// Open reports whether the connection is still open and silent.
func (l *Liveness) Open() bool {
	if l.raw == nil {
		return false
	}
	l.alive = false
	err := l.raw.Control(l.peek)
	return err == nil && l.alive
}
