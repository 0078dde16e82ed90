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
	"testing"
	"time"

	"github.com/infergate/infergate/services/gateway/internal/pace"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/usage"
)

// pingAddrEnv makes the test binary BenchmarkFlushDelaysRequests's
// client (a process of its own, so that its timing does not share the P
// the flush runs on).
const pingAddrEnv = "TALLY_BENCH_PING_ADDR"

func TestMain(m *testing.M) {
	if addr := os.Getenv(pingAddrEnv); addr != "" {
		os.Exit(pinger(addr))
	}
	os.Exit(m.Run())
}

// pinger sends a byte to addr every 250 µs and times its echo, until its
// standard input closes; then it prints how many, the median, the 99th
// percentile and the longest, in ns.
func pinger(addr string) int {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	done := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); close(done) }()
	tick := time.NewTicker(250 * time.Microsecond)
	var rtts []time.Duration
	b := []byte{1}
	for {
		select {
		case <-done:
			slices.Sort(rtts)
			if len(rtts) == 0 {
				rtts = append(rtts, 0)
			}
			q := func(f float64) time.Duration { return rtts[int(f*float64(len(rtts)-1))] }
			fmt.Println(len(rtts), int64(q(0.5)), int64(q(0.99)), int64(rtts[len(rtts)-1]))
			return 0
		case <-tick.C:
		}
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			return 1
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return 1
		}
		rtts = append(rtts, time.Since(start))
	}
}

// BenchmarkFlushDelaysRequests is what a flush of 100,000 pairs does to
// the requests the gateway serves meanwhile, with one P (the gateway
// pinned to one core): an echo server here answers a client process that
// pings it every 250 µs while flushes run back to back; the metrics are
// the pings' round trips (p50, p99, max). "paced" is a Flusher as it
// runs; "unpaced" never pauses.
func BenchmarkFlushDelaysRequests(b *testing.B) {
	for _, paced := range []bool{true, false} {
		name := map[bool]string{true: "paced", false: "unpaced"}[paced]
		b.Run(name, func(b *testing.B) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			m, ids := keysMap(b, "team-a", "chat", keyNames(100_000))
			c := NewCounter(MaxCells, m)
			f := NewFlusher(FlusherConfig{Counter: c, Map: func() *authmap.Map { return m }})
			f.pace.Off = !paced

			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go echo(ln)
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), pingAddrEnv+"="+ln.Addr().String())
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
			var p pace.Pacer // the counting is the benchmark's, and paced
			flush := func() {
				p.Begin()
				for i, id := range ids {
					p.At(i, 1024)
					c.Count(m, uint32(id>>32), uint32(id), usage.ClassOK, now)
				}
				f.pace.Begin()
				c.swap(m, &f.pace, f.add)
				for f.pending > 0 {
					f.inflight = nil
					f.freeze()
				}
			}
			flush() // the tables and buffers grow once, in the first flushes
			flush()
			runtime.GC()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() { _ = cmd.Wait() }()
			for b.Loop() {
				flush()
			}
			b.StopTimer()
			_ = stdin.Close()
			var n, p50, p99, longest int64
			if _, err := fmt.Fscan(bufio.NewReader(stdout), &n, &p50, &p99, &longest); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(p50)/1e3, "p50-µs/ping")
			b.ReportMetric(float64(p99)/1e3, "p99-µs/ping")
			b.ReportMetric(float64(longest)/1e3, "max-µs/ping")
			b.ReportMetric(float64(n), "pings")
		})
	}
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
