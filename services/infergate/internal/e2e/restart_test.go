package e2e_test

import (
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
)

// TestRestartKeepsKeysAndDeployments stops the stack and starts it again
// on the same data dir: the stream is the source of truth, so keys,
// deployments, links and deletions are all there, and the new gateway
// lets the key in as soon as the stack says it is ready.
func TestRestartKeepsKeysAndDeployments(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	upstream := e2eDemoUpstream(t)
	const project, dep = "durable", "kept"

	first := e2eStart(t, dataDir)
	_, secret := first.createKey(t, project, "kept-key", time.Time{})
	_, goneSecret := first.createKey(t, project, "gone-key", time.Time{})
	first.createDeployment(t, project, dep, upstream, true, "kept-key", "gone-key")
	first.waitDeployed(t, project, dep)
	del, err := first.keys.DeleteKey(e2eCtx(t), connect.NewRequest(&keyv1.DeleteKeyRequest{Project: project, Name: "gone-key"}))
	if err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	first.waitApplied(t, del.Msg.GetPropagation(), false)
	first.expectAnswer(t, e2eByHost, project, dep, e2eKey(secret))
	first.expectRefused(t, e2eByHost, project, dep, e2eKey(goneSecret), "invalid_api_key")
	first.stop()

	second := e2eStart(t, dataDir)
	if second.Token != first.Token {
		t.Error("the restarted stack made a new admin token instead of keeping the one in the data dir")
	}
	// Ready means the gateway has replayed the whole stream: no waiting.
	second.expectAnswer(t, e2eByHost, project, dep, e2eKey(secret))
	second.expectAnswer(t, e2eByPath, project, dep, e2eKey(secret))
	second.expectRefused(t, e2eByPath, project, dep, e2eKey(goneSecret), "invalid_api_key")
	second.expectRefused(t, e2eByHost, project, dep, nil, "missing_api_key")

	ctx := e2eCtx(t)
	keys, err := second.keys.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: project}))
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	if len(keys.Msg.GetKeys()) != 1 || keys.Msg.GetKeys()[0].GetName() != "kept-key" ||
		!slices.Equal(keys.Msg.GetKeys()[0].GetDeploymentNames(), []string{dep}) {
		t.Errorf("after the restart the keys are %v, want kept-key linked to %s", keys.Msg.GetKeys(), dep)
	}
	got, err := second.deps.GetDeployment(ctx, connect.NewRequest(&deploymentv1.GetDeploymentRequest{Project: project, Name: dep}))
	if err != nil {
		t.Fatalf("GetDeployment: %v", err)
	}
	d := got.Msg.GetDeployment()
	if d.GetStatus() != deploymentv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED || !d.GetAuthEnabled() ||
		!slices.Equal(d.GetApiKeys(), []string{"kept-key"}) || d.GetUpstreamUrl() != upstream {
		t.Errorf("after the restart the deployment is %v", d)
	}
	if want := "http://" + second.hostName(project, dep); d.GetEndpointUrl() != want {
		t.Errorf("endpoint_url %q, want the new gateway's %q", d.GetEndpointUrl(), want)
	}
}
