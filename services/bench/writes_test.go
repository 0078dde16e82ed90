package bench_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/services/bench/internal/stats"
)

// writeClients is how many clients call the control plane at once.
const writeClients = 32

// keyNames makes CreateKey names unique across a benchmark's runs.
var keyNames atomic.Int64

// concurrently runs n calls from writeClients goroutines, call(client, i)
// for i in [0, n), and returns each call's latency and the wall time.
func concurrently(b *testing.B, n int, call func(client, i int) error) ([]time.Duration, time.Duration) {
	b.Helper()
	var (
		next  atomic.Int64
		mu    sync.Mutex // mu protects lat and first
		lat   = make([]time.Duration, 0, n)
		first error
		wg    sync.WaitGroup
	)
	start, cpu := time.Now(), stats.ProcessCPU()
	for c := range writeClients {
		wg.Go(func() {
			var mine []time.Duration
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					break
				}
				t := time.Now()
				err := call(c, i)
				mine = append(mine, time.Since(t))
				if err != nil {
					mu.Lock()
					first = err
					mu.Unlock()
					break
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	wall := time.Since(start)
	if first != nil {
		b.Fatal(first)
	}
	b.ReportMetric(stats.Micros(stats.ProcessCPU()-cpu)/float64(n), "cpu-µs/call")
	return lat, wall
}

func reportWrites(b *testing.B, lat []time.Duration, wall time.Duration) {
	b.ReportMetric(float64(len(lat))/wall.Seconds(), "calls/s")
	b.ReportMetric(stats.Micros(stats.Percentile(lat, 50)), "p50-µs")
	b.ReportMetric(stats.Micros(stats.Percentile(lat, 99)), "p99-µs")
}

// BenchmarkCreateKey measures CreateKey through the Connect API (admin
// auth, validation, a fresh secret, the decision against the key's own
// events, the append to JetStream file storage, the wait for the read
// model) from 32 concurrent clients. ns/op is wall time divided by calls;
// calls/s is the throughput.
func BenchmarkCreateKey(b *testing.B) {
	s := stack(b, 1)
	ctx := context.Background()
	b.ResetTimer()
	lat, wall := concurrently(b, b.N, func(_, _ int) error {
		name := fmt.Sprintf("ck-%08d", keyNames.Add(1))
		_, err := s.Keys.CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{Project: project, Name: name}))
		return err
	})
	b.StopTimer()
	reportWrites(b, lat, wall)
}

// linkKeysPerClient is how many keys each client links and unlinks in
// turn; the deployment's link set stays that small.
const linkKeysPerClient = 16

// BenchmarkLinkKey measures LinkKey and UnlinkKey through the Connect API
// from 32 concurrent clients, each on a deployment of its own (so they do
// not race for one aggregate), linking its 16 keys one by one and then
// unlinking them. Each call also waits for the stack's gateway to confirm
// (SPEC §5).
func BenchmarkLinkKey(b *testing.B) {
	s := stack(b, 1)
	ctx := context.Background()
	once(b, "link-key", func() bool {
		for c := range writeClients {
			for k := range linkKeysPerClient {
				if _, err := s.CreateKey(ctx, project, fmt.Sprintf("lk-%02d-%02d", c, k)); err != nil {
					b.Fatal(err)
				}
			}
			if err := s.Deploy(ctx, project, fmt.Sprintf("lk-%02d", c), s.UpstreamURL); err != nil {
				b.Fatal(err)
			}
		}
		return true
	})
	// calls[c] counts client c's calls across runs, so its keys' link
	// state carries over from one run to the next.
	calls := once(b, "link-key-calls", func() *[writeClients]int { return new([writeClients]int) })
	unconfirmed := atomic.Int64{}
	b.ResetTimer()
	lat, wall := concurrently(b, b.N, func(c, _ int) error {
		j := calls[c]
		calls[c]++
		dep, key := fmt.Sprintf("lk-%02d", c), fmt.Sprintf("lk-%02d-%02d", c, j%linkKeysPerClient)
		var confirmed bool
		if (j/linkKeysPerClient)%2 == 0 {
			res, err := s.Deployments.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: project, Deployment: dep, Key: key}))
			if err != nil {
				return err
			}
			confirmed = res.Msg.GetPropagation().GetConfirmed()
		} else {
			res, err := s.Deployments.UnlinkKey(ctx, connect.NewRequest(&deploymentv1.UnlinkKeyRequest{Project: project, Deployment: dep, Key: key}))
			if err != nil {
				return err
			}
			confirmed = res.Msg.GetPropagation().GetConfirmed()
		}
		if !confirmed {
			unconfirmed.Add(1)
		}
		return nil
	})
	b.StopTimer()
	reportWrites(b, lat, wall)
	b.ReportMetric(float64(unconfirmed.Load()), "unconfirmed")
}

// bigDeploymentKeys is how many keys are linked to the deployment of
// BenchmarkLinkKeyBigDeployment.
const bigDeploymentKeys = 2000

// BenchmarkLinkKeyBigDeployment measures LinkKey and UnlinkKey of one key,
// one call at a time, on a deployment that already has 2,000 keys linked:
// what a change costs on a big deployment (each call waits for the
// stack's gateway to confirm).
func BenchmarkLinkKeyBigDeployment(b *testing.B) {
	s := stack(b, 1)
	ctx := context.Background()
	once(b, "link-key-big", func() bool {
		names := make([]string, bigDeploymentKeys)
		for i := range names {
			names[i] = fmt.Sprintf("big-%04d", i)
			if _, err := s.CreateKey(ctx, project, names[i]); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := s.CreateKey(ctx, project, "big-extra"); err != nil {
			b.Fatal(err)
		}
		if err := s.Deploy(ctx, project, "big", s.UpstreamURL); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Deployments.UpdateDeploymentAuth(ctx, connect.NewRequest(&deploymentv1.UpdateDeploymentAuthRequest{
			Project: project, Name: "big", AuthEnabled: true, ApiKeys: names,
		})); err != nil {
			b.Fatal(err)
		}
		return true
	})
	calls := once(b, "link-key-big-calls", func() *int { return new(int) })
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		var err error
		if *calls%2 == 0 {
			_, err = s.Deployments.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: project, Deployment: "big", Key: "big-extra"}))
		} else {
			_, err = s.Deployments.UnlinkKey(ctx, connect.NewRequest(&deploymentv1.UnlinkKeyRequest{Project: project, Deployment: "big", Key: "big-extra"}))
		}
		*calls++
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	s50, s99 := stats.Percentile(lat, 50), stats.Percentile(lat, 99)
	b.ReportMetric(float64(s50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(s99.Microseconds()), "p99-µs")
}
