//go:build linux

package sockprobe

import (
	"errors"
	"syscall"
)

const canPeek = true

func peek(fd uintptr) State {
	var b [1]byte
	n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	switch {
	case n > 0:
		return Data
	case err == nil:
		return Closed // a zero-length read: the peer's FIN
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EWOULDBLOCK):
		return Empty
	case errors.Is(err, syscall.EINTR):
		return Unknown
	default:
		return Closed // ECONNRESET and the like
	}
}
