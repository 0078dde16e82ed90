package authmap_test

import (
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/authmap"
)

const (
	benchKeys        = 1_000_000
	benchDeployments = 100_000
	linksPerDep      = benchKeys / benchDeployments // every key linked once
	benchProject     = "bench"
	benchUpstream    = "http://127.0.0.1:9/v1"
)

func benchKeyName(j int) string { return fmt.Sprintf("key-%07d", j) }
func benchDepName(i int) string { return fmt.Sprintf("dep-%06d", i) }
func benchDepID(i int) string   { return fmt.Sprintf("dep-id-%06d", i) }

// benchKeyID is shaped like the UUIDs the services use, so the map holds
// ids of the real size.
func benchKeyID(j int) string {
	var b [16]byte
	for i := range 8 {
		b[i] = byte(j >> (8 * i))
	}
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

type benchWorld struct {
	m        *authmap.Map
	seq      uint64
	secrets  []string // secrets[j] is key j's; key j is linked to deployment j/linksPerDep
	depNames []string
}

var (
	worldOnce sync.Once
	world     *benchWorld
)

// loadWorld builds, once per process, a map of benchKeys keys and
// benchDeployments deployments with auth on, every key linked to one.
func loadWorld(b *testing.B) *benchWorld {
	b.Helper()
	worldOnce.Do(func() {
		r := rand.New(rand.NewPCG(1, 2))
		w := &benchWorld{m: authmap.New(), secrets: make([]string, benchKeys), depNames: make([]string, benchDeployments)}
		for j := range benchKeys {
			w.secrets[j] = fastSecret(r)
			w.seq++
			w.m.Apply(w.seq, []*eventv1.Event{keyCreated(benchProject, benchKeyName(j), benchKeyID(j), w.secrets[j], time.Time{})})
		}
		for i := range benchDeployments {
			w.depNames[i] = benchDepName(i)
			w.seq++
			w.m.Apply(w.seq, deploymentRecord(i))
			w.seq++
			w.m.Apply(w.seq, []*eventv1.Event{deployed(benchProject, w.depNames[i], benchDepID(i))})
		}
		world = w
	})
	return world
}

func deploymentRecord(i int) []*eventv1.Event {
	name, id := benchDepName(i), benchDepID(i)
	rec := []*eventv1.Event{depCreated(benchProject, name, id, benchUpstream), authEnabled(benchProject, name, id)}
	for j := i * linksPerDep; j < (i+1)*linksPerDep; j++ {
		rec = append(rec, linked(benchProject, name, id, benchKeyName(j), benchKeyID(j)))
	}
	return rec
}

// writer applies records to w's map until stop is closed: an unlink and a
// link of a random key, and every 16th round a new key created, linked and
// deleted, at perSecond records a second (0: as fast as it can). It
// returns how many records it applied.
func writer(w *benchWorld, perSecond float64, stop <-chan struct{}) (done <-chan int) {
	out := make(chan int, 1)
	go func() {
		r := rand.New(rand.NewPCG(3, 4))
		seq := w.seq
		applied := 0
		apply := func(events ...*eventv1.Event) {
			seq++
			w.m.Apply(seq, events)
			applied++
		}
		round := func(n int) {
			i := r.IntN(benchDeployments)
			j := i*linksPerDep + r.IntN(linksPerDep)
			dn, did := w.depNames[i], benchDepID(i)
			apply(unlinked(benchProject, dn, did, benchKeyName(j), benchKeyID(j)))
			apply(linked(benchProject, dn, did, benchKeyName(j), benchKeyID(j)))
			if n%16 == 0 {
				name, id := "churn-"+itoa(n), "churn-id-"+itoa(n)
				apply(keyCreated(benchProject, name, id, fastSecret(r), time.Time{}))
				apply(linked(benchProject, dn, did, name, id))
				apply(keyDeleted(benchProject, name, id))
			}
		}
		start := time.Now()
		for n := 0; ; n++ {
			select {
			case <-stop:
				w.seq = seq
				out <- applied
				return
			default:
			}
			if perSecond > 0 {
				// Catch up with the rate, then sleep: the benchmark's
				// goroutines keep every core busy, so the writer runs in
				// bursts whenever the scheduler lets it.
				if float64(applied) >= perSecond*time.Since(start).Seconds() {
					time.Sleep(100 * time.Microsecond)
					continue
				}
			}
			round(n)
		}
	}()
	return out
}

// BenchmarkDecision is the gateway's auth decision over a map of 1,000,000
// keys and 100,000 deployments (1,000,000 links), from every core at once
// (b.RunParallel), while another goroutine applies events. Each decision
// is for a random deployment and one of its keys: well-formedness check,
// SHA-256, two table lookups and a link check — and, as in production, a
// different key almost every time, so mostly cache misses.
//
// allocs/op and B/op count the whole process, the writer's allocations
// included; the decision itself allocates nothing (writes=none, and
// TestDecideDoesNotAllocate).
func BenchmarkDecision(b *testing.B) {
	w := loadWorld(b)
	for _, bc := range []struct {
		name      string
		perSecond float64 // records a second; -1: no writer; 0: flat out
		hot       int     // deployments used; 0: all
	}{
		{"writes=none", -1, 0},
		{"writes=10k_per_s", 10_000, 0},
		{"writes=flat_out", 0, 0},
		{"writes=10k_per_s/hot_1k_keys", 10_000, 100},
	} {
		b.Run(bc.name, func(b *testing.B) {
			deps := benchDeployments
			if bc.hot > 0 {
				deps = bc.hot
			}
			reqs := requests(w, deps)
			var done <-chan int
			stop := make(chan struct{})
			if bc.perSecond >= 0 {
				done = writer(w, bc.perSecond, stop)
			}
			var allowed, refused atomic.Int64
			var offset atomic.Int64
			now := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			start, cpu := time.Now(), processCPU()
			b.RunParallel(func(pb *testing.PB) {
				i := int(offset.Add(int64(len(reqs) / 2)))
				var ok, no int64
				for pb.Next() {
					if i++; i >= len(reqs) {
						i = 0
					}
					q := &reqs[i]
					if w.m.Decide(benchProject, q.dep, "local", q.key, now).Result.Allowed() {
						ok++
					} else {
						no++
					}
				}
				allowed.Add(ok)
				refused.Add(no)
			})
			b.StopTimer()
			elapsed := time.Since(start)
			if c := processCPU() - cpu; c > 0 {
				// CPU time per decision, the writer's and the GC's
				// included: unlike ns/op, it does not grow when other
				// processes take the cores (it does when they take the
				// caches). On an idle machine ns/op ≈ this / cores.
				b.ReportMetric(float64(c.Nanoseconds())/float64(b.N), "cpu-ns/op")
			}
			close(stop)
			if done != nil {
				b.ReportMetric(float64(<-done)/elapsed.Seconds(), "records/s")
			}
			if allowed.Load() == 0 {
				b.Fatalf("no decision allowed (%d refused)", refused.Load())
			}
		})
	}
}

type request struct{ dep, key string }

// requests is a stream of requests to random deployments (of the first
// deps) with one of their keys each. Each request's strings are copied
// next to it, in order, so reading a request costs what reading a request
// just parsed off the wire costs — the misses measured are the map's.
func requests(w *benchWorld, deps int) []request {
	const n = 1 << 18
	r := rand.New(rand.NewPCG(8, 9))
	reqs := make([]request, n)
	var arena []byte
	for k := range reqs {
		i := r.IntN(deps)
		j := i*linksPerDep + r.IntN(linksPerDep)
		if len(arena) < 128 {
			arena = make([]byte, 64<<10)
		}
		dn := copy(arena, w.depNames[i])
		kn := copy(arena[dn:], w.secrets[j])
		reqs[k] = request{dep: unsafe.String(&arena[0], dn), key: unsafe.String(&arena[dn], kn)}
		arena = arena[dn+kn:]
	}
	return reqs
}

// BenchmarkHeapPerKey loads 1,000,000 keys and 1,000,000 links (over
// 100,000 deployments) into a fresh map and reports the live heap it holds
// per key — the Go heap's and the key table's memory outside it — and the
// cost of applying one record.
func BenchmarkHeapPerKey(b *testing.B) {
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		m := authmap.New()
		seq := uint64(0)
		r := rand.New(rand.NewPCG(6, 7))
		for j := range benchKeys {
			seq++
			e := keyEvent(benchProject, benchKeyName(j))
			sum := make([]byte, 32)
			for k := range 4 {
				v := r.Uint64()
				for s := range 8 {
					sum[k*8+s] = byte(v >> (8 * s))
				}
			}
			e.Payload = &eventv1.Event_KeyCreated{KeyCreated: &eventv1.KeyCreated{
				KeyId: benchKeyID(j), Name: benchKeyName(j), SecretSha256: sum, Hint: "ig_…abcd",
			}}
			m.Apply(seq, []*eventv1.Event{e})
		}
		for i := range benchDeployments {
			seq++
			m.Apply(seq, deploymentRecord(i))
		}
		elapsed := time.Since(start)
		runtime.GC()
		runtime.ReadMemStats(&after)
		// The key table's slots live outside the Go heap (huge pages), so
		// MemStats does not see them: add them.
		offHeap := m.OffHeapBytes()
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)+int64(offHeap))/benchKeys, "heap-B/key")
		b.ReportMetric(float64(offHeap)/benchKeys, "offheap-B/key")
		b.ReportMetric(float64(elapsed.Nanoseconds())/float64(seq), "ns/record")
		runtime.KeepAlive(m)
	}
}
