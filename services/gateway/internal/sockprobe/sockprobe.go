// Package sockprobe tells, without blocking and without consuming
// anything, what waits on a connection's socket: nothing, data, or the
// peer's close. The gateway asks it whether a pooled upstream connection
// can still carry a request and whether a client that is waiting for an
// upstream has gone. Its Read and Write are the gateway's socket I/O on
// its hot path: on Linux raw system calls, which the Go scheduler does
// not hand the thread's P away around (rawio_linux.go).
//
// It peeks with recv(MSG_PEEK|MSG_DONTWAIT) on Linux; elsewhere every
// probe answers Unknown and callers take the safe side (an idle upstream
// connection is not reused; a client is assumed present until a read or
// write to it fails or a time bound ends the request).
package sockprobe

import (
	"io"
	"net"
	"os"
	"syscall"
)

// State is what a probe found.
type State int8

// The states.
const (
	// Unknown: the connection is not a socket, or the platform cannot
	// peek.
	Unknown State = iota
	// Empty: open, nothing to read.
	Empty
	// Data: bytes wait to be read.
	Data
	// Closed: the peer closed or reset the connection.
	Closed
)

// Probe checks one connection. The functions handed to the socket are
// made once, in Init, so a check allocates nothing. Only the connection's
// current user may call its methods (a Read and a Write may run at once,
// from two goroutines; a Send is a Write).
type Probe struct {
	nc   net.Conn
	raw  syscall.RawConn
	peek func(fd uintptr)
	st   State
	// rd and wr are Read's and Write's functions, with their state.
	rd, wr     func(fd uintptr) bool
	rb, wb     []byte
	rn, wn     int
	rerr, werr error
	// full: the last Write found the socket full and waited for room.
	full bool
	// send is Send's function; begun: it has been called once already.
	send  func(fd uintptr) bool
	begun bool
	// wait is Wait's function; woke: it has been called once already.
	wait func(fd uintptr) bool
	woke bool
}

// Init makes p the probe of nc.
func (p *Probe) Init(nc net.Conn) {
	*p = Probe{nc: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		p.raw, _ = sc.SyscallConn()
	}
	if p.raw != nil && canPeek {
		p.peek = func(fd uintptr) { p.st = peek(fd) }
		p.wait = func(fd uintptr) bool {
			// The first call asks the socket (nothing there: the poller
			// parks the goroutine); the next comes after the poller
			// woke it, which means something came, so it does not ask
			// again: a wait costs the syscalls of a read that finds
			// nothing, as a blocking read would.
			if p.woke {
				return true
			}
			p.woke = true
			st := peek(fd)
			for st == Unknown {
				st = peek(fd)
			}
			return st != Empty
		}
	}
	if p.raw != nil && rawIO {
		p.rd = func(fd uintptr) bool {
			n, errno := rawRead(fd, p.rb)
			switch errno {
			case 0:
				if n == 0 {
					p.rerr = io.EOF
				}
				p.rn = n
			case syscall.EAGAIN:
				return false
			default:
				p.rerr = os.NewSyscallError("read", errno)
			}
			return true
		}
		p.wr = func(fd uintptr) bool {
			for p.wn < len(p.wb) {
				n, errno := rawWrite(fd, p.wb[p.wn:])
				switch errno {
				case 0:
					p.wn += n
				case syscall.EAGAIN:
					p.full = true
					return false
				default:
					p.werr = os.NewSyscallError("write", errno)
					return true
				}
			}
			return true
		}
		p.send = func(fd uintptr) bool {
			if p.begun {
				return true // readable: the answer has begun
			}
			p.begun = true
			// Write as Write does. All of it gone: wait for the answer;
			// the socket full or an error: return (Send goes on).
			return !p.wr(fd) || p.werr != nil
		}
	}
}

// Send writes b whole and returns once the peer has sent something back
// or closed the connection, or the read deadline has passed (the reads
// that follow see which) — without the read that would first find
// nothing: the write is made from inside the read's wait, after the
// poller is armed, so an answer however quick wakes it. An error is the
// write's. Where the probe has no raw I/O it is Write.
func (p *Probe) Send(b []byte) error {
	if p.send == nil || len(b) == 0 {
		_, err := p.Write(b)
		return err
	}
	p.wb, p.wn, p.werr, p.begun = b, 0, nil, false
	rerr := p.raw.Read(p.send)
	n, werr, begun := p.wn, p.werr, p.begun
	p.wb, p.werr = nil, nil
	switch {
	case werr != nil:
		return werr
	case !begun:
		// The wait could not start (a deadline already passed, or the
		// connection is closed): write as usual, which fails as it
		// should or leaves the deadline to the reads that follow.
		_, err := p.Write(b)
		return err
	case n < len(b):
		// The socket took part of it: the rest waits for room.
		_, err := p.Write(b[n:])
		return err
	}
	_ = rerr // the read deadline: the reads that follow handle it
	return nil
}

// Read reads from the connection as its Read does, within its read
// deadline; on Linux the read itself is a raw system call (rawio_linux.go
// says why).
func (p *Probe) Read(b []byte) (int, error) {
	if p.rd == nil || len(b) == 0 {
		return p.nc.Read(b)
	}
	p.rb, p.rn, p.rerr = b, 0, nil
	err := p.raw.Read(p.rd)
	p.rb = nil
	if err != nil {
		return 0, err
	}
	return p.rn, p.rerr
}

// Write writes b whole to the connection as its Write does, within its
// write deadline; on Linux each write is a raw system call.
func (p *Probe) Write(b []byte) (int, error) {
	if p.wr == nil || len(b) == 0 {
		p.full = true // it may have waited
		return p.nc.Write(b)
	}
	p.wb, p.wn, p.werr, p.full = b, 0, nil, false
	err := p.raw.Write(p.wr)
	p.wb = nil
	if err == nil {
		err = p.werr
	}
	return p.wn, err
}

// Waited reports whether the last Write may have waited for room in the
// socket (true when it cannot tell).
func (p *Probe) Waited() bool { return p.full }

// Wait blocks until the peer has sent something or closed the
// connection, without reading: a goroutine waiting on a long, mostly
// silent connection (an SSE stream between tokens) then needs no read
// buffer meanwhile. It honours the connection's read deadline (an error
// that is os.ErrDeadlineExceeded). Where the platform cannot peek it
// returns at once, and the read that follows blocks instead.
func (p *Probe) Wait() error {
	if p.wait == nil {
		return nil
	}
	p.woke = false
	return p.raw.Read(p.wait)
}

// Raw is the probed socket (nil when the connection is not one).
func (p *Probe) Raw() syscall.RawConn { return p.raw }

// State peeks at the socket.
func (p *Probe) State() State {
	if p.peek == nil {
		return Unknown
	}
	p.st = Unknown
	if err := p.raw.Control(p.peek); err != nil {
		return Closed // the descriptor is gone: closed locally
	}
	return p.st
}
