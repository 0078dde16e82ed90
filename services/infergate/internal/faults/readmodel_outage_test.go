package faults_test

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/pgtest"
)

// TestReadModelDatabaseUnreachable cuts the key service's PostgreSQL
// connection (a TCP proxy in front of the server that closes every
// connection and refuses new ones) during a burst of CreateKey calls from
// four clients, then mends it (issue 10 point 3):
//   - every CreateKey that appended its key answered with the secret: no
//     key exists whose secret was never shown, so none was acknowledged
//     and then lost to an error;
//   - every acknowledged key is in the stream;
//   - once the database is back the read model catches up: ListKeys lists
//     exactly the stream's keys, each once.
func TestReadModelDatabaseUnreachable(t *testing.T) {
	s := newStack(t)
	fig := newFigures(t, "read-model database unreachable during a CreateKey burst")
	pg, err := url.Parse(pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := natstest.NewProxy(t, pg.Host)
	viaProxy := *pg
	viaProxy.Host = proxy.Addr()
	s.startKeys(pgArgs(t, viaProxy.String())...)

	const project = "faults"
	w := s.startWriters(project, "burst", 4, 3*time.Second)
	w.waitWrites(t, waitLong, "20 acknowledged CreateKeys before the fault", func(rs []writeResult) bool { return len(acked(rs)) >= 20 })

	before := w.snapshot()
	cut := time.Now()
	rate := float64(len(acked(before))) / cut.Sub(before[0].start).Seconds()
	proxy.Cut()
	minOutage := time.After(2 * time.Second)
	w.waitWrites(t, waitLong, "write calls started during the outage", func(rs []writeResult) bool {
		return len(startedIn(rs, cut, time.Now())) >= 4
	})
	<-minOutage
	s.requireAlive("while the read-model database was unreachable")
	mended := time.Now()
	if err := proxy.Heal(); err != nil {
		t.Fatal(err)
	}
	w.waitWrites(t, waitLong, "acknowledged CreateKeys after the database came back", func(rs []writeResult) bool {
		return len(acked(startedIn(rs, mended, time.Now()))) >= 8
	})
	firstAcks := time.Since(mended)
	w.halt()
	s.requireAlive("after the read-model database came back")
	results := w.snapshot()
	during := startedIn(results, cut, mended)
	fig.set("outage", ms(mended.Sub(cut)))
	fig.set("load", "4_CreateKey_clients")
	fig.set("acked_writes_per_s_before", fmt.Sprintf("%.0f", rate))
	fig.set("writes_total", len(results))
	fig.set("writes_acked_total", len(acked(results)))
	fig.set("writes_during_outage", len(during))
	fig.set("writes_acked_during_outage", len(acked(during)))
	fig.set("writes_during_outage_errors", errorSummary(during))
	fig.set("mend_to_8_acked_writes", ms(firstAcks))

	// Every acknowledged CreateKey returned its secret.
	for _, r := range acked(results) {
		if !strings.HasPrefix(r.secret, "ig_") {
			t.Errorf("CreateKey %s succeeded without a secret (%q)", r.name, r.secret)
		}
	}
	rep := s.replayStream()
	// No key exists whose CreateKey failed: that key's secret was never
	// shown, and a retry would answer already_exists.
	var orphans []string
	for _, r := range failed(results) {
		if rep.created[project+"/"+r.name] > 0 {
			orphans = append(orphans, fmt.Sprintf("%s (%v after %s)", r.name, r.err, ms(r.end.Sub(r.start))))
		}
	}
	fig.set("keys_appended_but_answered_with_an_error", len(orphans))
	if len(orphans) > 0 {
		t.Errorf("%d CreateKeys were appended to the stream but answered with an error, so their secrets were never shown: %s; once an append is acknowledged the RPC must succeed (issue 10 point 3)",
			len(orphans), brief(orphans))
	}
	// Zero acknowledged writes lost.
	var lost []string
	for _, r := range acked(results) {
		if rep.created[project+"/"+r.name] == 0 {
			lost = append(lost, r.name)
		}
	}
	fig.set("acked_writes_lost", len(lost))
	if len(lost) > 0 {
		t.Errorf("%d acknowledged CreateKeys are not in the stream: %s", len(lost), brief(lost))
	}

	// The read model catches up, no loss, no doubles. The stream is read
	// again each time: a CreateKey the halted writers gave up on may still
	// be appended after the replay above (the service finishes what it
	// started), and the read model then rightly lists it.
	var listed []string
	caughtUp := time.Now()
	err = poll(waitLong, func() error {
		ctx, cancel := callCtx(5 * time.Second)
		defer cancel()
		var err error
		if listed, err = s.listKeys(ctx, project); err != nil {
			return err
		}
		want := s.replayStream().liveKeys(project)
		got := slices.Sorted(slices.Values(listed))
		if !slices.Equal(got, want) {
			return fmt.Errorf("ListKeys lists %d keys, the stream holds %d: %s", len(got), len(want), diff(got, want))
		}
		return nil
	})
	fig.set("read_model_caught_up_after_writes_stopped", ms(time.Since(caughtUp)))
	if err != nil {
		t.Errorf("the read model did not catch up with the stream after the database came back: %v", err)
	}
	if dup := duplicates(listed); len(dup) > 0 {
		t.Errorf("ListKeys lists %d keys twice after the database came back: %s", len(dup), brief(dup))
	}
	fig.set("read_model_duplicates", len(duplicates(listed)))
}
