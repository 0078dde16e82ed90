package faults_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/infergate/infergate/services/internal/pgtest"
)

// TestKeyServiceKilled kills infergate-keys with SIGKILL during a burst of
// CreateKey calls from four clients and starts it again on the same
// address and read model. The clients behave like the CLI: a call that
// fails as unavailable or by its deadline is retried with the same
// Idempotency-Key (issue 10 point 3).
//   - Every CreateKey that succeeded is in the stream and, once the
//     restarted service has caught up, in ListKeys.
//   - Nothing is there twice: each key was created once in the stream and
//     is listed once. A retry of a call whose key the killed process had
//     already appended is recognised (answered replayed), never refused as
//     already_exists nor appended again.
func TestKeyServiceKilled(t *testing.T) {
	s := newStack(t)
	fig := newFigures(t, "key service killed with SIGKILL during a CreateKey burst")
	s.startKeys(pgArgs(t, pgtest.URL(t))...)

	const project = "faults"
	w := s.startWriters(project, "burst", 4, 3*time.Second, sameRequest)
	w.waitWrites(t, waitLong, "30 acknowledged CreateKeys before the kill", func(rs []writeResult) bool { return len(acked(rs)) >= 30 })

	before := w.snapshot()
	killed := time.Now()
	rate := float64(len(acked(before))) / killed.Sub(before[0].start).Seconds()
	s.keysProc.kill()
	waitUntil(t, waitLong, "write calls failing while the service is down", func() error {
		if n := w.failedAttemptsSince(killed); n < 4 {
			return fmt.Errorf("%d failed attempts", n)
		}
		return nil
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
	var replayed, retried []writeResult
	for _, r := range results {
		if r.replayed {
			replayed = append(replayed, r)
		}
		if r.attempts > 1 {
			retried = append(retried, r)
		}
	}
	fig.set("load", "4_CreateKey_clients_retrying_with_the_same_Idempotency-Key")
	fig.set("acked_writes_per_s_before", fmt.Sprintf("%.0f", rate))
	fig.set("writes_total", len(results))
	fig.set("writes_acked_total", len(acked(results)))
	fig.set("failed_attempts", w.attemptErrorSummary())
	fig.set("retried_writes", len(retried))
	fig.set("retries_answered_replayed", len(replayed))
	fig.set("restart_to_serving", ms(ready.Sub(restarted)))

	// Every write ended acknowledged: retries got through once the service
	// was back, and none was refused as a duplicate of itself.
	for _, r := range failed(results) {
		switch connect.CodeOf(r.err) {
		case connect.CodeAlreadyExists:
			t.Errorf("CreateKey %s retried with the same Idempotency-Key was refused as already_exists after %d attempts: the retry of a write the killed process had appended was not recognised (issue 10 point 3)", r.name, r.attempts)
		default:
			t.Errorf("CreateKey %s failed after %d attempts: %v", r.name, r.attempts, r.err)
		}
	}

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
	fig.set("acked_writes_lost", len(lost))
	fig.set("keys_created_twice_in_stream", len(doubled))
	if len(lost) > 0 {
		t.Errorf("%d acknowledged CreateKeys are not in the stream after the key service was killed: %s", len(lost), brief(lost))
	}
	if len(doubled) > 0 {
		t.Errorf("%d keys were created twice in the stream: %s", len(doubled), brief(doubled))
	}

	// The stream is read again each time, as in
	// TestReadModelDatabaseUnreachable: a call the halted writers gave up
	// on may still be appended.
	var listed []string
	err := poll(waitLong, func() error {
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
