package e2e_test

import (
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/infergate/infergate/gen/infergate/audit/v1"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	propagationv1 "github.com/infergate/infergate/gen/infergate/propagation/v1"
	"github.com/infergate/infergate/services/infergate/internal/devstack"
	"github.com/infergate/infergate/services/internal/apikey"
)

// TestKeyRotationThroughGateway is issue 16's rotation story through the
// one-process stack: a rotated key's old and new secrets both get in
// during the grace period; once the gateway's clock passes its end, only
// the new one does — with no further event; a rotation with no grace
// stops the old secret at once. The key keeps its links. The audit shows
// the rotation and answers CheckAccess for either secret by its hint.
func TestKeyRotationThroughGateway(t *testing.T) {
	t.Parallel()
	// The gateway's clock runs offset ahead of the real one when a test
	// step moves it; the control plane keeps the real clock.
	var offset atomic.Int64
	gwNow := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	s := e2eStart(t, t.TempDir(), func(c *devstack.Config) { c.GatewayNow = gwNow })
	ctx := e2eCtx(t)
	const project = "team-rotate"

	_, oldSecret := s.createKey(t, project, "svc-key", time.Time{})
	s.createDeployment(t, project, "chat", e2eDemoUpstream(t), true, "svc-key")
	s.waitDeployed(t, project, "chat")
	s.expectAnswer(t, e2eByHost, project, "chat", e2eKey(oldSecret))

	// Bad input changes nothing.
	for _, req := range []*keyv1.RotateKeyRequest{
		{Project: project, Name: "no-such-key"},
		{Project: project, Name: "svc-key", GracePeriod: durationpb.New(-time.Minute)},
		{Project: project, Name: "svc-key", GracePeriod: durationpb.New(31 * 24 * time.Hour)},
	} {
		if _, err := s.keys.RotateKey(ctx, connect.NewRequest(req)); err == nil {
			t.Errorf("RotateKey(%v) succeeded", req)
		}
	}
	s.expectAnswer(t, e2eByPath, project, "chat", e2eKey(oldSecret))

	const grace = time.Hour
	res, err := s.keys.RotateKey(ctx, connect.NewRequest(&keyv1.RotateKeyRequest{Project: project, Name: "svc-key", GracePeriod: durationpb.New(grace)}))
	if err != nil {
		t.Fatal(err)
	}
	newSecret := res.Msg.GetSecret()
	if !apikey.WellFormed(newSecret) || newSecret == oldSecret {
		t.Fatalf("RotateKey gave no new secret")
	}
	// The receipt: the stack's one gateway applied the rotation before the
	// call returned.
	s.waitApplied(t, res.Msg.GetPropagation(), true)
	notAfter := res.Msg.GetOldSecretNotAfter().AsTime()
	if k := res.Msg.GetKey(); k.GetName() != "svc-key" || strings.Join(k.GetDeploymentNames(), ",") != "chat" {
		t.Errorf("the rotated key: %v; want its name and its link to chat kept", k)
	}
	oldHint, newHint := apikey.Hint(oldSecret), apikey.Hint(newSecret)

	// During the grace period both secrets get in, by either header.
	s.expectAnswer(t, e2eByHost, project, "chat", e2eKey(oldSecret))
	s.expectAnswer(t, e2eByPath, project, "chat", e2eBearer(oldSecret))
	s.expectAnswer(t, e2eByHost, project, "chat", e2eKey(newSecret))

	// The audit: the history shows the rotation, with hints only.
	events, err := s.audit.ListEvents(ctx, connect.NewRequest(&auditv1.ListEventsRequest{Project: project, Key: "svc-key", Types: []string{"KeyRotated"}}))
	if err != nil {
		t.Fatal(err)
	}
	if ev := events.Msg.GetEvents(); len(ev) != 1 || !strings.Contains(ev[0].GetSummary(), newHint) ||
		!strings.Contains(ev[0].GetSummary(), oldHint) || ev[0].GetDetails()["old_secret_not_after"] != notAfter.UTC().Format(time.RFC3339) {
		t.Errorf("audit events for the rotation: %v", ev)
	}
	// CheckAccess, by hint, now and after the grace period.
	check := func(hint string, at time.Time) string {
		t.Helper()
		r, err := s.audit.CheckAccess(ctx, connect.NewRequest(&auditv1.CheckAccessRequest{
			Project: project, Deployment: "chat", Key: "svc-key", SecretHint: hint, At: timestamppb.New(at),
		}))
		if err != nil {
			t.Fatalf("CheckAccess(%s at %v): %v", hint, at, err)
		}
		return r.Msg.GetReason()
	}
	now := time.Now()
	for _, c := range []struct {
		hint string
		at   time.Time
		want string
	}{
		{oldHint, now, "linked"},
		{newHint, now, "linked"},
		{"", now, "linked"}, // the current secret
		{oldHint, notAfter, "rotated"},
		{newHint, notAfter, "linked"},
		{"ig_…none", now, "unknown_key"},
	} {
		if got := check(c.hint, c.at); got != c.want {
			t.Errorf("CheckAccess(secret %q at %v): %s, want %s", c.hint, c.at, got, c.want)
		}
	}

	// The gateway's clock passes the end of the grace period: the old
	// secret stops there, with no event; the new one works on. (The jump
	// also passes the staleness bound until the gateway's next poll, so
	// wait for the condition rather than the first answer.)
	offset.Store(int64(grace + time.Second))
	deadline := time.Now().Add(e2eTimeout)
	for {
		res, body := s.chat(t, e2eByHost, project, "chat", e2eKey(oldSecret))
		if res.StatusCode == http.StatusUnauthorized {
			e2eCheckError(t, "the old secret after its grace", res, body, http.StatusUnauthorized, "invalid_api_key")
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the old secret still gets %d after its grace period: %s", res.StatusCode, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.expectAnswer(t, e2eByHost, project, "chat", e2eKey(newSecret))
	s.expectRefused(t, e2eByPath, project, "chat", e2eBearer(oldSecret), "invalid_api_key")

	// A rotation with no grace: the secret it replaces stops at once, at
	// every clock.
	offset.Store(0)
	res, err = s.keys.RotateKey(ctx, connect.NewRequest(&keyv1.RotateKeyRequest{Project: project, Name: "svc-key", GracePeriod: durationpb.New(0)}))
	if err != nil {
		t.Fatal(err)
	}
	// The clock jumps may have left the gateway's last receipt saying it
	// refuses as stale: confirmed all the same, applied or not yet.
	if !res.Msg.GetPropagation().GetConfirmed() {
		t.Errorf("rotation with no grace: propagation %v, want confirmed", res.Msg.GetPropagation())
	}
	s.waitApplied(t, res.Msg.GetPropagation(), false)
	third := res.Msg.GetSecret()
	for {
		// After the clock went back, the gateway refuses as stale until
		// it has polled the stream again at the new time.
		res, body := s.chat(t, e2eByHost, project, "chat", e2eKey(third))
		if res.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the third secret gets %d: %s", res.StatusCode, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.expectAnswer(t, e2eByHost, project, "chat", e2eKey(third))
	s.expectRefused(t, e2eByHost, project, "chat", e2eKey(newSecret), "invalid_api_key")
	s.expectRefused(t, e2eByHost, project, "chat", e2eKey(oldSecret), "invalid_api_key")
	if got := check(newHint, time.Now()); got != "rotated" {
		t.Errorf("CheckAccess for the secret a rotation with no grace replaced: %s, want rotated", got)
	}

	// The REST surface rotates the same way (docs/rest.md).
	api := restClient{t: t, base: s.APIURL, auth: "Bearer " + s.Token, client: s.client}
	path := "/cloud/v3/inference/" + project + "/api_keys/svc-key/rotate"
	api.fails("POST", path, map[string]any{"grace_period": "-60s"}, http.StatusBadRequest, 3, "grace_period")
	api.fails("POST", "/cloud/v3/inference/"+project+"/api_keys/no-such-key/rotate", map[string]any{}, http.StatusNotFound, 5, "no-such-key")
	out := api.ok("POST", path, map[string]any{"grace_period": "0s"})
	fourth, _ := out["secret"].(string)
	if !apikey.WellFormed(fourth) {
		t.Fatalf("REST rotation answered no secret: %v", out)
	}
	prop, _ := out["propagation"].(map[string]any)
	seqText, _ := prop["sequence"].(string)
	seq, err := strconv.ParseUint(seqText, 10, 64)
	if err != nil {
		t.Fatalf("REST rotation: propagation %v", out["propagation"])
	}
	s.waitApplied(t, &propagationv1.Propagation{Sequence: seq}, false)
	s.expectAnswer(t, e2eByHost, project, "chat", e2eKey(fourth))
	s.expectRefused(t, e2eByHost, project, "chat", e2eKey(third), "invalid_api_key")
}
