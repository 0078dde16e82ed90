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

// ReadFD is read(2) on fd as a raw system call (fd non-blocking, b not
// empty), retried on EINTR; the count is 0 when the Errno is not.
func ReadFD(fd uintptr, b []byte) (int, syscall.Errno) { return rawRead(fd, b) }

// WriteFD is write(2) on fd as a raw system call (fd non-blocking, b not
// empty), retried on EINTR; the count is 0 when the Errno is not.
func WriteFD(fd uintptr, b []byte) (int, syscall.Errno) { return rawWrite(fd, b) }

// rawRead and rawWrite retry on EINTR; on an error the count is 0.
func rawRead(fd uintptr, b []byte) (int, syscall.Errno)  { return rawCall(syscall.SYS_READ, fd, b) }
func rawWrite(fd uintptr, b []byte) (int, syscall.Errno) { return rawCall(syscall.SYS_WRITE, fd, b) }

// rawCall is read(2) or write(2) (trap) on fd and b as a raw system call,
// retried on EINTR.
func rawCall(trap, fd uintptr, b []byte) (int, syscall.Errno) {
	for {
		r, _, e := syscall.RawSyscall(trap, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		switch e {
		case 0:
			return int(r), 0
		case syscall.EINTR:
		default:
			return 0, e
		}
	}
}
