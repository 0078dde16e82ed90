package main_test

import (
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	"github.com/infergate/infergate/gen/infergate/deployment/v1/deploymentv1connect"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/servicetest"
)

// TestProcess runs the real binary against NATS with a memory read model,
// configured by environment only, and stops it with SIGTERM.
func TestProcess(t *testing.T) {
	t.Parallel()
	bin := servicetest.Build(t, "infergate-deployments")
	nats := natstest.Start(t)
	natstest.EventStore(t, natstest.JetStreamOn(t, nats)) // an operator creates the stream
	tokens, token := servicetest.TokensFile(t)
	addr := servicetest.FreeAddr(t)
	env := []string{
		"INFERGATE_NATS_URL=" + nats.ClientURL(),
		"INFERGATE_ADDR=" + addr,
		"INFERGATE_ADMIN_TOKENS_FILE=" + tokens,
		"INFERGATE_GATEWAY_URL=https://gw.example.com",
		// The upstream below is on loopback, which the default policy
		// refuses.
		"INFERGATE_UPSTREAM_ALLOW=127.0.0.0/8",
	}
	client := deploymentv1connect.NewDeploymentServiceClient(http.DefaultClient, "http://"+addr, servicetest.ClientOptions(token)...)
	p := servicetest.StartProcess(t, bin, env)
	servicetest.WaitFor(t, "service answers", func(ctx context.Context) error {
		_, err := client.ListDeployments(ctx, connect.NewRequest(&deploymentv1.ListDeploymentsRequest{Project: "team-a"}))
		return err
	})
	res, err := client.CreateDeployment(t.Context(), connect.NewRequest(&deploymentv1.CreateDeploymentRequest{
		Project: "team-a", Name: "llama", Model: "m", UpstreamUrl: "http://127.0.0.1:9",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Msg.GetDeployment().GetEndpointUrl(); got != "https://model-llama.team-a.gw.example.com" {
		t.Errorf("endpoint_url = %q", got)
	}
	_, err = client.CreateDeployment(t.Context(), connect.NewRequest(&deploymentv1.CreateDeploymentRequest{
		Project: "team-a", Name: "metadata", Model: "m", UpstreamUrl: "http://169.254.169.254/",
	}))
	servicetest.WantCode(t, err, connect.CodeInvalidArgument, "a link-local upstream")
	p.Stop()
}
