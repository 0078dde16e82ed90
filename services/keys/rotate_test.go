package keys_test

import (
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/command"
	"github.com/infergate/infergate/services/internal/servicetest"
)

func TestRotateKey(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		created := e.create(t, "team-a", "rotating")
		before := time.Now()
		res, err := e.ops.RotateKey(ctx, connect.NewRequest(&keyv1.RotateKeyRequest{Project: "team-a", Name: "rotating"}))
		if err != nil {
			t.Fatal(err)
		}
		r := res.Msg
		if !apikey.WellFormed(r.GetSecret()) || r.GetSecret() == created.GetSecret() || r.GetReplayed() {
			t.Fatalf("RotateKey: well-formed %v, same secret %v, replayed %v", apikey.WellFormed(r.GetSecret()), r.GetSecret() == created.GetSecret(), r.GetReplayed())
		}
		k := r.GetKey()
		if k.GetId() != created.GetKey().GetId() || k.GetName() != "rotating" || k.GetDescription() != "for rotating" {
			t.Errorf("the rotated key is %v, was %v", k, created.GetKey())
		}
		if k.GetHint() != apikey.Hint(r.GetSecret()) || k.GetPreviousHint() != created.GetKey().GetHint() {
			t.Errorf("hint %q, previous %q; want %q, %q", k.GetHint(), k.GetPreviousHint(), apikey.Hint(r.GetSecret()), created.GetKey().GetHint())
		}
		// The default grace period is 24 hours.
		end := r.GetOldSecretNotAfter().AsTime()
		if end.Before(before.Add(24*time.Hour-time.Second)) || end.After(time.Now().Add(24*time.Hour)) {
			t.Errorf("old secret stops at %v, want 24 h after the call", end)
		}
		if !k.GetPreviousSecretNotAfter().AsTime().Equal(end) {
			t.Errorf("key says the old secret stops at %v, the answer %v", k.GetPreviousSecretNotAfter().AsTime(), end)
		}
		got, err := e.ops.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "rotating"}))
		if err != nil {
			t.Fatal(err)
		}
		if g := got.Msg.GetKey(); g.GetHint() != k.GetHint() || g.GetPreviousHint() != k.GetPreviousHint() ||
			!g.GetPreviousSecretNotAfter().AsTime().Equal(end) || g.GetRotatedAt() == nil {
			t.Errorf("GetKey after the rotation: %v", g)
		}

		// No response, stream record, read-model row or log line holds
		// either secret.
		for _, secret := range []string{created.GetSecret(), r.GetSecret()} {
			j, _ := protojson.Marshal(got.Msg)
			for what, text := range map[string]string{
				"GetKey":     string(j),
				"stream":     e.b.DumpStream(t),
				"read model": e.b.DumpReadModel(t, "team-a"),
				"logs":       e.b.Logs.String(),
			} {
				if strings.Contains(text, secret) || strings.Contains(text, secret[3:20]) {
					t.Errorf("the %s contains a secret", what)
				}
			}
		}

		// Zero grace: the old secret stops at once.
		res, err = e.ops.RotateKey(ctx, connect.NewRequest(&keyv1.RotateKeyRequest{Project: "team-a", Name: "rotating", GracePeriod: durationpb.New(0)}))
		if err != nil {
			t.Fatal(err)
		}
		if end := res.Msg.GetOldSecretNotAfter().AsTime(); end.After(time.Now()) {
			t.Errorf("with no grace the old secret stops at %v, in the future", end)
		}
	})
}

func TestRotateKeyBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		e.create(t, "team-a", "rotating")
		expiring, err := e.ops.CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{
			Project: "team-a", Name: "expiring", ExpiresAt: timestamppb.New(time.Now().Add(time.Second)),
		}))
		if err != nil {
			t.Fatal(err)
		}
		for time.Now().Before(expiring.Msg.GetKey().GetExpiresAt().AsTime()) {
			time.Sleep(10 * time.Millisecond) // wait for the key to expire; not an assertion
		}
		before := e.lastSeq(t)
		tests := []struct {
			name  string
			req   *keyv1.RotateKeyRequest
			code  connect.Code
			field string
		}{
			{"unknown key", &keyv1.RotateKeyRequest{Project: "team-a", Name: "nobody-here"}, connect.CodeNotFound, "nobody-here"},
			{"bad name", &keyv1.RotateKeyRequest{Project: "team-a", Name: "ab"}, connect.CodeInvalidArgument, "name"},
			{"bad project", &keyv1.RotateKeyRequest{Project: "Team A", Name: "rotating"}, connect.CodeInvalidArgument, "project"},
			{"negative grace", &keyv1.RotateKeyRequest{Project: "team-a", Name: "rotating", GracePeriod: durationpb.New(-time.Second)}, connect.CodeInvalidArgument, "grace_period"},
			{"over-long grace", &keyv1.RotateKeyRequest{Project: "team-a", Name: "rotating", GracePeriod: durationpb.New(31 * 24 * time.Hour)}, connect.CodeInvalidArgument, "grace_period"},
			{"invalid duration", &keyv1.RotateKeyRequest{Project: "team-a", Name: "rotating", GracePeriod: &durationpb.Duration{Seconds: 1, Nanos: -1}}, connect.CodeInvalidArgument, "grace_period"},
			{"expired key", &keyv1.RotateKeyRequest{Project: "team-a", Name: "expiring"}, connect.CodeFailedPrecondition, "expired"},
		}
		for _, tt := range tests {
			_, err := e.ops.RotateKey(ctx, connect.NewRequest(tt.req))
			servicetest.WantCode(t, err, tt.code, tt.name)
			if err != nil && !strings.Contains(err.Error(), tt.field) {
				t.Errorf("%s: message %q does not name %q", tt.name, err, tt.field)
			}
		}
		// Another project's token learns nothing.
		_, err = e.client(e.b.OtherToken).RotateKey(ctx, connect.NewRequest(&keyv1.RotateKeyRequest{Project: "team-a", Name: "rotating"}))
		servicetest.WantCode(t, err, connect.CodePermissionDenied, "another project's token")
		if after := e.lastSeq(t); after != before {
			t.Errorf("stream grew from %d to %d on bad input", before, after)
		}
	})
}

// TestRotateKeyIdempotency: a retried rotation (same Idempotency-Key)
// mints no second secret; it is answered as the first was, without the
// secret.
func TestRotateKeyIdempotency(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		e.create(t, "team-a", "retried")
		rotate := func() *keyv1.RotateKeyResponse {
			req := connect.NewRequest(&keyv1.RotateKeyRequest{Project: "team-a", Name: "retried", GracePeriod: durationpb.New(time.Hour)})
			req.Header().Set(command.IdempotencyHeader, "rotate-1")
			res, err := e.ops.RotateKey(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			return res.Msg
		}
		first := rotate()
		seq := e.lastSeq(t)
		again := rotate()
		if !again.GetReplayed() || again.GetSecret() != "" {
			t.Errorf("retried rotation: replayed %v, secret given %v; want replayed and no secret", again.GetReplayed(), again.GetSecret() != "")
		}
		if again.GetKey().GetHint() != first.GetKey().GetHint() || !again.GetOldSecretNotAfter().AsTime().Equal(first.GetOldSecretNotAfter().AsTime()) {
			t.Errorf("retried rotation shows hint %q until %v; the first %q until %v", again.GetKey().GetHint(),
				again.GetOldSecretNotAfter().AsTime(), first.GetKey().GetHint(), first.GetOldSecretNotAfter().AsTime())
		}
		if after := e.lastSeq(t); after != seq {
			t.Errorf("a retried rotation appended: stream at %d, was %d", after, seq)
		}
	})
}
