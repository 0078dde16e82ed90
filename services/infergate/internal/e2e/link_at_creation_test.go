package e2e_test

import (
	"slices"
	"testing"

	"connectrpc.com/connect"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/services/internal/command"
)

// TestCreateKeyLinkedAtCreation: over the Connect API, CreateKey with
// deployment_names creates the key and its links as one change, with a
// receipt and a task; the key works at once on every named deployment; a
// retry with the same Idempotency-Key appends nothing; an unknown
// deployment creates nothing at all.
func TestCreateKeyLinkedAtCreation(t *testing.T) {
	t.Parallel()
	s := e2eStart(t, t.TempDir())
	upstream := e2eDemoUpstream(t)
	const project = "linking"
	s.createDeployment(t, project, "alpha", upstream, true)
	s.createDeployment(t, project, "beta", upstream, true)
	s.waitDeployed(t, project, "alpha")
	s.waitDeployed(t, project, "beta")

	create := func(name string, deployments ...string) (*connect.Response[keyv1.CreateKeyResponse], error) {
		req := connect.NewRequest(&keyv1.CreateKeyRequest{Project: project, Name: name, DeploymentNames: deployments})
		req.Header().Set(command.IdempotencyHeader, "create-"+name)
		return s.keys.CreateKey(e2eCtx(t), req)
	}
	res, err := create("linked", "beta", "alpha", "beta")
	if err != nil {
		t.Fatalf("CreateKey with deployment_names: %v", err)
	}
	m := res.Msg
	if m.GetSecret() == "" || !slices.Equal(m.GetKey().GetDeploymentNames(), []string{"alpha", "beta"}) || len(m.GetTasks()) != 1 {
		t.Fatalf("CreateKey answered key %v, %d tasks, secret set %v", m.GetKey(), len(m.GetTasks()), m.GetSecret() != "")
	}
	s.waitApplied(t, m.GetPropagation(), true)
	for _, dep := range []string{"alpha", "beta"} {
		s.expectAnswer(t, e2eByHost, project, dep, e2eKey(m.GetSecret()))
		d, err := s.deps.GetDeployment(e2eCtx(t), connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: project, Name: dep}))
		if err != nil || !slices.Equal(d.Msg.GetDeployment().GetApiKeys(), []string{"linked"}) {
			t.Errorf("deployment %s after the create: %v, %v", dep, d, err)
		}
	}

	again, err := create("linked", "alpha", "beta")
	if err != nil {
		t.Fatalf("retried CreateKey: %v", err)
	}
	if a := again.Msg; !a.GetReplayed() || a.GetSecret() != "" || a.GetPropagation().GetSequence() != m.GetPropagation().GetSequence() ||
		!slices.Equal(a.GetKey().GetDeploymentNames(), []string{"alpha", "beta"}) || a.GetKey().GetId() != m.GetKey().GetId() {
		t.Errorf("retried CreateKey = %v; want the first answer (sequence %d, linked to alpha and beta), replayed, no secret", a, m.GetPropagation().GetSequence())
	}

	// An unknown deployment among the names: nothing is created.
	if _, err := create("orphan", "alpha", "missing"); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("CreateKey linking a missing deployment = %v, want not_found", err)
	}
	if _, err := s.keys.GetKey(e2eCtx(t), connect.NewRequest(&keyv1.GetKeyRequest{Project: project, Name: "orphan"})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("after a failed create, GetKey orphan = %v, want not_found", err)
	}
	if _, err := create("badname", "Not_A_Label"); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("CreateKey with a bad deployment name = %v, want invalid_argument", err)
	}
	d, err := s.deps.GetDeployment(e2eCtx(t), connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: project, Name: "alpha"}))
	if err != nil || !slices.Equal(d.Msg.GetDeployment().GetApiKeys(), []string{"linked"}) {
		t.Errorf("alpha after the failed creates: %v, %v", d, err)
	}
}
