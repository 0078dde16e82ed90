//go:build linux

package sockprobe

import (
	"syscall"
	"unsafe"
)

const canPeek = true

func peek(fd uintptr) State {
	var b [1]byte
	// A raw system call, as rawRead (rawio_linux.go).
	n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	switch errno {
	case 0:
		if n > 0 {
			return Data
		}
		return Closed // a zero-length read: the peer's FIN
	case syscall.EAGAIN:
		return Empty
	case syscall.EINTR:
		return Unknown
	default:
		return Closed // ECONNRESET and the like
	}
}
