package audit_test

import (
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/infergate/infergate/gen/infergate/audit/v1"
	deploymentv1 "github.com/infergate/infergate/gen/infergate/deployment/v1"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
)

// TestCheckAccessUsesTheExpiryValidAtT: a key whose expiry an update moved
// is judged, at each time, by the expiry it had then — expired between
// its old expiry and the update that removed it, linked after.
func TestCheckAccessUsesTheExpiryValidAtT(t *testing.T) {
	t.Parallel()
	e := start(t)
	ctx := t.Context()
	check := func(at time.Time) string {
		t.Helper()
		res, err := e.audit.CheckAccess(ctx, connect.NewRequest(&auditv1.CheckAccessRequest{Project: "team-a", Deployment: "exp", Key: "k-exp", At: timestamppb.New(at)}))
		e.must(t, err)
		return res.Msg.GetReason()
	}
	e.createKey(t, "k-exp", 0)
	_, err := e.deps.CreateDeployment(ctx, connect.NewRequest(&deploymentv1.CreateDeploymentRequest{
		Project: "team-a", Name: "exp", Model: "m", UpstreamUrl: e.upstream, AuthEnabled: true, ApiKeys: []string{"k-exp"},
	}))
	e.must(t, err)
	e.waitDeployed(t, "exp")

	// An expiry a moment ahead, which then passes (setup, not an
	// assertion: every check below names its own time).
	expiry := time.Now().Add(50 * time.Millisecond)
	_, err = e.keys.UpdateKey(ctx, connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "k-exp", ExpiresAt: timestamppb.New(expiry)}))
	e.must(t, err)
	for time.Now().Before(expiry.Add(20 * time.Millisecond)) {
		time.Sleep(10 * time.Millisecond)
	}
	expired := time.Now()
	time.Sleep(5 * time.Millisecond)
	_, err = e.keys.UpdateKey(ctx, connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "k-exp", NeverExpires: true}))
	e.must(t, err)
	time.Sleep(5 * time.Millisecond)
	after := time.Now()

	for _, tt := range []struct {
		at   time.Time
		want string
	}{
		{expiry.Add(-time.Millisecond), "linked"},
		{expired, "expired"},
		{after, "linked"},
		{after.Add(1000 * time.Hour), "linked"},
	} {
		if got := check(tt.at); got != tt.want {
			t.Errorf("k-exp at %s: %s, want %s", tt.at.Format(time.StampMilli), got, tt.want)
		}
	}
	state, err := e.audit.GetStateAt(ctx, connect.NewRequest(&auditv1.GetStateAtRequest{Project: "team-a", At: timestamppb.New(expired)}))
	e.must(t, err)
	for _, k := range state.Msg.GetKeys() {
		if k.GetName() == "k-exp" && (!k.GetExpired() || !k.GetExpiresAt().AsTime().Equal(expiry)) {
			t.Errorf("state at %s: %v, want expired at %s", expired.Format(time.StampMilli), k, expiry)
		}
	}
}
