package main_test

import (
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"

	auditv1 "github.com/infergate/infergate/gen/infergate/audit/v1"
	"github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/servicetest"
)

// TestProcess runs the real binary against NATS, configured by flags, and
// stops it with SIGTERM.
func TestProcess(t *testing.T) {
	t.Parallel()
	bin := servicetest.Build(t, "infergate-audit")
	nats := natstest.Start(t)
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
