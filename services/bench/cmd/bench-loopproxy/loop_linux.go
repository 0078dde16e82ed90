//go:build linux

package main

import (
	"errors"
	"net"
	"runtime"
	"syscall"
)

// client and upstream are the loop's connections, by descriptor.
type client struct {
	fd  int
	ip  string
	in  []byte
	out []byte
	up  *upstream // the upstream answering its request; nil: none
}

type upstream struct {
	fd  int
	buf []byte
	cl  *client // whose answer it carries; nil: idle
}

// serveLoop is the event-loop model: one goroutine on one locked thread
// waits in epoll_wait for every socket, and each readiness is handled to
// the end without a goroutine switch: read, decide, write upstream; read
// the answer, write it back.
func (p *proxy) serveLoop(ln *net.TCPListener) error {
	runtime.LockOSThread()
	f, err := ln.File() // a blocking duplicate: made non-blocking below
	if err != nil {
		return err
	}
	// f's finalizer would close the descriptor the loop uses.
	defer runtime.KeepAlive(f)
	lfd := int(f.Fd())
	if err := syscall.SetNonblock(lfd, true); err != nil {
		return err
	}
	ua, err := net.ResolveTCPAddr("tcp4", p.upstream)
	if err != nil {
		return err
	}
	usa := &syscall.SockaddrInet4{Port: ua.Port}
	copy(usa.Addr[:], ua.IP.To4())
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	add := func(fd int) error {
		return syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)})
	}
	if err := add(lfd); err != nil {
		return err
	}
	// The loop's connections by descriptor (slices, not maps: a lookup
	// per event).
	var (
		clients []*client
		ups     []*upstream
		idle    []*upstream
	)
	grow := func(fd int) {
		for fd >= len(clients) {
			clients, ups = append(clients, nil), append(ups, nil)
		}
	}
	closeUp := func(u *upstream) {
		ups[u.fd] = nil
		_ = syscall.Close(u.fd)
		for i, v := range idle {
			if v == u {
				idle = append(idle[:i], idle[i+1:]...)
				break
			}
		}
	}
	closeClient := func(c *client) {
		if c.up != nil {
			closeUp(c.up)
		}
		clients[c.fd] = nil
		_ = syscall.Close(c.fd)
	}
	dial := func() (*upstream, error) {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		// A blocking connect (on loopback it returns at once), bounded:
		// on Linux the send timeout bounds a connect.
		tv := syscall.NsecToTimeval(dialTimeout.Nanoseconds())
		_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &tv)
		if err := syscall.Connect(fd, usa); err != nil {
			_ = syscall.Close(fd)
			return nil, err
		}
		_ = syscall.SetNonblock(fd, true)
		_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		if err := add(fd); err != nil {
			_ = syscall.Close(fd)
			return nil, err
		}
		u := &upstream{fd: fd, buf: make([]byte, 0, bufSize)}
		grow(fd)
		ups[fd] = u
		return u, nil
	}
	// writeAll writes b whole to a non-blocking socket that has room (a
	// partial write is not handled: the connection closes).
	writeAll := func(fd int, b []byte) bool {
		n, err := syscall.Write(fd, b)
		return err == nil && n == len(b)
	}
	// serve takes the requests waiting in c.in, while no upstream
	// carries one of c's.
	serve := func(c *client) {
		for c.up == nil {
			n, fwd, local := p.request(c.in, c.ip, c.out[:0])
			switch {
			case n < 0:
				closeClient(c)
				return
			case n == 0:
				return
			}
			c.in = c.in[:copy(c.in, c.in[n:])]
			if local != nil {
				if !writeAll(c.fd, local) {
					closeClient(c)
					return
				}
				continue
			}
			var u *upstream
			if k := len(idle); k > 0 {
				u, idle = idle[k-1], idle[:k-1]
			} else if u, _ = dial(); u == nil {
				closeClient(c)
				return
			}
			if !writeAll(u.fd, fwd) {
				closeUp(u)
				closeClient(c)
				return
			}
			u.cl, c.up = c, u
		}
	}
	evs := make([]syscall.EpollEvent, 256)
	for {
		// Look without blocking first: under load there is always
		// something, and a wait that blocks costs the scheduler a hand-off.
		n, err := syscall.EpollWait(ep, evs, 0)
		if err == nil && n == 0 {
			n, err = syscall.EpollWait(ep, evs, -1)
		}
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return err
		}
		for _, ev := range evs[:n] {
			fd := int(ev.Fd)
			if fd == lfd {
				for {
					cfd, sa, err := syscall.Accept4(lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
					if err != nil {
						break
					}
					_ = syscall.SetsockoptInt(cfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
					if add(cfd) != nil {
						_ = syscall.Close(cfd)
						continue
					}
					c := &client{fd: cfd, in: make([]byte, 0, bufSize), out: make([]byte, 0, bufSize)}
					if a, ok := sa.(*syscall.SockaddrInet4); ok {
						c.ip = net.IP(a.Addr[:]).String()
					}
					grow(cfd)
					clients[cfd] = c
				}
				continue
			}
			if c := clients[fd]; c != nil {
				k, err := syscall.Read(fd, c.in[len(c.in):cap(c.in)])
				if err == syscall.EAGAIN {
					continue
				}
				if err != nil || k == 0 {
					closeClient(c)
					continue
				}
				c.in = c.in[:len(c.in)+k]
				serve(c)
				continue
			}
			u := ups[fd]
			if u == nil {
				continue
			}
			k, err := syscall.Read(fd, u.buf[len(u.buf):cap(u.buf)])
			if err == syscall.EAGAIN {
				continue
			}
			if err != nil || k == 0 || u.cl == nil {
				// Closed, or talking while idle.
				if u.cl != nil {
					closeClient(u.cl)
				} else {
					closeUp(u)
				}
				continue
			}
			u.buf = u.buf[:len(u.buf)+k]
			m := response(u.buf)
			if m == 0 {
				continue
			}
			c := u.cl
			if m < 0 || m != len(u.buf) || !writeAll(c.fd, u.buf) {
				closeClient(c)
				continue
			}
			u.buf, u.cl, c.up = u.buf[:0], nil, nil
			idle = append(idle, u)
			serve(c)
		}
	}
}
