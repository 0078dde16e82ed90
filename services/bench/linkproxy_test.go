package bench_test

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/infergate/infergate/services/bench/internal/stats"
	"github.com/infergate/infergate/services/internal/linkproxy"
)

// BenchmarkLinkDelay measures the delaying proxy the region benchmarks
// put in each leaf-node link (services/internal/linkproxy), alone: b.N
// small messages, one every millisecond, each stamped with the time it
// was written, cross a proxy delaying 50 ms one way to a reader that
// notes when it got each; the figures are the delay each message took
// beyond the 50 ms asked. What the proxy adds to
// BenchmarkRegionPropagation's figures is at most this. Run with
// -benchtime=2000x.
func BenchmarkLinkDelay(b *testing.B) {
	const delay = 50 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	p, err := linkproxy.Listen("127.0.0.1:0", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	p.SetDelay(delay)
	got := make(chan []time.Duration, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		var extra []time.Duration
		var buf [8]byte
		for {
			if _, err := io.ReadFull(r, buf[:]); err != nil {
				got <- extra
				return
			}
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(buf[:])))
			extra = append(extra, time.Since(sent)-delay)
		}
	}()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		b.Fatal(err)
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	var buf [8]byte
	for range b.N {
		<-tick.C
		binary.BigEndian.PutUint64(buf[:], uint64(time.Now().UnixNano()))
		if _, err := c.Write(buf[:]); err != nil {
			b.Fatal(err)
		}
	}
	// The proxy forwards what it holds, then closes towards the reader.
	c.Close()
	extra := <-got
	b.StopTimer()
	if len(extra) != b.N {
		b.Fatalf("%d of %d messages arrived", len(extra), b.N)
	}
	b.ReportMetric(stats.Micros(stats.Percentile(extra, 50)), "extra-p50-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(extra, 99)), "extra-p99-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(extra, 100)), "extra-max-µs")
}
