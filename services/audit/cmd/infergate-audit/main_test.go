package main_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	auditv1 "github.com/infergate/infergate/gen/infergate/audit/v1"
	"github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/servicetest"
)

// TestProcess runs the real binary against NATS, configured by flags, and
// stops it with SIGTERM.
func TestProcess(t *testing.T) {
	t.Parallel()
	bin := servicetest.Build(t, "infergate-audit")
	nats := natstest.Start(t)
	natstest.EventStore(t, natstest.JetStreamOn(t, nats)) // an operator creates the stream
	tokens, token := servicetest.TokensFile(t)
	addr := servicetest.FreeAddr(t)
	p := servicetest.StartProcess(t, bin, nil, "--addr", addr, "--nats-url", nats.ClientURL(), "--admin-tokens-file", tokens)
	client := auditv1connect.NewAuditServiceClient(http.DefaultClient, "http://"+addr, servicetest.ClientOptions(token)...)
	servicetest.WaitFor(t, "service answers", func(ctx context.Context) error {
		_, err := client.ListEvents(ctx, connect.NewRequest(&auditv1.ListEventsRequest{Project: "team-a"}))
		return err
	})
	res, err := client.CheckAccess(t.Context(), connect.NewRequest(&auditv1.CheckAccessRequest{Project: "team-a", Deployment: "llama", Key: "ci-runner"}))
	if err != nil || res.Msg.GetAllowed() || res.Msg.GetReason() != "unknown_deployment" {
		t.Errorf("CheckAccess on an empty stream = %v, %v", res, err)
	}
	p.Stop()
}

// TestProcessNeverChangesTheStream: the operator's mistake from issue 10 —
// starting a service with a replica count the stream does not have, or
// before the stream exists — is a start-up error that says what is wrong,
// and the stream stays as its owner made it.
func TestProcessNeverChangesTheStream(t *testing.T) {
	t.Parallel()
	bin := servicetest.Build(t, "infergate-audit")
	nats := natstest.Start(t)
	tokens, _ := servicetest.TokensFile(t)
	run := func(env ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "--addr", servicetest.FreeAddr(t), "--nats-url", nats.ClientURL(), "--admin-tokens-file", tokens)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if ee := new(exec.ExitError); !errors.As(err, &ee) || ee.ExitCode() != 1 {
			t.Fatalf("process ended with %v, want exit status 1; output:\n%s", err, out)
		}
		return string(out)
	}
	js := natstest.JetStreamOn(t, nats)

	if out := run(); !strings.Contains(out, "stream not found") || !strings.Contains(out, "infergate admin stream create") {
		t.Errorf("started without a stream, it said:\n%s", out)
	}
	if _, err := js.Stream(t.Context(), eventstore.DefaultStream); err == nil {
		t.Error("the service created the stream")
	}

	natstest.EventStore(t, js) // one replica, as on a single server
	if out := run("INFERGATE_STREAM_REPLICAS=3"); !strings.Contains(out, "replicas is 1, expected 3") {
		t.Errorf("started expecting 3 replicas, it said:\n%s", out)
	}
	s, err := js.Stream(t.Context(), eventstore.DefaultStream)
	if err != nil || s.CachedInfo().Config.Replicas != 1 {
		t.Errorf("the stream after the failed start: %v, %v", s, err)
	}
}
