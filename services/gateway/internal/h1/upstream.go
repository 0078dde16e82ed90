package h1

import (
	"context"
	"net"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/keepalive"
)

// upstreams is the fast path's keep-alive client: idle connections by
// host:port (keepalive.Pool). A request is one write and its response is
// read on the client connection's goroutine.
type upstreams struct {
	idle keepalive.Pool[*keepalive.Conn]
}

// dialer connects for a Handler that is not a Dialer (the connect bound
// is get's context).
var dialer = net.Dialer{KeepAlive: 30 * time.Second}

// get returns an idle connection to addr that is still open, or a new one
// made with dial within ctx and the connect bound. now is the current
// time.
func (u *upstreams) get(ctx context.Context, connect time.Duration, addr string, dial DialFunc, now time.Time) (*keepalive.Conn, bool, error) {
	if c, ok := u.idle.Get(addr, now); ok {
		return c, true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, connect)
	defer cancel()
	c, err := keepalive.Dial(ctx, dial, addr)
	return c, false, err
}

// put returns c to the idle pool. now is the current time.
func (u *upstreams) put(c *keepalive.Conn, now time.Time) {
	c.Bound(nil, time.Time{})
	c.Release()
	u.idle.Put(c.Addr(), c, now)
}

func (u *upstreams) closeIdle() { u.idle.CloseIdle() }
