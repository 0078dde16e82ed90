//go:build linux

package sockprobe_test

import (
	"os"
	"syscall"
	"testing"

	"github.com/infergate/infergate/services/gateway/internal/sockprobe"
)

// TestRawIOFD: ReadFD and WriteFD go to a socket as recvfrom and sendto,
// and read and write a descriptor that is not a socket (a pipe here) as a
// file; a write to a socket whose peer has gone fails with its errno.
func TestRawIOFD(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if n, e := sockprobe.WriteFD(w.Fd(), []byte("through a pipe")); n != 14 || e != 0 {
		t.Fatalf("WriteFD on a pipe = %d, %v", n, e)
	}
	buf := make([]byte, 64)
	if n, e := sockprobe.ReadFD(r.Fd(), buf); e != 0 || string(buf[:n]) != "through a pipe" {
		t.Fatalf("ReadFD on a pipe = %q, %v", buf[:n], e)
	}

	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := uintptr(fds[0]), fds[1]
	defer syscall.Close(fds[0])
	if n, e := sockprobe.WriteFD(a, []byte("hello")); n != 5 || e != 0 {
		t.Fatalf("WriteFD on a socket = %d, %v", n, e)
	}
	if n, e := sockprobe.ReadFD(uintptr(b), buf); e != 0 || string(buf[:n]) != "hello" {
		t.Fatalf("ReadFD on a socket = %q, %v", buf[:n], e)
	}
	if _, e := sockprobe.ReadFD(a, buf); e != syscall.EAGAIN {
		t.Fatalf("ReadFD on an empty non-blocking socket: %v, want EAGAIN", e)
	}
	_ = syscall.Close(b)
	if n, e := sockprobe.WriteFD(a, []byte("gone")); n != 0 || e != syscall.EPIPE {
		t.Fatalf("WriteFD to a closed peer = %d, %v; want EPIPE", n, e)
	}
	if n, e := sockprobe.ReadFD(a, buf); n != 0 || e != 0 {
		t.Fatalf("ReadFD after the peer closed = %d, %v; want 0 (EOF)", n, e)
	}
}
