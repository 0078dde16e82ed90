package faults_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/services/internal/pgtest"
)

// TestNATSKilled kills NATS (file storage) with SIGKILL while four clients
// create keys and two gateways serve traffic, keeps it down for a while,
// then starts it again on the same files:
//   - no acknowledged CreateKey is lost: every one is in the stream after
//     the restart, and in the read model once it has caught up;
//   - while NATS is down the gateways keep answering from their maps, reads
//     from the read model keep working and writes fail fast with
//     unavailable (issue 10 point 4);
//   - no process dies of it; after the restart everything reconnects, and
//     the next change (UnlinkKey) is confirmed and enforced at once.
func TestNATSKilled(t *testing.T) {
	s := newStack(t)
	fig := newFigures(t, "NATS killed with SIGKILL (file storage), then restarted")
	pg := pgtest.URL(t)
	s.startKeys(pgArgs(t, pg)...)
	s.startDeployments(pgArgs(t, pg)...)
	s.startGateway("gw-1")
	s.startGateway("gw-2")

	const project, dep = "faults", "llama"
	oldSecret := s.createKey(project, "key-unlinked-later")
	s.createKey(project, "key-linked-later")
	s.deploy(project, dep, "key-unlinked-later")
	s.waitAnswer(project, dep, oldSecret, 200)

	tr := s.startTraffic(project, dep, oldSecret)
	w := s.startWriters(project, "burst", 4, 2*time.Second)
	w.waitWrites(t, waitLong, "40 acknowledged CreateKeys before the fault", func(rs []writeResult) bool { return len(acked(rs)) >= 40 })

	before := w.snapshot()
	loadStart := before[0].start
	marks := map[*proc]int{}
	for _, pr := range s.procs() {
		marks[pr] = pr.out.mark()
	}
	killed := time.Now()
	s.killNATS()
	// The outage lasts long enough for every writer to finish a call
	// started after the kill and for the gateways to answer from their
	// maps; a minimum length shapes the fault, it asserts nothing.
	minOutage := time.After(1500 * time.Millisecond)
	w.waitWrites(t, waitLong, "a finished write call started during the outage", func(rs []writeResult) bool {
		return len(startedIn(rs, killed.Add(200*time.Millisecond), time.Now())) >= 4
	})
	waitUntil(t, waitLong, "gateway answers during the outage", func() error {
		if n := len(tr.since(killed)); n < 40 {
			return fmt.Errorf("%d answers", n)
		}
		return nil
	})
	// The gateways say they are stale (SPEC §3).
	for _, g := range s.gateways {
		if err := poll(5*time.Second, func() error {
			st, err := s.gatewayStatus(t.Context(), g)
			if err == nil && !st.Stale {
				err = fmt.Errorf("readyz stale=false nats_connected=%v", st.NATSConnected)
			}
			return err
		}); err != nil {
			t.Errorf("%s does not report itself stale while NATS is down: %v", g.id, err)
		}
	}
	<-minOutage
	// Reads from the read model keep working while NATS is away.
	readCtx, cancel := callCtx(3 * time.Second)
	readStart := time.Now()
	_, readErr := s.listKeys(readCtx, project)
	readTook := time.Since(readStart)
	cancel()
	s.requireAlive("while NATS was down")

	restarted := time.Now()
	outage := restarted.Sub(killed)
	s.restartNATS()
	w.waitWrites(t, waitLong, "acknowledged CreateKeys after NATS restarted", func(rs []writeResult) bool {
		return len(acked(startedIn(rs, restarted, time.Now()))) >= 8
	})
	recovered := time.Now()
	w.halt()
	results := w.snapshot()

	// The writes during the outage: started after the services could see
	// the connection gone, before NATS was back.
	during := startedIn(results, killed.Add(200*time.Millisecond), restarted)
	var failLatency []time.Duration
	for _, r := range failed(during) {
		failLatency = append(failLatency, r.end.Sub(r.start))
	}
	gwDuring := tr.between(killed, restarted)
	fig.set("outage", ms(outage))
	fig.set("load", "4_CreateKey_clients+2_gateway_clients")
	fig.set("acked_writes_per_s_before", fmt.Sprintf("%.0f", float64(len(acked(before)))/killed.Sub(loadStart).Seconds()))
	fig.set("gateway_requests_per_s_during_outage", fmt.Sprintf("%.0f", float64(len(gwDuring))/outage.Seconds()))
	fig.set("writes_acked_total", len(acked(results)))
	fig.set("writes_during_outage", len(during))
	fig.set("writes_during_outage_errors", errorSummary(during))
	fig.set("failed_write_p50", ms(percentile(failLatency, 50)))
	fig.set("failed_write_max", ms(percentile(failLatency, 100)))
	fig.set("gateway_answers_during_outage", tally(gwDuring))
	fig.set("restart_to_first_acked_writes", ms(recovered.Sub(restarted)))

	// Gateways keep answering from their maps while NATS is down.
	if n := len(gwDuring) - countStatus(gwDuring, 200); n > 0 {
		t.Errorf("while NATS was down the gateways refused or failed %d of %d requests (%s); they must keep answering from their maps (SPEC §3)", n, len(gwDuring), tally(gwDuring))
	}
	if readErr != nil {
		t.Errorf("ListKeys from the read model failed while NATS was down (after %s): %v; reads must keep working (issue 10 point 4)", ms(readTook), readErr)
	}
	// Fail fast: a write while NATS is down answers unavailable at once,
	// not after a timeout. 1 s leaves room for -race on 2 busy cores; the
	// promise is about 100 ms.
	if len(failed(during)) == 0 {
		t.Errorf("no write failed during a %s NATS outage (%d started): %s", ms(outage), len(during), errorSummary(during))
	}
	slow := 0
	for _, r := range failed(during) {
		if r.end.Sub(r.start) > time.Second || connect.CodeOf(r.err) != connect.CodeUnavailable {
			slow++
		}
	}
	if slow > 0 {
		t.Errorf("%d of %d writes during the outage did not fail fast with unavailable (errors %s, p50 %s, max %s); want unavailable within about 100 ms (issue 10 point 4)",
			slow, len(failed(during)), errorSummary(during), ms(percentile(failLatency, 50)), ms(percentile(failLatency, 100)))
	}
	s.requireAlive("after NATS came back")

	// Zero acknowledged writes lost: every success is in the stream.
	rep := s.replayStream()
	lost := 0
	var lostNames []string
	for _, r := range acked(results) {
		if rep.created[project+"/"+r.name] == 0 {
			lost++
			lostNames = append(lostNames, r.name)
		}
	}
	fig.set("acked_writes_lost", lost)
	if lost > 0 {
		t.Errorf("%d acknowledged CreateKeys are not in the stream after NATS restarted: %s", lost, brief(lostNames))
	}
	// ... and the read model catches up with them, once each.
	var listed []string
	err := poll(waitLong, func() error {
		ctx, cancel := callCtx(5 * time.Second)
		defer cancel()
		var err error
		if listed, err = s.listKeys(ctx, project); err != nil {
			return err
		}
		// The stream is read again each time (a call the halted writers
		// gave up on may still be appended).
		if want := s.replayStream().liveKeys(project); len(listed) != len(want) {
			return fmt.Errorf("ListKeys has %d keys, the stream %d: %s", len(listed), len(want), diff(listed, want))
		}
		return nil
	})
	if err != nil {
		t.Errorf("the key read model did not catch up with the stream after NATS restarted: %v", err)
	}
	if dup := duplicates(listed); len(dup) > 0 {
		t.Errorf("ListKeys lists %d keys twice: %s", len(dup), brief(dup))
	}

	// The next change is confirmed and enforced. The deployment service
	// first has to be writing again: LinkKey is retried until it is.
	var linkErr error
	err = poll(waitLong, func() error {
		ctx, cancel := callCtx(5 * time.Second)
		defer cancel()
		_, linkErr = s.deps.LinkKey(ctx, connect.NewRequest(&deploymentv1.LinkKeyRequest{Project: project, Deployment: dep, Key: "key-linked-later"}))
		if connect.CodeOf(linkErr) == connect.CodeAlreadyExists {
			return nil // an earlier attempt got through
		}
		return linkErr
	})
	if err != nil {
		t.Fatalf("the deployment service did not accept a write within %s of NATS restarting: %v", waitLong, err)
	}
	ctx, cancel := callCtx(10 * time.Second)
	defer cancel()
	unlinked := time.Now()
	res, err := s.deps.UnlinkKey(ctx, connect.NewRequest(&deploymentv1.UnlinkKeyRequest{Project: project, Deployment: dep, Key: "key-unlinked-later"}))
	if err != nil {
		t.Fatalf("UnlinkKey after NATS restarted: %v", err)
	}
	p := res.Msg.GetPropagation()
	fig.set("unlink_after_restart", fmt.Sprintf("confirmed=%v(%d/%d)_in_%s", p.GetConfirmed(), p.GetGatewaysApplied(), p.GetGateways(), ms(time.Since(unlinked))))
	if !p.GetConfirmed() || p.GetGateways() != 2 {
		t.Errorf("UnlinkKey after NATS restarted: propagation %v; want confirmed by both gateways", p)
	}
	// Enforced from the next request on, at every gateway.
	after := time.Now()
	for _, g := range s.gateways {
		for range 10 {
			if st, code := s.ask(g, project, dep, oldSecret); st == 200 {
				t.Errorf("%s admitted the unlinked key after UnlinkKey was confirmed (%d %s)", g.id, st, code)
				break
			}
		}
	}
	// Each process logs the disconnect and the reconnect once per
	// transition, never per request (issue 10 point 4).
	disconnect, reconnect := regexp.MustCompile(`(?i)disconnect`), regexp.MustCompile(`(?i)reconnect`)
	// By now every process has reconnected (the unlink was confirmed);
	// a log line may trail a little.
	count := func(pr *proc) (downs, ups int) {
		for line := range strings.Lines(pr.out.since(marks[pr])) {
			if disconnect.MatchString(line) {
				downs++
			}
			if reconnect.MatchString(line) {
				ups++
			}
		}
		return downs, ups
	}
	_ = poll(5*time.Second, func() error {
		for _, pr := range s.procs() {
			if _, ups := count(pr); ups == 0 {
				return fmt.Errorf("%s: no reconnect line yet", pr.name)
			}
		}
		return nil
	})
	for _, pr := range s.procs() {
		downs, ups := count(pr)
		fig.set("log_lines_"+strings.ReplaceAll(pr.name, " ", "_"), fmt.Sprintf("disconnect×%d_reconnect×%d", downs, ups))
		if downs < 1 || downs > 2 || ups < 1 || ups > 2 {
			t.Errorf("%s logged %d lines about the NATS disconnect and %d about the reconnect for one outage; want each once per transition, not per request (issue 10 point 4)", pr.name, downs, ups)
		}
	}

	tr.halt()
	stale := countStatus(tr.since(after), 200)
	fig.set("stale_admits_after_confirmed_unlink", stale)
	if p.GetConfirmed() && stale > 0 {
		t.Errorf("%d requests with the unlinked key were admitted after UnlinkKey was confirmed", stale)
	}
}
