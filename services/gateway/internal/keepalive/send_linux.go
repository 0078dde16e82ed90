//go:build linux

package keepalive

import "syscall"

const canSend = true

// writeOnce writes b to the socket fd once, without blocking.
func writeOnce(fd uintptr, b []byte) (int, error) {
	for {
		n, err := syscall.Write(int(fd), b)
		if err != syscall.EINTR {
			return n, err
		}
	}
}

// errWouldBlock is the write that found the socket full.
const errWouldBlock = syscall.EAGAIN
