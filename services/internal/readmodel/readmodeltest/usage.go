package readmodeltest

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	usagev1 "github.com/infergate/infergate/gen/infergate/usage/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/readmodel"
)

// RunUsage is the conformance suite of readmodel.UsageStore: every
// implementation (memory, PostgreSQL) runs it. newStore returns an empty
// store of its own per subtest.
func RunUsage(t *testing.T, newStore func(t *testing.T) readmodel.UsageStore) {
	// t0 is a whole minute.
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	minute := func(m int) int64 { return t0.Add(time.Duration(m) * time.Minute).Unix() }
	at := func(m int, s int) int64 {
		return t0.Add(time.Duration(m)*time.Minute + time.Duration(s)*time.Second).UnixNano()
	}
	row := func(project, dep, key string, m, sec int, ok, c4, c5, refused, prompt, completion uint64) *usagev1.Row {
		return &usagev1.Row{Project: project, Deployment: dep, Key: key, Minute: minute(m), LastUsedUnixNano: at(m, sec),
			Counts: &usagev1.Counts{Ok: ok, ClientErrors: c4, ServerErrors: c5, Refused: refused, PromptTokens: prompt, CompletionTokens: completion}}
	}
	life := eventstore.Identity{Stream: eventstore.UsageStream, Created: t0.Add(-time.Hour)}
	rec := func(seq uint64, gw, boot string, flushSeq uint64, rows ...*usagev1.Row) eventstore.Record {
		data, err := proto.Marshal(&usagev1.Flush{Gateway: gw, Region: "eu", Boot: boot, Sequence: flushSeq, Rows: rows})
		if err != nil {
			t.Fatal(err)
		}
		return eventstore.Record{Sequence: seq, Subject: "infergate.usage.eu." + gw, Data: data}
	}
	apply := func(t *testing.T, s readmodel.UsageStore, recs ...eventstore.Record) {
		t.Helper()
		for _, r := range recs {
			if err := s.Apply(t.Context(), r); err != nil {
				t.Fatalf("apply %d: %v", r.Sequence, err)
			}
		}
	}
	usage := func(t *testing.T, s readmodel.UsageStore, f readmodel.UsageFilter) readmodel.Usage {
		t.Helper()
		f.Project = "p"
		if f.Since.IsZero() {
			f.Since, f.Until, f.Step = t0, t0.Add(time.Hour), time.Minute
		}
		rows, err := s.Usage(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		last, err := s.LastUsed(t.Context(), f.Project)
		if err != nil {
			t.Fatal(err)
		}
		return readmodel.Summarize(f, rows, last)
	}
	fresh := func(t *testing.T) readmodel.UsageStore {
		s := newStore(t)
		if err := s.Reset(t.Context(), life); err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Two gateways, three minutes, two keys and a keyless request, two
	// deployments, and another project.
	standard := []eventstore.Record{
		rec(1, "gw-1", "b1", 1,
			row("p", "llama", "ci", 0, 10, 5, 1, 0, 0, 100, 50),
			row("p", "llama", "", 0, 20, 0, 0, 0, 2, 0, 0),
			row("q", "llama", "ci", 0, 30, 9, 0, 0, 0, 0, 0)),
		rec(2, "gw-2", "b9", 1,
			row("p", "llama", "ci", 0, 40, 2, 0, 1, 0, 10, 5),
			row("p", "mistral", "ci", 2, 5, 3, 0, 0, 1, 0, 0)),
		rec(3, "gw-1", "b1", 2,
			row("p", "llama", "laptop", 3, 59, 1, 0, 0, 0, 0, 0)),
	}

	t.Run("totals, series, breakdown and last use of a key", func(t *testing.T) {
		t.Parallel()
		s := fresh(t)
		apply(t, s, standard...)
		u := usage(t, s, readmodel.UsageFilter{Key: "ci", By: readmodel.ByDeployment})
		want := readmodel.Counts{OK: 10, ClientErrors: 1, ServerErrors: 1, Refused: 1, PromptTokens: 110, CompletionTokens: 55}
		if u.Total != want {
			t.Errorf("total %+v, want %+v", u.Total, want)
		}
		if !u.LastUsed.Equal(time.Unix(0, at(2, 5))) {
			t.Errorf("last used %v, want %v", u.LastUsed, time.Unix(0, at(2, 5)))
		}
		if len(u.Series) != 2 || !u.Series[0].Start.Equal(t0) || u.Series[0].Counts.OK != 7 || !u.Series[1].Start.Equal(t0.Add(2*time.Minute)) || u.Series[1].Counts.OK != 3 {
			t.Errorf("series %+v", u.Series)
		}
		if len(u.Parts) != 2 || u.Parts[0].Name != "llama" || u.Parts[0].Counts.Requests() != 9 || u.Parts[1].Name != "mistral" ||
			!u.Parts[0].LastUsed.Equal(time.Unix(0, at(0, 40))) {
			t.Errorf("parts %+v", u.Parts)
		}
	})

	t.Run("a deployment over every key and keyless requests, by key", func(t *testing.T) {
		t.Parallel()
		s := fresh(t)
		apply(t, s, standard...)
		u := usage(t, s, readmodel.UsageFilter{Deployment: "llama", By: readmodel.ByKey})
		if u.Total.Requests() != 12 || u.Total.Refused != 2 {
			t.Errorf("total %+v", u.Total)
		}
		var names []string
		for _, p := range u.Parts {
			names = append(names, p.Name)
		}
		if len(names) != 3 || names[0] != "" || names[1] != "ci" || names[2] != "laptop" {
			t.Errorf("parts %q", names)
		}
		if !u.LastUsed.Equal(time.Unix(0, at(3, 59))) {
			t.Errorf("last used %v", u.LastUsed)
		}
		// One key of it.
		if u := usage(t, s, readmodel.UsageFilter{Deployment: "llama", Key: "laptop", By: readmodel.ByKey}); u.Total.OK != 1 || len(u.Parts) != 1 {
			t.Errorf("llama/laptop: %+v", u)
		}
	})

	t.Run("steps and time range", func(t *testing.T) {
		t.Parallel()
		s := fresh(t)
		apply(t, s, standard...)
		u := usage(t, s, readmodel.UsageFilter{Key: "ci", Since: t0, Until: t0.Add(10 * time.Minute), Step: 5 * time.Minute})
		if len(u.Series) != 1 || !u.Series[0].Start.Equal(t0) || u.Series[0].Counts.Requests() != 13 {
			t.Errorf("5-minute steps: %+v", u.Series)
		}
		u = usage(t, s, readmodel.UsageFilter{Key: "ci", Since: t0.Add(time.Minute), Until: t0.Add(10 * time.Minute), Step: time.Minute})
		if u.Total.Requests() != 4 {
			t.Errorf("from minute 1: total %+v", u.Total)
		}
		// The last use is of all time, not only of the range.
		if !u.LastUsed.Equal(time.Unix(0, at(2, 5))) {
			t.Errorf("last used %v", u.LastUsed)
		}
	})

	t.Run("a flush stored twice counts once", func(t *testing.T) {
		t.Parallel()
		s := fresh(t)
		apply(t, s, standard...)
		// The stream stored gw-1's first flush again (sent again past the
		// duplicate window), and a new run of gw-1 starts over at 1.
		apply(t, s, rec(4, "gw-1", "b1", 1, row("p", "llama", "ci", 0, 10, 5, 1, 0, 0, 100, 50)),
			rec(5, "gw-1", "b2", 1, row("p", "llama", "ci", 5, 1, 1, 0, 0, 0, 0, 0)))
		if u := usage(t, s, readmodel.UsageFilter{Key: "ci"}); u.Total.OK != 11 {
			t.Errorf("ok %d, want 11", u.Total.OK)
		}
	})

	t.Run("checkpoint: records at or below it are skipped, a bad flush is passed", func(t *testing.T) {
		t.Parallel()
		s := fresh(t)
		apply(t, s, standard...)
		apply(t, s, standard[1]) // again, at its own sequence
		apply(t, s, eventstore.Record{Sequence: 4, Data: []byte("not a flush")})
		cp, err := s.Checkpoint(t.Context())
		if err != nil || cp.Sequence != 4 || !cp.Stream.Equal(life) {
			t.Errorf("checkpoint %+v (%v)", cp, err)
		}
		if u := usage(t, s, readmodel.UsageFilter{Key: "ci"}); u.Total.OK != 10 {
			t.Errorf("ok %d, want 10", u.Total.OK)
		}
	})

	t.Run("reset empties it", func(t *testing.T) {
		t.Parallel()
		s := fresh(t)
		apply(t, s, standard...)
		next := eventstore.Identity{Stream: eventstore.UsageStream, Created: t0}
		if err := s.Reset(t.Context(), next); err != nil {
			t.Fatal(err)
		}
		cp, err := s.Checkpoint(t.Context())
		if err != nil || cp.Sequence != 0 || !cp.Stream.Equal(next) {
			t.Errorf("checkpoint %+v (%v)", cp, err)
		}
		if u := usage(t, s, readmodel.UsageFilter{Key: "ci"}); u.Total.Requests() != 0 || !u.LastUsed.IsZero() {
			t.Errorf("after reset: %+v", u)
		}
		// The same gateway run's flushes count again in the new life.
		apply(t, s, standard[0])
		if u := usage(t, s, readmodel.UsageFilter{Key: "ci"}); u.Total.OK != 5 {
			t.Errorf("after reset and a flush: %+v", u.Total)
		}
	})

	t.Run("projects are apart", func(t *testing.T) {
		t.Parallel()
		s := fresh(t)
		apply(t, s, standard...)
		last, err := s.LastUsed(t.Context(), "q")
		if err != nil || len(last) != 1 || last[0].Key != "ci" || last[0].Deployment != "llama" {
			t.Errorf("q's last uses: %+v (%v)", last, err)
		}
		if last, err := s.LastUsed(t.Context(), "nobody"); err != nil || len(last) != 0 {
			t.Errorf("unknown project: %+v (%v)", last, err)
		}
	})
}
