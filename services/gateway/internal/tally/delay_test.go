package tally

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/pace"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/usage"
)

// pingAddrEnv makes the test binary BenchmarkFlushDelaysRequests's
// client (a process of its own, so that its timing does not share the P
// the flush runs on); pingConnsEnv says how many connections it pings on.
const (
	pingAddrEnv  = "TALLY_BENCH_PING_ADDR"
	pingConnsEnv = "TALLY_BENCH_PING_CONNS"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(pingAddrEnv); addr != "" {
		conns, _ := strconv.Atoi(os.Getenv(pingConnsEnv))
		os.Exit(pinger(addr, max(conns, 1)))
	}
	os.Exit(m.Run())
}

// pinger times echoes of one byte from addr until its standard input
// closes; then it prints how many, the median, the 99th percentile and
// the longest, in ns. On one connection it pings every 250 µs (a light
// load); on several, each pings again as soon as its echo came (a closed
// loop that keeps the server busy).
func pinger(addr string, conns int) int {
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	results := make(chan []time.Duration, conns)
	for range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go func() {
			var tick <-chan time.Time
			if conns == 1 {
				tick = time.NewTicker(250 * time.Microsecond).C
			}
			var rtts []time.Duration
			b := []byte{1}
			for {
				if tick != nil {
					select {
					case <-done:
						results <- rtts
						return
					case <-tick:
					}
				} else {
					select {
					case <-done:
						results <- rtts
						return
					default:
					}
				}
				start := time.Now()
				if _, err := c.Write(b); err != nil {
					results <- rtts
					return
				}
				if _, err := io.ReadFull(c, b); err != nil {
					results <- rtts
					return
				}
				rtts = append(rtts, time.Since(start))
			}
		}()
	}
	var rtts []time.Duration
	for range conns {
		rtts = append(rtts, <-results...)
	}
	slices.Sort(rtts)
	if len(rtts) == 0 {
		rtts = append(rtts, 0)
	}
	q := func(f float64) time.Duration { return rtts[int(f*float64(len(rtts)-1))] }
	fmt.Println(len(rtts), int64(q(0.5)), int64(q(0.99)), int64(rtts[len(rtts)-1]))
	return 0
}

// BenchmarkFlushDelaysRequests is what a flush of 100,000 pairs does to
// the requests the gateway serves meanwhile, with one P (the gateway
// pinned to one core): an echo server here answers a client process while
// flushes run back to back; the metrics are the echoes' round trips
// (p50, p99, max) and how many there were. "light": one connection pinged
// every 250 µs; "busy": 32 connections in a closed loop. "background" is
// a Flusher as it runs (pace.Background), "share" pauses as briefly as an
// event loop does (pace.Share), "unpaced" never pauses.
func BenchmarkFlushDelaysRequests(b *testing.B) {
	for _, load := range []struct {
		name  string
		conns int
	}{{"light", 1}, {"busy", 32}} {
		for _, mode := range []string{"background", "share", "unpaced"} {
			b.Run(load.name+"/"+mode, func(b *testing.B) {
				flushDelays(b, load.conns, mode)
			})
		}
	}
}

func flushDelays(b *testing.B, conns int, mode string) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	m, ids := keysMap(b, "team-a", "chat", keyNames(100_000))
	c := NewCounter(MaxCells, m)
	f := NewFlusher(FlusherConfig{Counter: c, Map: func() *authmap.Map { return m }})
	switch mode {
	case "share":
		f.pace.Pause = pace.Share
	case "unpaced":
		f.pace.Off = true
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go echo(ln)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), pingAddrEnv+"="+ln.Addr().String(), pingConnsEnv+"="+strconv.Itoa(conns))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr

	now := time.Now().UnixNano()
	p := f.pace // the counting is the benchmark's, paced as the flush
	flush := func() {
		p.Begin()
		for i, id := range ids {
			p.At(i, 1024)
			c.Count(m, uint32(id>>32), uint32(id), usage.ClassOK, now)
		}
		f.pace.Begin()
		c.swap(m, &f.pace, f.add)
		freezeAll(f)
	}
	flush() // the tables and buffers grow once, in the first flushes
	flush()
	runtime.GC()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Wait() }()
	start := time.Now()
	for b.Loop() {
		flush()
	}
	b.StopTimer()
	elapsed := time.Since(start)
	_ = stdin.Close()
	var n, p50, p99, longest int64
	if _, err := fmt.Fscan(bufio.NewReader(stdout), &n, &p50, &p99, &longest); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(p50)/1e3, "p50-µs/echo")
	b.ReportMetric(float64(p99)/1e3, "p99-µs/echo")
	b.ReportMetric(float64(longest)/1e3, "max-µs/echo")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "echoes/s")
}

// echo answers every connection ln accepts with what it sends.
func echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}
