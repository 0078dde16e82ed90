package h1

import (
	"bufio"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// upstreams is the fast path's keep-alive client pool: idle connections
// by host:port, most recent last. A request is one write and its response
// is read on the client connection's goroutine.
type upstreams struct {
	mu sync.Mutex // mu protects idle
	// idle are the idle connections by address.
	idle map[string][]*upConn
}

const (
	maxIdlePerHost  = 1024
	upIdleTimeout   = 90 * time.Second
	dialTimeout     = 10 * time.Second
	upReadBufSize   = 32 << 10
	clientPollEvery = time.Second
)

var dialer = net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}

type upConn struct {
	nc       net.Conn
	raw      syscall.RawConn
	br       *bufio.Reader
	addr     string
	idleFrom time.Time
	// client is the connection whose request this one carries; its
	// reads give up when that client has gone.
	client *Conn
	// deadline is the read deadline set on nc.
	deadline time.Time
	// peek is open's non-blocking peek, made once per connection so that
	// checking a pooled connection allocates nothing; it sets alive.
	peek  func(fd uintptr)
	alive bool
}

// get returns an idle connection to addr that is still open, or a new one.
func (u *upstreams) get(addr string) (*upConn, bool, error) {
	now := time.Now()
	for {
		u.mu.Lock()
		list := u.idle[addr]
		if len(list) == 0 {
			u.mu.Unlock()
			break
		}
		c := list[len(list)-1]
		list[len(list)-1] = nil
		u.idle[addr] = list[:len(list)-1]
		u.mu.Unlock()
		if now.Sub(c.idleFrom) < upIdleTimeout && c.open() {
			return c, true, nil
		}
		_ = c.nc.Close()
	}
	nc, err := dialer.Dial("tcp", addr)
	if err != nil {
		return nil, false, err
	}
	c := &upConn{nc: nc, addr: addr}
	c.br = bufio.NewReaderSize(pollReader{c}, upReadBufSize)
	c.peek = func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		c.alive = n < 0 && errors.Is(err, syscall.EAGAIN)
	}
	if sc, ok := nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	return c, false, nil
}

// open reports, with one non-blocking peek, whether the upstream has not
// closed an idle connection (nor sent anything unasked on it).
func (c *upConn) open() bool {
	if c.br.Buffered() > 0 || c.raw == nil {
		return false
	}
	c.alive = false
	err := c.raw.Control(c.peek)
	return err == nil && c.alive
}

// put returns c to the idle pool.
func (u *upstreams) put(c *upConn) {
	c.client = nil
	c.idleFrom = time.Now()
	u.mu.Lock()
	if u.idle == nil {
		u.idle = map[string][]*upConn{}
	}
	list := u.idle[c.addr]
	if len(list) > 0 && c.idleFrom.Sub(list[0].idleFrom) > upIdleTimeout {
		// The oldest has waited too long: let it go (one per put keeps
		// the pool from holding a burst's connections for ever).
		old := list[0]
		list = list[1:]
		defer old.nc.Close()
	}
	if len(list) >= maxIdlePerHost {
		u.idle[c.addr] = list
		u.mu.Unlock()
		_ = c.nc.Close()
		return
	}
	u.idle[c.addr] = append(list, c)
	u.mu.Unlock()
}

func (u *upstreams) closeIdle() {
	u.mu.Lock()
	idle := u.idle
	u.idle = nil
	u.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			_ = c.nc.Close()
		}
	}
}

// errClientGone ends an upstream read whose client has gone away.
var errClientGone = errors.New("h1: client went away")

// pollReader reads from the upstream with a deadline, and at each
// deadline checks whether the client is still there: the fast path has
// no goroutine watching the client while it waits for the upstream, so a
// client that leaves a slow request or a silent stream is noticed within
// clientPollEvery, and its upstream request ends.
type pollReader struct{ c *upConn }

func (p pollReader) Read(b []byte) (int, error) {
	c := p.c
	for {
		now := time.Now()
		// Renew the deadline only when half of it is gone: a timer
		// update per read would cost more than the read's bookkeeping.
		if c.deadline.Sub(now) < clientPollEvery/2 {
			c.deadline = now.Add(clientPollEvery)
			_ = c.nc.SetReadDeadline(c.deadline)
		}
		n, err := c.nc.Read(b)
		if n == 0 && errors.Is(err, errDeadline) {
			if c.client != nil && c.client.gone() {
				return 0, errClientGone
			}
			continue
		}
		return n, err
	}
}
