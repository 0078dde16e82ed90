package sockprobe_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/sockprobe"
)

// TestProbe: a fresh connection is Empty, then Data once the peer wrote,
// then Closed once the peer closed and the data was read; nothing is
// consumed by a probe, and a probe allocates nothing.
func TestProbe(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("probes answer Unknown off Linux")
	}
	nc, peer := connPair(t)
	var p sockprobe.Probe
	p.Init(nc)
	if s := p.State(); s != sockprobe.Empty {
		t.Fatalf("fresh: %v", s)
	}
	if n := testing.AllocsPerRun(100, func() { p.State() }); n != 0 {
		t.Errorf("%v allocations per probe", n)
	}
	_, _ = peer.Write([]byte("x"))
	waitState(t, &p, sockprobe.Data)
	_ = peer.Close()
	var b [1]byte
	if n, _ := nc.Read(b[:]); n != 1 {
		t.Fatal("the probe consumed the byte")
	}
	waitState(t, &p, sockprobe.Closed)
}

func waitState(t *testing.T, p *sockprobe.Probe, want sockprobe.State) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); p.State() != want; {
		if time.Now().After(deadline) {
			t.Fatalf("state %v, want %v", p.State(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReadWrite: the probe's Read and Write behave as the connection's
// own: a write larger than the socket buffers completes once the peer
// reads, a read honours the read deadline, the peer's close is io.EOF,
// and a closed connection fails both; neither allocates.
func TestReadWrite(t *testing.T) {
	nc, peer := connPair(t)
	var p sockprobe.Probe
	p.Init(nc)

	// 8 MiB: far more than loopback's socket buffers, so the write waits
	// for the peer to read.
	big := bytes.Repeat([]byte("0123456789abcdef"), 512<<10)
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big)))); got <- b }()
	if n, err := p.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("the peer read %d bytes, not what was written", len(b))
	}
	if !p.Waited() {
		t.Error("a write larger than the socket's buffers did not say it waited")
	}

	_ = nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	buf := make([]byte, 64)
	if _, err := p.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v", err)
	}
	_ = nc.SetReadDeadline(time.Time{})

	_, _ = peer.Write([]byte("hello"))
	if n, err := p.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	x := []byte("x")
	if n := testing.AllocsPerRun(50, func() {
		_, _ = peer.Write(x)
		_, _ = p.Read(buf)
		_, _ = p.Write(buf[:1])
		_, _ = peer.Read(buf)
	}); n != 0 {
		t.Errorf("%v allocations per read and write", n)
	}
	if runtime.GOOS == "linux" && p.Waited() {
		t.Error("a one-byte write into an empty socket said it waited")
	}
	_ = peer.Close()
	if n, err := p.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer's close = %d, %v", n, err)
	}
	_ = nc.Close()
	if _, err := p.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed connection: %v", err)
	}
	if _, err := p.Write(buf[:1]); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a closed connection: %v", err)
	}
}

// TestSend: Send returns once the answer has begun to come — a peek right
// after it finds it waiting — and, when none comes, once the read
// deadline has passed, leaving the error to the read that follows.
func TestSend(t *testing.T) {
	nc, peer := connPair(t)
	var p sockprobe.Probe
	p.Init(nc)

	go func() {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(peer, buf); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond) // a slow upstream
		_, _ = peer.Write([]byte("answer"))
	}()
	if err := p.Send([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS == "linux" {
		if s := p.State(); s != sockprobe.Data {
			t.Fatalf("after Send the answer is not there: %v", s)
		}
	}
	buf := make([]byte, 16)
	if n, err := p.Read(buf); err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}

	// No answer: Send gives up with the read deadline.
	_ = nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if err := p.Send([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read after an unanswered Send: %v", err)
	}
	_ = nc.Close()
	if err := p.Send([]byte("closed")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send on a closed connection: %v", err)
	}
}

// connPair is a loopback TCP connection and its peer, closed when the test
// ends.
func connPair(t *testing.T) (nc, peer net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	peer, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peer.Close() })
	return nc, peer
}
