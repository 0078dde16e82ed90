package bench_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infergate/infergate/services/bench/internal/stats"
)

// streamWorkers is how many streams run at once; each stream lasts ~0.4 s
// (a chunk every 20 ms), so running them one by one would take minutes.
const streamWorkers = 8

type streamWorld struct {
	secret string
	client *http.Client
}

// streamOnce sends one streaming chat completion and returns the time to
// the first byte of the body and to the end of the stream.
func streamOnce(ctx context.Context, c *http.Client, url, host, secret string) (ttfb, total time.Duration, err error) {
	body := `{"model":"infergate-demo","stream":true,"messages":[{"role":"user","content":"stream please"}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if host != "" {
		req.Host = host
		req.Header.Set("X-API-Key", secret)
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	buf := make([]byte, 4096)
	n, err := resp.Body.Read(buf)
	ttfb = time.Since(start)
	if n == 0 {
		return 0, 0, err
	}
	if resp.StatusCode != http.StatusOK || buf[0] != 'd' {
		return 0, 0, fmt.Errorf("%s: %s: %q", url, resp.Status, buf[:n])
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return 0, 0, err
	}
	return ttfb, time.Since(start), nil
}

// BenchmarkStreamingTTFB measures the time to the first byte of an SSE
// chat completion whose upstream (the demo model) sends a chunk every
// 20 ms, straight to the upstream and through a gateway (auth on, a linked
// key), each iteration one of each, alternating which goes first. added-*
// is the gateway's figure minus the direct one at the same percentile.
// Eight streams run at once.
func BenchmarkStreamingTTFB(b *testing.B) {
	s := stack(b, 1)
	ctx := context.Background()
	w := once(b, "streaming", func() *streamWorld {
		secret, err := s.CreateKey(ctx, project, "stream-key")
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Deploy(ctx, project, "stream", s.UpstreamURL, "stream-key"); err != nil {
			b.Fatal(err)
		}
		return &streamWorld{secret: secret, client: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 64, DisableCompression: true,
		}}}
	})
	host := "model-stream." + project + ".localhost"
	gw := s.Gateways[0].URL
	var (
		next                    atomic.Int64
		mu                      sync.Mutex // mu protects the slices
		direct, via, dTot, vTot []time.Duration
		wg                      sync.WaitGroup
		failed                  atomic.Value
	)
	b.ResetTimer()
	for range streamWorkers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				var d, v, dt, vt time.Duration
				var err1, err2 error
				if i%2 == 0 {
					d, dt, err1 = streamOnce(ctx, w.client, s.UpstreamURL, "", "")
					v, vt, err2 = streamOnce(ctx, w.client, gw, host, w.secret)
				} else {
					v, vt, err2 = streamOnce(ctx, w.client, gw, host, w.secret)
					d, dt, err1 = streamOnce(ctx, w.client, s.UpstreamURL, "", "")
				}
				if err1 != nil || err2 != nil {
					failed.Store([2]error{err1, err2})
					return
				}
				mu.Lock()
				direct, via, dTot, vTot = append(direct, d), append(via, v), append(dTot, dt), append(vTot, vt)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if f := failed.Load(); f != nil {
		b.Fatalf("stream failed: %v", f)
	}
	d50, d99 := stats.Percentile(direct, 50), stats.Percentile(direct, 99)
	v50, v99 := stats.Percentile(via, 50), stats.Percentile(via, 99)
	b.ReportMetric(stats.Micros(d50), "direct-p50-µs")
	b.ReportMetric(stats.Micros(d99), "direct-p99-µs")
	b.ReportMetric(stats.Micros(v50), "gateway-p50-µs")
	b.ReportMetric(stats.Micros(v99), "gateway-p99-µs")
	b.ReportMetric(stats.Micros(v50-d50), "added-p50-µs")
	b.ReportMetric(stats.Micros(v99-d99), "added-p99-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(vTot, 50)-stats.Percentile(dTot, 50)), "added-total-p50-µs")
}
