package h1

import (
	"bufio"
	"context"
	"errors"
	"net"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/keepalive"
)

// upstreams is the fast path's keep-alive client: idle connections by
// host:port (keepalive.Pool). A request is one write and its response is
// read on the client connection's goroutine.
type upstreams struct {
	idle keepalive.Pool[*upConn]
}

const (
	dialTimeout     = 10 * time.Second
	upReadBufSize   = 32 << 10
	clientPollEvery = time.Second
)

// dialer connects for a Handler that is not a Dialer.
var dialer = net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}

type upConn struct {
	nc   net.Conn
	br   *bufio.Reader
	addr string
	live *keepalive.Liveness
	// client is the connection whose request this one carries; its
	// reads give up when that client has gone.
	client *Conn
	// deadline is the read deadline set on nc.
	deadline time.Time
}

// get returns an idle connection to addr that is still open, or a new one
// made with dial.
func (u *upstreams) get(addr string, dial DialFunc) (*upConn, bool, error) {
	if c, ok := u.idle.Get(addr); ok {
		return c, true, nil
	}
	nc, err := dial(context.Background(), "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	c := &upConn{nc: nc, addr: addr, live: keepalive.NewLiveness(nc)}
	c.br = bufio.NewReaderSize(pollReader{c}, upReadBufSize)
	return c, false, nil
}

// Usable reports, with one non-blocking peek, whether the upstream has not
// closed an idle connection (nor sent anything unasked on it).
func (c *upConn) Usable() bool { return c.br.Buffered() == 0 && c.live.Open() }

func (c *upConn) Close() error { return c.nc.Close() }

// put returns c to the idle pool.
func (u *upstreams) put(c *upConn) {
	c.client = nil
	u.idle.Put(c.addr, c)
}

func (u *upstreams) closeIdle() { u.idle.CloseIdle() }

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
