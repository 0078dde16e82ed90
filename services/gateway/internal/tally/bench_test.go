package tally

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/gateway/internal/pace"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/usage"
)

// counted is a counter on a map with one deployment, and the numbers a
// decision about it carries.
func counted(tb testing.TB) (*Counter, *authmap.Map, uint32, uint32) {
	tb.Helper()
	m := authmap.New()
	m.Apply(1, []*eventv1.Event{
		{Project: "p", Aggregate: &eventv1.Aggregate{Type: eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, Name: "llama"},
			Payload: &eventv1.Event_DeploymentCreated{DeploymentCreated: &eventv1.DeploymentCreated{DeploymentId: "d1", Name: "llama", UpstreamUrl: "http://up"}}},
		{Project: "p", Aggregate: &eventv1.Aggregate{Type: eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, Name: "llama"},
			Payload: &eventv1.Event_DeploymentStatusChanged{DeploymentStatusChanged: &eventv1.DeploymentStatusChanged{DeploymentId: "d1", Status: eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED}}},
	})
	d := m.Decide("p", "llama", "", "", time.Now())
	if d.Deployment == 0 {
		tb.Fatalf("decision %+v names no deployment", d)
	}
	return NewCounter(0, m), m, d.Deployment, d.Key
}

// row is one drained cell, named: what the tests look at.
type row struct {
	Project, Deployment, Key string
	Counts                   [usage.NumClasses]uint64
	Prompt, Completion       uint64
	// Last is the last use, Unix ns.
	Last int64
}

// swapRows swaps c's tables as a flush does and returns the drained
// cells, named.
func swapRows(c *Counter, m *authmap.Map) []row {
	var rows []row
	var p pace.Pacer
	c.swap(m, &p, func(m *authmap.Map, id uint64, n *counts) {
		r := row{Counts: n.n, Prompt: n.prompt, Completion: n.completion, Last: n.last}
		var ok bool
		if r.Project, r.Deployment, r.Key, ok = m.Names(uint32(id>>32), uint32(id)); ok {
			rows = append(rows, r)
		}
	})
	return rows
}

// TestCount counts requests and drains them, named, once.
func TestCount(t *testing.T) {
	t.Parallel()
	c, m, dep, key := counted(t)
	now := time.Now().UnixNano()
	for range 3 {
		c.Count(m, dep, key, usage.ClassOK, now)
	}
	c.Count(m, dep, key, usage.ClassRefused, now)
	c.Tokens(m, dep, key, 10, 20)
	c.Count(m, 0, 0, usage.ClassOK, now)                 // no deployment: not counted
	c.Count(authmap.New(), dep, key, usage.ClassOK, now) // another map
	rows := swapRows(c, m)
	if len(rows) != 1 {
		t.Fatalf("rows %+v", rows)
	}
	r := rows[0]
	if r.Project != "p" || r.Deployment != "llama" || r.Key != "" || r.Counts[usage.ClassOK] != 3 || r.Counts[usage.ClassRefused] != 1 ||
		r.Prompt != 10 || r.Completion != 20 || r.Last != now {
		t.Errorf("row %+v", r)
	}
	if o, other := c.Lost(); o != 0 || other != 1 {
		t.Errorf("lost %d, %d", o, other)
	}
	// Late counts into the table taken out come with the next swap.
	if rows := swapRows(c, m); len(rows) != 0 {
		t.Errorf("second swap: %+v", rows)
	}
}

// TestCountDoesNotAllocate pins the hot path: no allocation.
func TestCountDoesNotAllocate(t *testing.T) {
	c, m, dep, key := counted(t)
	now := time.Now().UnixNano()
	if n := testing.AllocsPerRun(1000, func() { c.Count(m, dep, key, usage.ClassOK, now) }); n != 0 {
		t.Errorf("Count allocates %v times", n)
	}
}

// TestCountOverflowIsBounded fills a small table: what does not fit is
// counted as lost and the table does not grow within the interval; the
// next intervals' tables are larger, until the pairs fit, and never
// larger than MaxCells.
func TestCountOverflowIsBounded(t *testing.T) {
	t.Parallel()
	m := authmap.New()
	var c *Counter
	interval := func(pairs uint32) (lost uint64) {
		before, _ := c.Lost()
		for i := uint32(1); i <= pairs; i++ {
			c.Count(m, i, 0, usage.ClassOK, 1)
		}
		after, _ := c.Lost()
		swapRows(c, m)
		return after - before
	}
	c = NewCounter(16, m)
	if o := interval(1000); o == 0 || o > 1000-16 || len(c.cur.Load().cells) <= 16 {
		t.Errorf("first interval: lost %d, next table %d cells", o, len(c.cur.Load().cells))
	}
	if n := len(c.prev.cells); n != 16 {
		t.Errorf("the table grew within its interval: %d cells", n)
	}
	var swaps int
	for swaps = 1; swaps < 10 && interval(1000) > 0; swaps++ {
	}
	if swaps > 4 || interval(1000) > 0 {
		t.Errorf("1,000 pairs still do not fit after %d intervals (%d cells)", swaps, len(c.cur.Load().cells))
	}
	c = NewCounter(MaxCells/4, m)
	for range 3 {
		interval(300_000)
	}
	if n := len(c.cur.Load().cells); n > MaxCells {
		t.Errorf("a table of %d cells, past MaxCells", n)
	}
}

// BenchmarkCount is the cost counting adds to a request: one lookup in
// the interval's table, an atomic add, and the last use (its store once
// a millisecond: here the clock moves a microsecond per request, 1,000,000
// requests a second on one key).
func BenchmarkCount(b *testing.B) {
	c, m, dep, key := counted(b)
	now := time.Now().UnixNano()
	b.ReportAllocs()
	for b.Loop() {
		now += 1000
		c.Count(m, dep, key, usage.ClassOK, now)
	}
}

// BenchmarkCountParallel is BenchmarkCount from every core at once, on
// the same cell: the worst case (one deployment, one key).
func BenchmarkCountParallel(b *testing.B) {
	c, m, dep, key := counted(b)
	start := time.Now().UnixNano()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		now := start
		for pb.Next() {
			now += 1000
			c.Count(m, dep, key, usage.ClassOK, now)
		}
	})
}

func sseBody(chunks int) []byte {
	var sb strings.Builder
	for i := range chunks {
		fmt.Fprintf(&sb, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word%d \"},\"finish_reason\":null}],\"usage\":null}\n\n", i)
	}
	sb.WriteString("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":300,\"total_tokens\":312}}\n\ndata: [DONE]\n\n")
	return []byte(sb.String())
}

// BenchmarkScan is the scanner alone over a streamed completion of 300
// chunks (every chunk has "usage":null, as with include_usage) and over a
// non-streamed one, fed in 4 KiB reads as a relay does.
func BenchmarkScan(b *testing.B) {
	bodies := map[string][]byte{
		"sse":  sseBody(300),
		"json": []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1767225600,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"` + strings.Repeat("The quick brown fox jumps over the lazy dog, and then it rests for a while. ", 50) + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":600,"total_tokens":612}}`),
	}
	for _, name := range []string{"sse", "json"} {
		body := bodies[name]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			var s Scanner
			for b.Loop() {
				s.Reset()
				for p := body; len(p) > 0; {
					k := min(4096, len(p))
					_, _ = s.Write(p[:k])
					p = p[k:]
				}
			}
			if _, _, ok := s.Usage(); !ok {
				b.Fatal("no usage found")
			}
		})
	}
}

// BenchmarkAtomicAdd is one atomic add on its own: the floor of
// BenchmarkCount, to read its figure against on a busy machine.
func BenchmarkAtomicAdd(b *testing.B) {
	var n atomic.Uint64
	for b.Loop() {
		n.Add(1)
	}
}
