package h1

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/infergate/infergate/services/gateway/internal/bounds"
	"github.com/infergate/infergate/services/gateway/internal/sockprobe"
)

// Conn is one client connection the fast path serves. A Handler uses it
// for the request it is given, on the connection's own goroutine.
type Conn struct {
	s  *Server
	nc net.Conn
	// probe tells whether the client has gone.
	probe sockprobe.Probe
	h     Handler
	log   *slog.Logger
	dial  DialFunc
	hl    *handoffListener

	// buf holds what was read from the client and not yet used:
	// buf[r:w]. It is borrowed (connBufs) and given back while a
	// response streams with nothing of the client's pending.
	buf  []byte
	bufp *[]byte // buf's pool entry
	r, w int
	// head is the current request's head, copied out of buf: req's
	// strings point into it (buf is compacted between requests and given
	// back while a response streams), and it is used again for the next
	// request, so a request costs no allocation and req's strings are
	// valid until the handler returns.
	head []byte
	req  Request
	// headLen is the current request head's length at buf[r:].
	headLen int
	// taken: the handler took the current request (its head is
	// consumed, it can no longer go to net/http).
	taken bool
	// bodyLeft is the current request's body not yet read.
	bodyLeft int64
	// closeAfter: close the connection after the current response.
	closeAfter bool
	// tap is the request's Tap while Forward relays its response.
	tap io.Writer
	// rl is the response body being relayed (Forward).
	rl relay
	// pk is the stream's state while an event loop carries it.
	pk parking
	// deadline is the read deadline set on nc; zero: none.
	deadline time.Time
	// wroteAt is when the write deadline was last set.
	wroteAt time.Time
	// clock is a clock reading taken since the connection last waited
	// (for the client or the upstream); zero: none (now).
	clock time.Time
	// served counts the requests answered on the connection.
	served int
	// linger: the connection closes with a request body unread (a
	// refusal answered without waiting for it); close it gently, so
	// the client reads the answer instead of a reset.
	linger bool

	// remoteIP is the client's address without port, for
	// X-Forwarded-For; "" if it has none.
	remoteIP string

	state atomic.Int32
}

const (
	stateIdle int32 = iota
	stateActive
	stateClosing
)

const readBufSize = 8 << 10

func newConn(s *Server, nc net.Conn, hb *handlerBox, hl *handoffListener) *Conn {
	c := &Conn{s: s, nc: nc, h: hb.h, log: hb.log, dial: hb.dial, hl: hl}
	c.probe.Init(nc)
	if host, _, err := net.SplitHostPort(nc.RemoteAddr().String()); err == nil {
		c.remoteIP = host
	}
	return c
}

// closeIfIdle closes the connection if it is waiting for a request (at
// shutdown).
func (c *Conn) closeIfIdle() {
	if c.state.CompareAndSwap(stateIdle, stateClosing) {
		_ = c.nc.Close()
	}
}

func (c *Conn) serve() {
	defer c.s.forget(c)
	defer func() {
		// As net/http does: a panic ends the connection, not the process.
		if p := recover(); p != nil {
			_ = c.nc.Close()
			c.log.Error("h1: panic serving a connection", "remote", c.nc.RemoteAddr().String(), "panic", p, "stack", string(debug.Stack()))
		}
	}()
	if !c.loop() {
		if c.linger {
			c.closeGently()
		}
		_ = c.nc.Close()
		c.r, c.w = 0, 0
		c.releaseBuf()
	}
}

// releaseBuf gives the read buffer back when nothing is pending in it.
func (c *Conn) releaseBuf() {
	if c.bufp != nil && c.r == c.w {
		connBufs.Put(c.bufp)
		c.buf, c.bufp, c.r, c.w = nil, nil, 0, 0
	}
}

// closeGently sends the client a FIN and reads what it still sends for a
// moment (as net/http does): closing a socket with unread bytes would
// reset the connection, and the reset can destroy the answer before the
// client has read it.
func (c *Conn) closeGently() {
	type closeWriter interface{ CloseWrite() error }
	cw, ok := c.nc.(closeWriter)
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(lingerFor))
	_, _ = io.CopyN(io.Discard, c.nc, lingerBytes)
}

const (
	lingerFor   = 500 * time.Millisecond
	lingerBytes = 256 << 10
)

// loop serves requests until the connection closes (false) or is handed
// to net/http (true).
func (c *Conn) loop() bool {
	b := &c.s.Bounds
	for {
		if c.bufp == nil {
			c.bufp = connBufs.Get().(*[]byte)
			c.buf = *c.bufp
		}
		if c.r > 0 {
			c.w = copy(c.buf, c.buf[c.r:c.w])
			c.r = 0
		}
		c.state.Store(stateIdle)
		if c.s.closingNow() {
			return false
		}
		// The first byte of a new connection must come within the head
		// bound, the first of a later request within the idle bound,
		// and a head that does not come whole in one read within the
		// head bound of its first byte.
		n := headEnd(c.buf[:c.w])
		if c.w == 0 {
			// Let the other connections' goroutines run first: by the
			// time this one reads, the client's next request has often
			// arrived, and a read that would find nothing (a syscall, a
			// park and a wake-up through the poller) is saved. With
			// nothing else to run, Gosched returns at once.
			runtime.Gosched()
			if c.served == 0 {
				c.setDeadline(b.Head)
			} else {
				c.setDeadline(b.Idle)
			}
		} else if n < 0 {
			c.setDeadline(b.Head)
		}
		if n < 0 {
			c.waits()
		}
		for n < 0 {
			if c.w == len(c.buf) {
				// A head larger than the buffer: net/http's limits apply.
				return c.handoff()
			}
			first := c.w == 0
			k, err := c.probe.Read(c.buf[c.w:])
			c.w += k
			if n = headEnd(c.buf[:c.w]); n < 0 && err != nil {
				return false
			}
			if n < 0 && first && k > 0 && c.served > 0 {
				c.setDeadline(b.Head)
				c.waits()
			}
		}
		if !c.state.CompareAndSwap(stateIdle, stateActive) {
			return false // shutting down
		}
		c.head = append(c.head[:0], c.buf[:n]...)
		if !c.req.parse(unsafe.String(unsafe.SliceData(c.head), n), MaxBody) {
			return c.handoff()
		}
		c.headLen, c.taken = n, false
		c.bodyLeft = max(c.req.ContentLength, 0)
		c.closeAfter = c.req.Close
		if !c.h.ServeH1(c, &c.req) {
			if c.taken {
				panic("h1: handler declined a request it had answered")
			}
			return c.handoff()
		}
		c.served++
		if !c.taken || c.closeAfter || c.bodyLeft > 0 {
			return false
		}
	}
}

// setDeadline makes reads on the client connection fail d from now
// (d <= 0: never). It leaves a deadline up to a second later than asked
// in place: a timer update per request would cost more than the rest of
// the bookkeeping, and a second more or less on a 10 s or 2 min timeout
// changes nothing.
func (c *Conn) setDeadline(d time.Duration) {
	if d <= 0 {
		if !c.deadline.IsZero() {
			_ = c.nc.SetReadDeadline(time.Time{})
			c.deadline = time.Time{}
		}
		return
	}
	want := c.now().Add(d)
	if c.deadline.IsZero() || c.deadline.Before(want) || c.deadline.Sub(want) > time.Second {
		c.deadline = want.Add(time.Second)
		_ = c.nc.SetReadDeadline(c.deadline)
	}
}

// now is the current time: the connection's clock reading, taken if it
// has none. A reading is good until the connection waits for its client
// or its upstream (waits forgets it): every use of it — deadlines set
// with a second's slack, the idle pool's bookkeeping — tolerates one a
// few milliseconds old, and a request served in one go reads the clock
// three times instead of nine (a reading costs 50-60 ns on these
// virtual machines, 2-3 % of a proxied request's CPU).
func (c *Conn) now() time.Time {
	if c.clock.IsZero() {
		c.clock = time.Now()
	}
	return c.clock
}

// waits forgets the clock reading: the connection is about to wait.
func (c *Conn) waits() { c.clock = time.Time{} }

// handoff gives the connection, with what was read and not used, to
// net/http.
func (c *Conn) handoff() bool {
	c.setDeadline(0)
	if !c.wroteAt.IsZero() {
		// net/http sets its own, or none.
		_ = c.nc.SetWriteDeadline(time.Time{})
	}
	var pre []byte
	if c.w > c.r {
		pre = c.buf[c.r:c.w]
	}
	c.buf, c.bufp = nil, nil // the prefix is net/http's now
	c.s.forgetSoon(c)
	c.hl.push(&prefixConn{Conn: c.nc, pre: pre})
	return true
}

// take consumes the current request's head: from now on the request is
// the handler's.
func (c *Conn) take() {
	if !c.taken {
		c.taken = true
		c.r += c.headLen
	}
}

// RemoteIP is the client's IP address ("" if unknown).
func (c *Conn) RemoteIP() string { return c.remoteIP }

// appendBody appends the request's body to b. The body must come
// within its bound (bounds.Bounds.BodyDeadline); one that does not fails
// with bounds.ErrBodyTimeout, and the connection closes.
func (c *Conn) appendBody(b []byte) ([]byte, error) {
	if c.bodyLeft == 0 {
		return b, nil
	}
	k := min(int64(c.w-c.r), c.bodyLeft)
	b = append(b, c.buf[c.r:c.r+int(k)]...)
	c.r += int(k)
	c.bodyLeft -= k
	if c.bodyLeft == 0 {
		return b, nil
	}
	n := len(b)
	b = growTo(b, n+int(c.bodyLeft))
	start, got := c.now(), int64(0)
	defer c.waits()
	for c.bodyLeft > 0 {
		c.deadline = c.s.Bounds.BodyDeadline(start, got)
		_ = c.nc.SetReadDeadline(c.deadline)
		k, err := c.probe.Read(b[n:])
		n += k
		got += int64(k)
		c.bodyLeft -= int64(k)
		if err != nil && c.bodyLeft > 0 {
			c.closeAfter = true
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("%w: %w", bounds.ErrBodyTimeout, err)
			} else if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return b[:n], err
		}
	}
	return b, nil
}

func growTo(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	nb := make([]byte, n)
	copy(nb, b)
	return nb
}

// Answer writes a whole response: status, the header lines in header
// (each ending in CRLF), Content-Length, Date, and body. It does not
// wait for the request's body: what of it has come is dropped, and if
// more was to come the connection closes after the answer.
func (c *Conn) Answer(status int, header string, body []byte) error {
	c.take()
	if c.bodyLeft > 0 {
		k := min(int64(c.w-c.r), c.bodyLeft)
		c.r += int(k)
		c.bodyLeft -= k
		if c.bodyLeft > 0 {
			c.closeAfter, c.linger = true, true
		}
	}
	bp := getBuf()
	defer putBuf(bp)
	b := appendStatus((*bp)[:0], status)
	b = append(b, header...)
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n"...)
	b = appendDate(b)
	b = c.appendConnection(b)
	b = append(b, "\r\n"...)
	b = append(b, body...)
	if err := c.write(b); err != nil {
		c.closeAfter = true
		return err
	}
	return nil
}

// appendConnection ends the head with "Connection: close" when the
// connection closes after this response.
func (c *Conn) appendConnection(b []byte) []byte {
	if c.closeAfter || c.s.closingNow() {
		c.closeAfter = true
		b = append(b, "Connection: close\r\n"...)
	}
	return b
}

func appendStatus(b []byte, status int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, ' ')
	if t := statusText(status); t != "" {
		b = append(b, t...)
	} else {
		b = append(b, "status code "...)
		b = strconv.AppendInt(b, int64(status), 10)
	}
	return append(b, "\r\n"...)
}

// Gone reports, without blocking, whether the client has closed the
// connection (or reset it): keepalive.Watcher, asked while the request
// waits for its upstream. Bytes waiting (a pipelined request) mean it
// has not.
func (c *Conn) Gone() bool {
	if c.w > c.r {
		return false
	}
	return c.probe.State() == sockprobe.Closed
}

// Buffers. sync.Pools: the garbage collector empties them, so what a
// burst of streams borrowed is not kept once they are gone.

// connBufs are the client connections' read buffers.
var connBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 48<<10); return &b }}

func getBuf() *[]byte { return bufs.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if b != nil && cap(*b) == 48<<10 {
		*b = (*b)[:0]
		bufs.Put(b)
	}
}

// Date header, formatted once a second.

type dateCache struct {
	sec  int64
	line []byte // "Date: ...\r\n"
}

var date atomic.Pointer[dateCache]

func appendDate(b []byte) []byte {
	now := time.Now()
	d := date.Load()
	if d == nil || d.sec != now.Unix() {
		line := append([]byte("Date: "), now.UTC().AppendFormat(nil, "Mon, 02 Jan 2006 15:04:05 GMT")...)
		d = &dateCache{sec: now.Unix(), line: append(line, "\r\n"...)}
		date.Store(d)
	}
	return append(b, d.line...)
}
