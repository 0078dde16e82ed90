// Package linkproxy is a TCP proxy put in a network link — a region's
// leaf-node connection to the hub, a service's connection to PostgreSQL —
// to cut it, heal it or delay it: what `infergate dev --regions` offers to
// watch a region cut off, and what the region tests, the fault suite and
// the benchmarks use.
package linkproxy

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards every connection it accepts to one target.
type Proxy struct {
	addr   string
	target string
	delay  atomic.Int64 // one-way delay, ns
	cut    atomic.Bool

	// mu guards the fields below.
	mu     sync.Mutex
	ln     net.Listener // nil while cut
	closed bool
	conns  map[net.Conn]struct{}
}

// Listen listens on addr (host:0 for a free port) and forwards every
// connection to target until Close.
func Listen(addr, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("linkproxy: %w", err)
	}
	p := &Proxy{ln: ln, addr: ln.Addr().String(), target: target, conns: map[net.Conn]struct{}{}}
	go p.accept(ln)
	return p, nil
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	p.closeAll()
}

// IsCut reports whether the link is cut.
func (p *Proxy) IsCut() bool { return p.cut.Load() }

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.addr }

// Cut closes every connection through the proxy and stops listening
// until Heal: connecting is refused, as to a host whose link is down
// (a proxy that accepted and hung up at once would look like a peer
// that comes and goes, which NATS treats otherwise).
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut.Store(true)
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	p.closeAll()
}

// Heal listens again, on the same address, and forwards again.
func (p *Proxy) Heal() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("linkproxy: heal: %w", err)
	}
	p.ln = ln
	p.cut.Store(false)
	go p.accept(ln)
	return nil
}

// SetDelay delays every byte by d in each direction (one-way delay).
func (p *Proxy) SetDelay(d time.Duration) { p.delay.Store(int64(d)) }

func (p *Proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut.Load() {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) accept(ln net.Listener) {
	for {
		in, err := ln.Accept()
		if err != nil {
			return
		}
		if p.cut.Load() {
			_ = in.Close()
			continue
		}
		go func() {
			out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
			if err != nil {
				_ = in.Close()
				return
			}
			if !p.track(in, out) {
				_ = in.Close()
				_ = out.Close()
				return
			}
			go p.pipe(out, in)
			p.pipe(in, out)
		}()
	}
}

// pipe copies src to dst, each chunk held back by the delay; closing one
// side closes both. The delay is scheduled, not added: each chunk is
// stamped when read and written when its stamp plus the delay is due, so
// chunks queued behind one another do not add their waits up.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	type chunk struct {
		b  []byte
		at time.Time
	}
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				// A copy of the bytes read, not a fresh 32 KiB buffer per
				// read: a link carrying small messages would otherwise
				// churn the heap, and GC pauses would show as delay.
				q <- chunk{append([]byte(nil), buf[:n]...), time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		if d := time.Until(c.at.Add(time.Duration(p.delay.Load()))); d > 0 {
			time.Sleep(d)
		}
		if _, err := dst.Write(c.b); err != nil {
			_ = src.Close()
			for range q { // let the reader finish
			}
			return
		}
	}
}
