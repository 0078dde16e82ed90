package tally

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"

	usagev1 "github.com/infergate/infergate/gen/infergate/usage/v1"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/usage"
	"google.golang.org/protobuf/proto"
)

// TestEncodeIsProto: a frozen message is, byte for byte, what
// proto.Marshal makes of the same usagev1.Flush, and decodes to it: so
// the hand encoding cannot drift from the schema.
func TestEncodeIsProto(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 63) // a row over 127 bytes
	m, ids := keysMap(t, "team-a", "chat", []string{"k", long})
	lm, lids := keysMap(t, long, long, []string{long})
	keyless := ids[0] &^ (1<<32 - 1)
	minute := int64(28_000_000) * int64(time.Minute)
	type add struct {
		m  *authmap.Map
		id uint64
		c  counts
	}
	cases := []struct {
		name    string
		adds    []add
		dropped uint64
		want    []*usagev1.Row
	}{
		{name: "empty, dropped only", dropped: 7},
		{name: "keyless, zero counts, tokens",
			adds: []add{{m, keyless, counts{prompt: 12, completion: 300, last: minute + 5}}},
			want: []*usagev1.Row{{Project: "team-a", Deployment: "chat", Minute: minute / 1e9,
				Counts: &usagev1.Counts{PromptTokens: 12, CompletionTokens: 300}, LastUsedUnixNano: minute + 5}}},
		{name: "classes, two pairs, dropped", dropped: 3,
			adds: []add{
				{m, ids[0], counts{n: [usage.NumClasses]uint64{1, 2, 3, 4}, last: minute}},
				{m, ids[1], counts{n: [usage.NumClasses]uint64{0, 0, 0, 1}, last: minute + 1}},
			},
			want: []*usagev1.Row{
				{Project: "team-a", Deployment: "chat", Key: "k", Minute: minute / 1e9,
					Counts: &usagev1.Counts{Ok: 1, ClientErrors: 2, ServerErrors: 3, Refused: 4}, LastUsedUnixNano: minute},
				{Project: "team-a", Deployment: "chat", Key: long, Minute: minute / 1e9,
					Counts: &usagev1.Counts{Refused: 1}, LastUsedUnixNano: minute + 1},
			}},
		{name: "large numbers, long names",
			adds: []add{{lm, lids[0], counts{n: [usage.NumClasses]uint64{math.MaxUint64, 1 << 63, math.MaxUint32, 1 << 7},
				prompt: math.MaxUint64, completion: 1 << 56, last: math.MaxInt64}}},
			want: []*usagev1.Row{{Project: long, Deployment: long, Key: long, Minute: math.MaxInt64 / int64(time.Minute) * 60,
				Counts: &usagev1.Counts{Ok: math.MaxUint64, ClientErrors: 1 << 63, ServerErrors: math.MaxUint32, Refused: 1 << 7,
					PromptTokens: math.MaxUint64, CompletionTokens: 1 << 56}, LastUsedUnixNano: math.MaxInt64}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFlusher(FlusherConfig{Counter: NewCounter(0, m), Map: func() *authmap.Map { return m }, Region: "eu-west", ID: "gw-1"})
			for _, a := range tc.adds {
				f.add(a.m, a.id, &a.c)
			}
			f.dropped = tc.dropped
			f.freeze()
			want := &usagev1.Flush{Gateway: "gw-1", Region: "eu-west", Boot: f.boot, Sequence: 1, Rows: tc.want, Dropped: tc.dropped}
			wantBytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(f.inflight, wantBytes) {
				t.Errorf("encoded\n%x\nproto.Marshal\n%x", f.inflight, wantBytes)
			}
			if got := inflight(t, f); !proto.Equal(got, want) {
				t.Errorf("decoded %v\nwant %v", got, want)
			}
		})
	}
}

// TestFlusherMapChange: rows are kept by the numbers of the map counted
// against, so a number that stands for another key in the next map does
// not mix the two keys, and a key's rows of the two maps add up.
func TestFlusherMapChange(t *testing.T) {
	t.Parallel()
	m1, ids1 := keysMap(t, "p", "d", []string{"a", "b"})
	m2, ids2 := keysMap(t, "p", "d", []string{"b", "a"}) // a's numbers are b's in m1
	if ids1[0] != ids2[0] {
		t.Fatalf("the maps number differently: %x, %x", ids1, ids2)
	}
	c := NewCounter(0, m1)
	f := NewFlusher(FlusherConfig{Counter: c, Map: func() *authmap.Map { return m2 }, Region: "eu", ID: "gw"})
	now := time.Now().UnixNano()
	count := func(m *authmap.Map, id uint64, n int) {
		for range n {
			c.Count(m, uint32(id>>32), uint32(id), usage.ClassOK, now)
		}
	}
	count(m1, ids1[0], 2) // a
	count(m1, ids1[1], 3) // b
	f.MapChanged(m2)
	count(m2, ids2[0], 5) // b, with a's numbers in m1
	count(m2, ids2[1], 7) // a
	if err := f.Flush(t.Context()); err == nil {
		t.Fatal("flushed without NATS")
	}
	got := map[string]uint64{}
	for _, r := range inflight(t, f).GetRows() {
		if r.GetProject() != "p" || r.GetDeployment() != "d" {
			t.Errorf("row %v", r)
		}
		got[r.GetKey()] += r.GetCounts().GetOk()
	}
	if got["a"] != 9 || got["b"] != 8 || len(got) != 2 {
		t.Errorf("requests by key %v, want a 9, b 8", got)
	}
}

// TestFlusherRowsBounded: while publishing keeps up with only part of what
// comes, pending never empties; the frozen rows are dropped from memory
// all the same, and every request is published once, in its minute.
func TestFlusherRowsBounded(t *testing.T) {
	t.Parallel()
	names := keyNames(300)
	m, ids := keysMap(t, "p", "d", names)
	f := NewFlusher(FlusherConfig{Counter: NewCounter(0, m), Map: func() *authmap.Map { return m }})
	type rowOf struct {
		key    string
		minute int64
	}
	want, got := map[rowOf]uint64{}, map[rowOf]uint64{}
	publish := func() {
		f.inflight = nil
		f.freeze()
		minute := int64(math.MinInt64)
		for _, r := range inflight(t, f).GetRows() {
			if r.GetMinute() < minute {
				t.Fatalf("minute %d after %d in one message", r.GetMinute(), minute)
			}
			minute = r.GetMinute()
			got[rowOf{r.GetKey(), r.GetMinute()}] += r.GetCounts().GetOk()
		}
	}
	add := func(minute int64, ids []uint64) {
		for i, id := range ids {
			last := (28_000_000 + minute) * int64(time.Minute)
			f.add(m, id, &counts{n: [usage.NumClasses]uint64{uint64(i + 1)}, last: last})
			want[rowOf{names[i], last / 1e9}] += uint64(i + 1)
		}
	}
	add(0, ids)
	for round := range 100 {
		// As many new rows as a message takes: 300 stay pending.
		add(int64(round+1), ids[:maxRows])
		peak := f.pending
		publish()
		if f.pending == 0 || cap(f.rows) > 4*peak || len(f.index) > len(f.rows) {
			t.Fatalf("round %d: %d rows (%d kept) and %d keys for %d pending", round, len(f.rows), cap(f.rows), len(f.index), f.pending)
		}
	}
	if f.pending == 0 {
		t.Fatal("pending emptied: nothing tested")
	}
	for f.pending > 0 {
		publish()
	}
	if len(got) != len(want) {
		t.Errorf("%d rows published, want %d", len(got), len(want))
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%v: %d requests published, want %d", k, got[k], n)
		}
	}
}

// TestCountLate: a request counted into a table just taken out comes with
// the next swap, once.
func TestCountLate(t *testing.T) {
	t.Parallel()
	c, m, dep, key := counted(t)
	now := time.Now().UnixNano()
	c.Count(m, dep, key, usage.ClassOK, now)
	old := c.cur.Load()
	if rows := swapRows(c, m); len(rows) != 1 || rows[0].Counts[usage.ClassOK] != 1 {
		t.Fatalf("first swap %+v", rows)
	}
	old.find(uint64(dep)<<32 | uint64(key)).n[usage.ClassServerError].Add(1) // as a request that loaded old before the swap
	rows := swapRows(c, m)
	if len(rows) != 1 || rows[0].Counts != [usage.NumClasses]uint64{usage.ClassServerError: 1} {
		t.Errorf("second swap %+v", rows)
	}
	if rows := swapRows(c, m); len(rows) != 0 {
		t.Errorf("third swap %+v", rows)
	}
}
