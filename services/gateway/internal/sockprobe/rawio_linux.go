//go:build linux

package sockprobe

import (
	"syscall"
	"unsafe"
)

// rawIO: reads, writes and peeks are raw system calls, which do not tell
// the Go scheduler they are in the kernel (no entersyscall). Every socket
// here is non-blocking, so none of them can block; but one write to a
// loopback peer can take longer than sysmon's 20 µs tick on a
// paravirtualised machine, and the scheduler then hands the P to another
// thread (a futex wake and two context switches, on the one core the
// gateway runs on). Measured in docs/benchmarks.md.
const rawIO = true

// ReadFD reads from fd as a raw system call (fd non-blocking, b not
// empty), retried on EINTR; the count is 0 when the Errno is not.
func ReadFD(fd uintptr, b []byte) (int, syscall.Errno) { return rawRead(fd, b) }

// WriteFD writes to fd as a raw system call (fd non-blocking, b not
// empty), retried on EINTR; the count is 0 when the Errno is not.
func WriteFD(fd uintptr, b []byte) (int, syscall.Errno) { return rawWrite(fd, b) }

// rawRead and rawWrite are recvfrom(2) and sendto(2) without an address,
// not read(2) and write(2): on a socket they go straight to it, past the
// file layer's position lookup and iterator set-up, ~0.3 µs of CPU a
// proxied request (its four reads and writes; benchmarks.md, "The
// gateway's own features, measured apart"). sendto also takes
// MSG_NOSIGNAL: a peer gone is an EPIPE, never a SIGPIPE. A descriptor
// that is not a socket is read and written as a file.
func rawRead(fd uintptr, b []byte) (int, syscall.Errno) {
	return sockCall(syscall.SYS_RECVFROM, syscall.SYS_READ, fd, b, 0)
}

func rawWrite(fd uintptr, b []byte) (int, syscall.Errno) {
	return sockCall(syscall.SYS_SENDTO, syscall.SYS_WRITE, fd, b, syscall.MSG_NOSIGNAL)
}

// sockCall is socket call sock with flags on fd and b, or file call file
// when fd is not a socket.
func sockCall(sock, file, fd uintptr, b []byte, flags uintptr) (int, syscall.Errno) {
	n, e := rawCall(sock, fd, b, flags)
	if e == syscall.ENOTSOCK {
		return rawCall(file, fd, b, 0)
	}
	return n, e
}

// rawCall is system call trap (read, write, recvfrom or sendto) on fd, b
// and flags (no address) as a raw system call, retried on EINTR.
func rawCall(trap, fd uintptr, b []byte, flags uintptr) (int, syscall.Errno) {
	for {
		r, _, e := syscall.RawSyscall6(trap, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), flags, 0, 0)
		switch e {
		case 0:
			return int(r), 0
		case syscall.EINTR:
		default:
			return 0, e
		}
	}
}
