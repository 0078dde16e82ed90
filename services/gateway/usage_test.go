package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"

	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/infergate/infergate/services/gateway"
	"github.com/infergate/infergate/services/internal/demomodel"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/readmodel"
)

// usageSide is what the control plane runs for usage: the usage stream
// and its projection, following it on the one follower, on b's server.
func usageSide(t *testing.T, b *backend) readmodel.UsageStore {
	t.Helper()
	js, err := jetstream.New(b.nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := eventstore.EnsureStream(ctx, js, eventstore.UsageConfig()); err != nil {
		t.Fatal(err)
	}
	stream, err := eventstore.Open(ctx, js, eventstore.UsageConfig())
	if err != nil {
		t.Fatal(err)
	}
	store := readmodel.NewUsageMemory()
	p := readmodel.NewUsageProjector(stream, store, nil)
	pctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(pctx) }()
	t.Cleanup(func() { stop(); <-done })
	return store
}

// tally is what the client saw: requests by class, and the tokens the
// upstream reported in the answers.
type tally struct {
	ok, clientErrors, refused      uint64
	promptTokens, completionTokens uint64
}

// chat sends a chat completion through the gateway as an OpenAI client
// would, and adds what came back to want.
func chat(t *testing.T, srv *httptest.Server, key string, stream bool, want *tally) {
	t.Helper()
	body := `{"model":"infergate-demo","messages":[{"role":"user","content":"count my tokens please"}]}`
	if stream {
		body = `{"model":"infergate-demo","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"stream and count"}]}`
	}
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/d/"+project+"/llama/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		want.refused++
		_, _ = io.Copy(io.Discard, resp.Body)
		return
	case resp.StatusCode != http.StatusOK:
		t.Fatalf("chat: %d", resp.StatusCode)
	}
	want.ok++
	var u struct {
		Usage *struct {
			Prompt     uint64 `json:"prompt_tokens"`
			Completion uint64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	if !stream {
		if err := json.NewDecoder(resp.Body).Decode(&u); err != nil || u.Usage == nil {
			t.Fatalf("chat answer: %v", err)
		}
		want.promptTokens += u.Usage.Prompt
		want.completionTokens += u.Usage.Completion
		return
	}
	sc := bufio.NewScanner(resp.Body)
	found := false
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		u.Usage = nil
		if err := json.Unmarshal([]byte(data), &u); err == nil && u.Usage != nil {
			want.promptTokens += u.Usage.Prompt
			want.completionTokens += u.Usage.Completion
			found = true
		}
	}
	if !found {
		t.Fatal("the stream carried no usage chunk")
	}
}

// notFound asks the upstream for a path it does not serve: let in, and a
// 404 from the upstream.
func notFound(t *testing.T, srv *httptest.Server, key string, want *tally) {
	t.Helper()
	if a := get(t, srv, "", "/d/"+project+"/llama/v1/nothing-here", "X-API-Key", key); a.status != http.StatusNotFound && a.status != http.StatusMethodNotAllowed {
		t.Fatalf("nothing-here: %d", a.status)
	}
	want.clientErrors++
}

// usageMatches reports whether the projection holds exactly what the
// client saw for key and for the deployment's keyless refusals.
func usageMatches(t *testing.T, store readmodel.UsageStore, key string, want, keyless tally) func() bool {
	report := time.Now().Add(5 * time.Second)
	return func() bool {
		f := readmodel.UsageFilter{Project: project, Key: key, Since: time.Now().Add(-time.Hour).Truncate(time.Minute),
			Until: time.Now().Add(time.Hour), Step: time.Hour}
		rows, err := store.Usage(t.Context(), f)
		if err != nil {
			t.Fatal(err)
		}
		last, _ := store.LastUsed(t.Context(), project)
		u := readmodel.Summarize(f, rows, last)
		got := tally{u.Total.OK, u.Total.ClientErrors, u.Total.Refused, u.Total.PromptTokens, u.Total.CompletionTokens}
		f.Key, f.Deployment, f.By = "", "llama", readmodel.ByKey
		rows, _ = store.Usage(t.Context(), f)
		var none tally
		for _, p := range readmodel.Summarize(f, rows, last).Parts {
			if p.Name == "" {
				none = tally{p.Counts.OK, p.Counts.ClientErrors, p.Counts.Refused, p.Counts.PromptTokens, p.Counts.CompletionTokens}
			}
		}
		if got != want || none != keyless || u.LastUsed.IsZero() {
			if time.Now().After(report) {
				report = time.Now().Add(5 * time.Second)
				t.Logf("usage so far: key %+v (want %+v), keyless %+v (want %+v)", got, want, none, keyless)
			}
			return false
		}
		return true
	}
}

// TestUsageCounts sends requests through a real gateway to the demo model
// and finds them counted in the usage projection — by key, deployment and
// status class, with the tokens the model reported in JSON and in SSE —
// across a restart of the gateway and an outage of NATS.
func TestUsageCounts(t *testing.T) { eachFront(t, testUsageCounts) }

func testUsageCounts(t *testing.T, front frontEnd) {
	b := newBackend(t)
	store := usageSide(t, b)
	model := httptest.NewServer((&demomodel.Server{}).Handler(""))
	t.Cleanup(model.Close)
	secret, _ := b.key("ci-runner", nil)
	seq := b.deployment("llama", model.URL, true, []string{"ci-runner"})
	cfg := gateway.Config{NATS: b.nc, ID: "gw-" + front.name, Usage: gateway.Usage{FlushInterval: 100 * time.Millisecond}}

	g, srv, stop := runGatewayOn(t, b, front, cfg)
	waitApplied(t, g, seq)
	var want, keyless tally
	for range 3 {
		chat(t, srv, secret, false, &want)
	}
	chat(t, srv, secret, true, &want)
	notFound(t, srv, secret, &want)
	chat(t, srv, "", false, &keyless)           // missing key
	chat(t, srv, "ig_notakey", false, &keyless) // malformed key
	eventually(t, "the first requests counted", usageMatches(t, store, "ci-runner", want, keyless))

	// A restart: the stopped gateway published what it had counted, the
	// new one (a new run, its flushes numbered from 1 again) adds to it.
	stop()
	g, srv, stop = runGatewayOn(t, b, front, cfg)
	waitApplied(t, g, seq)
	chat(t, srv, secret, false, &want)
	chat(t, srv, secret, true, &want)
	eventually(t, "the requests after a restart counted", usageMatches(t, store, "ci-runner", want, keyless))

	// NATS away: the gateway keeps serving (within its staleness bound)
	// and keeps the counts; they arrive once NATS is back.
	b.srv.Shutdown()
	for range 2 {
		chat(t, srv, secret, false, &want)
	}
	chat(t, srv, "", false, &keyless)
	eventually(t, "a flush failed while NATS was away", func() bool {
		return metric(t, srv, "infergate_gateway_usage_flush_failures_total") > 0
	})
	b.start()
	eventually(t, "the requests during the outage counted once NATS was back", usageMatches(t, store, "ci-runner", want, keyless))
	if n := metric(t, srv, "infergate_gateway_usage_dropped_requests_total"); n != 0 {
		t.Errorf("%v requests dropped", n)
	}
	stop()
}

// metric reads one value from the gateway's /metrics.
func metric(t *testing.T, srv *httptest.Server, name string) float64 {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
