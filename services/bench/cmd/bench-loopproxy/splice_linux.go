//go:build linux

package main

import (
	"errors"
	"net"
	"syscall"
	"unsafe"
)

// splicer relays an upstream's answer to the client with splice(2)
// through a pipe of the connection's own, without copying it through
// user space: the answer is peeked at (recv MSG_PEEK) until it is whole,
// for its length, then spliced from the upstream socket into the pipe
// and from the pipe into the client's socket — three system calls
// where read and write are two, to measure what splice for bodies would
// buy (issue 12, point 4).
type splicer struct{ r, w int }

func newSplicer() (*splicer, error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		return nil, err
	}
	return &splicer{r: p[0], w: p[1]}, nil
}

func (s *splicer) close() { _ = syscall.Close(s.r); _ = syscall.Close(s.w) }

const spliceFlags = 1 | 2 // SPLICE_F_MOVE | SPLICE_F_NONBLOCK

var errShort = errors.New("splice: short")

// relay moves the whole answer waiting on up to client; buf is scratch
// for the peek.
func (s *splicer) relay(client, up net.Conn, buf []byte) error {
	ur, err := up.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	cr, err := client.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	m, ferr := 0, error(nil)
	err = ur.Read(func(fd uintptr) bool {
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == syscall.EAGAIN:
			return false
		case errno != 0:
			ferr = errno
			return true
		case n == 0:
			ferr = errShort
			return true
		}
		if m = response(buf[:n]); m == 0 {
			return false // more to come: wait for it
		}
		return true
	})
	if err == nil {
		err = ferr
	}
	if err == nil && m < 0 {
		err = errShort
	}
	if err != nil {
		return err
	}
	// Into the pipe from the upstream's socket, out of it into the
	// client's.
	if err := ur.Read(func(fd uintptr) bool { return spliceAll(int(fd), s.w, m, &ferr) }); err != nil || ferr != nil {
		return errors.Join(err, ferr)
	}
	if err := cr.Write(func(fd uintptr) bool { return spliceAll(s.r, int(fd), m, &ferr) }); err != nil || ferr != nil {
		return errors.Join(err, ferr)
	}
	return nil
}

// spliceAll moves m bytes from in to out in one splice(2), as a RawConn
// callback: false to wait for the socket, else done with *err set.
func spliceAll(in, out, m int, err *error) bool {
	n, e := syscall.Splice(in, nil, out, nil, m, spliceFlags)
	if e == syscall.EAGAIN {
		return false
	}
	if e == nil && int(n) != m {
		e = errShort
	}
	*err = e
	return true
}
