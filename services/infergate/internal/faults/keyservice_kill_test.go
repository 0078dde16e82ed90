package faults_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/infergate/infergate/services/internal/pgtest"
)

// TestKeyServiceKilled kills infergate-keys with SIGKILL during a burst of
// CreateKey calls from four clients and starts it again on the same
// address and read model:
//   - every CreateKey that succeeded is in the stream and, once the
//     restarted service has caught up, in ListKeys;
//   - nothing is there twice: each key was created once in the stream and
//     is listed once.
func TestKeyServiceKilled(t *testing.T) {
	s := newStack(t)
	fig := newFigures(t, "key service killed with SIGKILL during a CreateKey burst")
	s.startKeys(pgArgs(t, pgtest.URL(t))...)

	const project = "faults"
	w := s.startWriters(project, "burst", 4, 3*time.Second)
	w.waitWrites(t, waitLong, "30 acknowledged CreateKeys before the kill", func(rs []writeResult) bool { return len(acked(rs)) >= 30 })

	before := w.snapshot()
	killed := time.Now()
	rate := float64(len(acked(before))) / killed.Sub(before[0].start).Seconds()
	s.keysProc.kill()
	w.waitWrites(t, waitLong, "write calls failing while the service is down", func(rs []writeResult) bool {
		return len(failed(startedIn(rs, killed, time.Now()))) >= 4
	})
	restarted := time.Now()
	s.keysProc.start()
	s.waitKeys()
	ready := time.Now()
	w.waitWrites(t, waitLong, "acknowledged CreateKeys after the restart", func(rs []writeResult) bool {
		return len(acked(startedIn(rs, ready, time.Now()))) >= 12
	})
	w.halt()
	results := w.snapshot()
	// Calls in flight at the kill, or started while it was down.
	around := startedIn(results, killed.Add(-3*time.Second), ready)
	fig.set("load", "4_CreateKey_clients")
	fig.set("acked_writes_per_s_before", fmt.Sprintf("%.0f", rate))
	fig.set("writes_total", len(results))
	fig.set("writes_acked_total", len(acked(results)))
	fig.set("writes_around_the_kill_errors", errorSummary(around))
	fig.set("restart_to_serving", ms(ready.Sub(restarted)))

	rep := s.replayStream()
	var lost, doubled []string
	for _, r := range acked(results) {
		switch n := rep.created[project+"/"+r.name]; {
		case n == 0:
			lost = append(lost, r.name)
		case n > 1:
			doubled = append(doubled, r.name)
		}
	}
	unacked := 0
	for _, r := range failed(results) {
		if rep.created[project+"/"+r.name] > 0 {
			unacked++
		}
	}
	fig.set("acked_writes_lost", len(lost))
	fig.set("keys_created_twice_in_stream", len(doubled))
	fig.set("failed_calls_whose_key_exists", unacked)
	if len(lost) > 0 {
		t.Errorf("%d acknowledged CreateKeys are not in the stream after the key service was killed: %s", len(lost), brief(lost))
	}
	if len(doubled) > 0 {
		t.Errorf("%d keys were created twice in the stream: %s", len(doubled), brief(doubled))
	}

	want := rep.liveKeys(project)
	var listed []string
	err := poll(waitLong, func() error {
		ctx, cancel := callCtx(5 * time.Second)
		defer cancel()
		var err error
		if listed, err = s.listKeys(ctx, project); err != nil {
			return err
		}
		got := slices.Sorted(slices.Values(listed))
		if !slices.Equal(got, want) {
			return fmt.Errorf("ListKeys lists %d keys, the stream holds %d: %s", len(got), len(want), diff(got, want))
		}
		return nil
	})
	if err != nil {
		t.Errorf("the restarted key service's read model is not the stream: %v", err)
	}
	dup := duplicates(listed)
	fig.set("read_model_duplicates", len(dup))
	if len(dup) > 0 {
		t.Errorf("ListKeys lists %d keys twice after the restart: %s", len(dup), brief(dup))
	}
	var missing []string
	for _, r := range acked(results) {
		if !slices.Contains(listed, r.name) {
			missing = append(missing, r.name)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%d acknowledged keys are missing from ListKeys after the restart: %s", len(missing), brief(missing))
	}
}
