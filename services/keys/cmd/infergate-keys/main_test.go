package main_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"connectrpc.com/connect"

	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/pgtest"
	"github.com/infergate/infergate/services/internal/servicetest"
)

// TestProcess runs the real binary against NATS and PostgreSQL, configured
// by flags and environment, stops it with SIGTERM, and starts it again.
func TestProcess(t *testing.T) {
	t.Parallel()
	bin := servicetest.Build(t, "infergate-keys")
	nats := natstest.Start(t)
	natstest.EventStore(t, natstest.JetStreamOn(t, nats)) // an operator creates the stream
	tokens, token := servicetest.TokensFile(t)
	addr := servicetest.FreeAddr(t)
	env := []string{"INFERGATE_NATS_URL=" + nats.ClientURL(), "INFERGATE_DATABASE_URL=" + pgtest.URL(t)}
	args := []string{"--addr", addr, "--admin-tokens-file", tokens, "--database-schema", pgtest.Schema(t)}
	client := keyv1connect.NewKeyServiceClient(http.DefaultClient, "http://"+addr, servicetest.ClientOptions(token)...)
	list := func(ctx context.Context) error {
		_, err := client.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: "team-a"}))
		return err
	}

	p := servicetest.StartProcess(t, bin, env, args...)
	servicetest.WaitFor(t, "service answers", list)
	if _, err := client.CreateKey(t.Context(), connect.NewRequest(&keyv1.CreateKeyRequest{Project: "team-a", Name: "from-process"})); err != nil {
		t.Fatal(err)
	}
	p.Stop()

	// Started again, it resumes from its PostgreSQL checkpoint.
	p = servicetest.StartProcess(t, bin, env, args...)
	servicetest.WaitFor(t, "service answers after restart", list)
	res, err := client.GetKey(t.Context(), connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "from-process"}))
	if err != nil || res.Msg.GetKey().GetName() != "from-process" {
		t.Errorf("after restart: %v, %v", res, err)
	}
	p.Stop()
}

// TestNATSOutage runs the binary, stops NATS under it: writes answer
// unavailable, reads keep working, and SIGTERM still ends it with exit
// status 0.
func TestNATSOutage(t *testing.T) {
	t.Parallel()
	bin := servicetest.Build(t, "infergate-keys")
	nats := natstest.Start(t)
	natstest.EventStore(t, natstest.JetStreamOn(t, nats)) // an operator creates the stream
	tokens, token := servicetest.TokensFile(t)
	addr := servicetest.FreeAddr(t)
	env := []string{"INFERGATE_NATS_URL=" + nats.ClientURL()}
	p := servicetest.StartProcess(t, bin, env, "--addr", addr, "--admin-tokens-file", tokens)
	client := keyv1connect.NewKeyServiceClient(http.DefaultClient, "http://"+addr, servicetest.ClientOptions(token)...)
	servicetest.WaitFor(t, "service answers", func(ctx context.Context) error {
		_, err := client.CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{Project: "team-a", Name: "before-outage"}))
		return err
	})

	nats.Shutdown()
	servicetest.WaitFor(t, "writes to fail as unavailable", func(ctx context.Context) error {
		_, err := client.CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{Project: "team-a", Name: "during-outage"}))
		if connect.CodeOf(err) != connect.CodeUnavailable {
			return fmt.Errorf("CreateKey while NATS is down: %v, want unavailable", err)
		}
		return nil
	})
	res, err := client.GetKey(t.Context(), connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "before-outage"}))
	if err != nil || res.Msg.GetKey().GetName() != "before-outage" {
		t.Errorf("GetKey while NATS is down = %v, %v", res, err)
	}
	p.Stop()
}
