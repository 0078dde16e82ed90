//go:build linux

package h1

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/infergate/infergate/services/gateway/internal/keepalive"
	"github.com/infergate/infergate/services/gateway/internal/pace"
	"github.com/infergate/infergate/services/gateway/internal/sockprobe"
)

// An event loop carries streams between their chunks. A stream whose
// response body is chunked or close-delimited (SSE) spends its life
// waiting for the upstream's next chunk; instead of one goroutine per
// stream parking in Go's poller for every chunk (a wake-up, a read, a
// write, a read that finds nothing, a park: and the scheduler's thread
// hand-offs around each slow syscall), the stream is parked here: the
// loop watches every parked stream's upstream socket with one epoll set
// of its own (itself waited on through Go's poller), and for each chunk
// that comes it does one read, decodes it (chunkedReader.scan), gives it
// to the request's tap and writes it to the client — one read and one
// write per chunk, on one goroutine for many streams, with one buffer.
//
// The loop takes only the steady state. Anything else — a size line cut
// by a read, the last chunk and its trailer, extensions, anything
// malformed, the upstream's end or error, a client that does not take a
// write at once — hands the stream back to its goroutine, with the bytes
// the loop read and did not use given back to the upstream connection
// (keepalive.Conn.Unread) and the bytes the client did not take to write:
// relay then goes on as it always does, with the same decoder, the same
// bounds and the same errors. A client that closes its connection is
// noticed at once (EPOLLRDHUP) and its stream handed back with
// keepalive.ErrClientGone.
type loop struct {
	epfd int
	file *os.File // epfd, waited on through Go's poller
	raw  syscall.RawConn

	mu     sync.Mutex // mu protects what follows, and epfd's set
	closed bool
	slots  []*Conn
	gens   []uint32
	free   []int32

	// Used by the loop's goroutine only.
	evs [128]syscall.EpollEvent
	in  []byte
	out []byte
	// readFn and writeFn are read and writeTo, with their results in
	// rn, rerr and wn, werr; writeFn writes wbuf.
	readFn, writeFn func(uintptr)
	// delFn takes a socket out of the set.
	delFn      func(uintptr)
	rn, wn     int
	rerr, werr error
	wbuf       []byte
}

// loops are a server's event loops, one per P.
type loops struct {
	all  []*loop
	next atomic.Uint32
	// parks counts the streams parked so far, backs those handed back.
	parks, backs atomic.Uint64
}

// parking is a Conn's state while its stream is parked.
type parking struct {
	uc   *keepalive.Conn
	rl   *relay
	done chan parked
}

// parked is how a parked stream came back: bytes the client has still
// to be sent, or an error that ends the relay.
type parked struct {
	pending []byte
	err     error
}

// clientEvent marks the client socket's events (in the event's Pad).
const clientEvent = 1 << 31

// yieldEvery is how many events a busy loop carries between two looks at
// the clock (pace.Pacer).
const yieldEvery = 256

// loopHole is the room kept before a chunk's data for its size line.
const loopHole = 18

func newLoops(n int) *loops {
	ls := &loops{}
	for range n {
		l, err := newLoop()
		if err != nil {
			// No loop: streams wait on their own goroutines.
			ls.close()
			return nil
		}
		ls.all = append(ls.all, l)
		go l.run()
	}
	return ls
}

func newLoop() (*loop, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "h1-relay-loop")
	raw, err := f.SyscallConn()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	l := &loop{
		epfd: fd, file: f, raw: raw,
		in:  make([]byte, keepalive.ReadBufSize),
		out: make([]byte, loopHole+keepalive.ReadBufSize+2),
	}
	l.readFn, l.writeFn, l.delFn = l.read, l.writeTo, l.del
	return l, nil
}

// close hands every parked stream back with net.ErrClosed-like errors
// and stops the loops.
func (ls *loops) close() {
	if ls == nil {
		return
	}
	for _, l := range ls.all {
		l.close()
	}
}

// parked reports how many streams are parked now and how many times a
// stream was parked so far.
func (ls *loops) parked() (now, total uint64) {
	if ls == nil {
		return 0, 0
	}
	back, total := ls.backs.Load(), ls.parks.Load()
	return total - min(back, total), total
}

var errLoopClosed = errors.New("h1: the server is closing")

func (l *loop) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	for slot, c := range l.slots {
		if c != nil {
			l.unparkLocked(c, int32(slot), parked{err: errLoopClosed})
		}
	}
	l.mu.Unlock()
	_ = l.file.Close()
}

// park hands c's stream to a loop until it comes back; false when no
// loop took it (the caller waits on its own).
func (ls *loops) park(c *Conn, uc *keepalive.Conn, rl *relay) (parked, bool) {
	if ls == nil || rl.noLoop {
		return parked{}, false
	}
	craw, uraw := c.probe.Raw(), uc.Raw()
	if craw == nil || uraw == nil {
		return parked{}, false
	}
	l := ls.all[int(ls.next.Add(1))%len(ls.all)]
	if c.pk.done == nil {
		c.pk.done = make(chan parked, 1)
	}
	c.pk.uc, c.pk.rl = uc, rl
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return parked{}, false
	}
	var slot int32
	if n := len(l.free); n > 0 {
		slot = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		slot = int32(len(l.slots))
		l.slots = append(l.slots, nil)
		l.gens = append(l.gens, 0)
	}
	l.gens[slot]++
	gen := l.gens[slot] &^ clientEvent
	var errc, erru error
	ce := syscall.EpollEvent{Events: syscall.EPOLLRDHUP, Fd: slot, Pad: int32(gen | clientEvent)}
	if err := craw.Control(func(fd uintptr) { errc = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ce) }); err != nil {
		errc = err
	}
	if errc == nil {
		ue := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: slot, Pad: int32(gen)}
		if err := uraw.Control(func(fd uintptr) { erru = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ue) }); err != nil {
			erru = err
		}
		if erru != nil {
			_ = craw.Control(func(fd uintptr) { _ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil) })
		}
	}
	if errc != nil || erru != nil {
		l.free = append(l.free, slot)
		l.mu.Unlock()
		return parked{}, false
	}
	l.slots[slot] = c
	l.mu.Unlock()
	ls.parks.Add(1)
	p := <-c.pk.done
	ls.backs.Add(1)
	return p, true
}

// unparkLocked takes c out of the loop and gives its stream back.
func (l *loop) unparkLocked(c *Conn, slot int32, p parked) {
	_ = c.probe.Raw().Control(l.delFn)
	_ = c.pk.uc.Raw().Control(l.delFn)
	l.slots[slot] = nil
	l.free = append(l.free, slot)
	c.pk.uc, c.pk.rl = nil, nil
	c.pk.done <- p
}

// run waits for the parked streams' events and carries their chunks,
// until the loop is closed.
func (l *loop) run() {
	// A loop that always has work pauses once its slice is over (it looks
	// at the clock every yieldEvery events), so that with one P new
	// connections and the auth map's updates do not wait for its time
	// slice to end (package pace says why a pause and not a Gosched). A
	// slice starts when the loop wakes up with events to carry.
	var p pace.Pacer
	taken, rested := 0, true
	for {
		closed := false
		err := l.raw.Read(func(uintptr) bool {
			if rested {
				p.Begin()
				rested = false
			}
			for {
				if taken >= yieldEvery {
					taken = 0
					p.Check()
				}
				// Raw, as every socket call of the loop (sockprobe's
				// rawio_linux.go says why): with a zero timeout it
				// cannot block.
				r, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(l.epfd),
					uintptr(unsafe.Pointer(&l.evs[0])), uintptr(len(l.evs)), 0, 0, 0)
				if errno == syscall.EINTR {
					continue
				}
				n := int(r)
				if errno != 0 || n <= 0 {
					// Nothing ready: wait in Go's poller for the set to be.
					rested = true
					return errno != 0
				}
				l.mu.Lock()
				if l.closed {
					l.mu.Unlock()
					closed = true
					return true
				}
				for _, ev := range l.evs[:n] {
					l.event(ev)
				}
				l.mu.Unlock()
				taken += n
			}
		})
		if closed || err != nil {
			return
		}
	}
}

// event handles one event of a parked stream (l.mu held).
func (l *loop) event(ev syscall.EpollEvent) {
	slot := ev.Fd
	if slot < 0 || int(slot) >= len(l.slots) {
		return
	}
	c := l.slots[slot]
	if c == nil || uint32(ev.Pad)&^clientEvent != l.gens[slot]&^clientEvent {
		return // a stream handed back earlier in the batch
	}
	if uint32(ev.Pad)&clientEvent != 0 {
		// The client shut its side (or failed). Gone, unless it sent a
		// request first: then it is for the relay's writes to find out.
		if c.Gone() {
			l.unparkLocked(c, slot, parked{err: keepalive.ErrClientGone})
			return
		}
		_ = c.probe.Raw().Control(l.delFn)
		return
	}
	l.relayChunk(c, slot)
}

// relayChunk reads what the upstream sent, once, and carries the chunks
// in it to the client; anything the loop does not take hands the stream
// back.
func (l *loop) relayChunk(c *Conn, slot int32) {
	uc, rl := c.pk.uc, c.pk.rl
	// Control, not Read: the socket's deadlines are the goroutine's,
	// for when it has the stream back.
	n, rerr := 0, error(nil)
	if err := uc.Raw().Control(l.readFn); err != nil {
		rerr = err
	} else {
		n, rerr = l.rn, l.rerr
	}
	switch {
	case rerr == syscall.EAGAIN:
		return // nothing after all
	case rerr != nil:
		l.unparkLocked(c, slot, parked{err: rerr})
		return
	case n == 0:
		// The upstream's end: relay reads it and ends the body as it
		// should (a close-delimited one ends, a chunked one is cut).
		l.unparkLocked(c, slot, parked{})
		return
	}
	in := l.in[:n]
	var (
		o    []byte
		used int
		odd  bool
	)
	if rl.mode == bodyChunked {
		o, used, odd = rl.cr.scan(l.out[:loopHole], in)
	} else {
		o, used = append(l.out[:loopHole], in...), n
	}
	var p parked
	if k := len(o) - loopHole; k > 0 {
		c.tapBody(o[loopHole:])
		size := strconv.AppendInt(l.out[:0:loopHole], int64(k), 16)
		start := loopHole - len(size) - 2
		copy(l.out[start:], size)
		l.out[loopHole-2], l.out[loopHole-1] = '\r', '\n'
		o = append(o, "\r\n"...)[start:]
		w, err := l.write(c, o)
		if err != nil {
			p.err = err
		} else if w < len(o) {
			// The client is slower than the upstream: the stream stays
			// on its goroutine, whose writes wait for the client within
			// the write bound (parking it again after each chunk the
			// client is slow to take would cost more than it saves).
			p.pending = append([]byte(nil), o[w:]...)
			rl.noLoop = true
		}
	}
	if used < n {
		uc.Unread(in[used:])
		rl.noLoop = rl.noLoop || odd // a slow client above keeps it too
	}
	if p.err != nil || p.pending != nil || used < n {
		l.unparkLocked(c, slot, p)
	}
}

// write writes what c's socket takes at once.
func (l *loop) write(c *Conn, b []byte) (int, error) {
	l.wbuf = b
	err := c.probe.Raw().Control(l.writeFn)
	l.wbuf = nil
	if err == nil {
		err = l.werr
	}
	switch {
	case err == syscall.EAGAIN:
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("%w: %w", errClientWrite, err)
	}
	return l.wn, nil
}

// The loop's socket calls, made once (a closure per call would be an
// allocation per chunk); sockprobe's retry on EINTR.

func (l *loop) read(fd uintptr) {
	var errno syscall.Errno
	l.rn, errno = sockprobe.ReadFD(fd, l.in)
	l.rerr = errOf(errno)
}

func (l *loop) del(fd uintptr) {
	_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
}

func (l *loop) writeTo(fd uintptr) {
	var errno syscall.Errno
	l.wn, errno = sockprobe.WriteFD(fd, l.wbuf)
	l.werr = errOf(errno)
}

// errOf is errno as an error: nil for 0.
func errOf(errno syscall.Errno) error {
	if errno == 0 {
		return nil
	}
	return errno
}
