package sockprobe_test

import (
	"net"
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
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
