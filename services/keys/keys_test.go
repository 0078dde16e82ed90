package keys_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/command"
	"github.com/infergate/infergate/services/internal/servicetest"
	"github.com/infergate/infergate/services/keys"
)

type env struct {
	b   *servicetest.Backend
	url string
	ops keyv1connect.KeyServiceClient
}

func start(t *testing.T, kind string) *env {
	t.Helper()
	b := servicetest.New(t, kind)
	e := &env{b: b}
	e.serve(t)
	return e
}

// serve (re)builds the service on the backend's current read model.
func (e *env) serve(t *testing.T) {
	t.Helper()
	e.url = e.b.Serve(t, func(opts ...connect.HandlerOption) map[string]http.Handler {
		path, h, err := keys.NewHandler(keys.Config{
			Events:    e.b.Events,
			Reads:     e.b.Reads,
			Projector: e.b.Projector,
			Log:       e.b.Logger(),
		}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]http.Handler{path: h}
	})
	e.ops = e.client(e.b.OpsToken)
}

func (e *env) client(token string, opts ...connect.ClientOption) keyv1connect.KeyServiceClient {
	return keyv1connect.NewKeyServiceClient(http.DefaultClient, e.url, append(servicetest.ClientOptions(token), opts...)...)
}

func (e *env) create(t *testing.T, project, name string) *keyv1.CreateKeyResponse {
	t.Helper()
	res, err := e.ops.CreateKey(t.Context(), connect.NewRequest(&keyv1.CreateKeyRequest{Project: project, Name: name, Description: "for " + name}))
	if err != nil {
		t.Fatalf("CreateKey(%s/%s): %v", project, name, err)
	}
	return res.Msg
}

func (e *env) lastSeq(t *testing.T) uint64 {
	t.Helper()
	seq, err := e.b.Events.LastSequence(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func forEachKind(t *testing.T, f func(t *testing.T, e *env)) {
	servicetest.EachKind(t, func(t *testing.T, kind string) { f(t, start(t, kind)) })
}

func TestKeyLifecycle(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		expires := time.Now().Add(24 * time.Hour).Truncate(time.Second)
		res, err := e.ops.CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{
			Project: "team-a", Name: "ci-runner", Description: "CI", ExpiresAt: timestamppb.New(expires),
		}))
		if err != nil {
			t.Fatal(err)
		}
		secret, key := res.Msg.GetSecret(), res.Msg.GetKey()
		if !apikey.WellFormed(secret) {
			t.Errorf("secret %q is not well-formed", secret)
		}
		if key.GetName() != "ci-runner" || key.GetProject() != "team-a" || key.GetDescription() != "CI" ||
			!key.GetExpiresAt().AsTime().Equal(expires) || key.GetCreatedAt() == nil || key.GetId() == "" ||
			key.GetHint() != apikey.Hint(secret) || len(key.GetDeploymentNames()) != 0 {
			t.Errorf("created key = %v", key)
		}

		got, err := e.ops.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "ci-runner"}))
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got.Msg.GetKey(), key) {
			t.Errorf("GetKey = %v, want %v", got.Msg.GetKey(), key)
		}

		upd, err := e.ops.UpdateKey(ctx, connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "ci-runner", Description: proto.String("nightly CI")}))
		if err != nil {
			t.Fatal(err)
		}
		if upd.Msg.GetKey().GetDescription() != "nightly CI" {
			t.Errorf("UpdateKey = %v", upd.Msg.GetKey())
		}
		got, _ = e.ops.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "ci-runner"}))
		if got.Msg.GetKey().GetDescription() != "nightly CI" {
			t.Errorf("GetKey after update: %v", got.Msg.GetKey())
		}

		// Expiry: in the past is refused and nothing changes; a later one
		// and never are kept, with the description left alone.
		_, err = e.ops.UpdateKey(ctx, connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "ci-runner",
			Description: proto.String("not this"), ExpiresAt: timestamppb.New(time.Now().Add(-time.Hour))}))
		servicetest.WantCode(t, err, connect.CodeInvalidArgument, "UpdateKey with a past expiry")
		_, err = e.ops.UpdateKey(ctx, connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "ci-runner",
			ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)), NeverExpires: true}))
		servicetest.WantCode(t, err, connect.CodeInvalidArgument, "UpdateKey with expires_at and never_expires")
		later := expires.Add(24 * time.Hour)
		upd, err = e.ops.UpdateKey(ctx, connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "ci-runner", ExpiresAt: timestamppb.New(later)}))
		if err != nil || upd.Msg.GetKey().GetDescription() != "nightly CI" || !upd.Msg.GetKey().GetExpiresAt().AsTime().Equal(later) {
			t.Errorf("UpdateKey expires_at = %v, %v", upd.Msg.GetKey(), err)
		}
		upd, err = e.ops.UpdateKey(ctx, connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "ci-runner", NeverExpires: true}))
		if err != nil || upd.Msg.GetKey().GetExpiresAt() != nil {
			t.Errorf("UpdateKey never_expires = %v, %v", upd.Msg.GetKey(), err)
		}
		got, _ = e.ops.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "ci-runner"}))
		if got.Msg.GetKey().GetExpiresAt() != nil || got.Msg.GetKey().GetDescription() != "nightly CI" {
			t.Errorf("GetKey after never_expires: %v", got.Msg.GetKey())
		}

		del, err := e.ops.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: "team-a", Name: "ci-runner"}))
		if err != nil {
			t.Fatal(err)
		}
		if p := del.Msg.GetPropagation(); p.GetSequence() != e.lastSeq(t) || p.GetConfirmed() {
			t.Errorf("DeleteKey propagation = %v; want the append's sequence, unconfirmed", p)
		}
		_, err = e.ops.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "ci-runner"}))
		servicetest.WantCode(t, err, connect.CodeNotFound, "GetKey after delete")
		_, err = e.ops.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: "team-a", Name: "ci-runner"}))
		servicetest.WantCode(t, err, connect.CodeNotFound, "DeleteKey twice")
		_, err = e.ops.UpdateKey(ctx, connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "ci-runner"}))
		servicetest.WantCode(t, err, connect.CodeNotFound, "UpdateKey after delete")

		// The name can be used again, for a different key.
		again := e.create(t, "team-a", "ci-runner")
		if again.GetKey().GetId() == key.GetId() || again.GetSecret() == secret {
			t.Error("re-created key has the old id or secret")
		}
	})
}

func TestListKeysPages(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		var want []string
		for i := range 7 {
			name := fmt.Sprintf("key-%02d", 6-i) // created out of order
			e.create(t, "team-a", name)
			want = append([]string{name}, want...)
		}
		e.create(t, "team-b", "key-other")

		var got []string
		token := ""
		pages := 0
		for {
			res, err := e.ops.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: "team-a", PageSize: 3, PageToken: token}))
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, k := range res.Msg.GetKeys() {
				got = append(got, k.GetName())
			}
			if token = res.Msg.GetNextPageToken(); token == "" {
				break
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) || pages != 3 {
			t.Errorf("listed %v in %d pages, want %v in 3", got, pages, want)
		}
		_, err := e.ops.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: "team-a", PageToken: "!!!"}))
		servicetest.WantCode(t, err, connect.CodeInvalidArgument, "bad page token")
		_, err = e.ops.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: "team-a", PageSize: 1001}))
		servicetest.WantCode(t, err, connect.CodeInvalidArgument, "page size too big")
	})
}

func TestKeyValidationAppendsNothing(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		e.create(t, "team-a", "taken")
		before := e.lastSeq(t)
		past := timestamppb.New(time.Now().Add(-time.Hour))
		tests := []struct {
			name  string
			req   *keyv1.CreateKeyRequest
			code  connect.Code
			field string
		}{
			{"no project", &keyv1.CreateKeyRequest{Name: "abcd"}, connect.CodeInvalidArgument, "project"},
			{"bad project", &keyv1.CreateKeyRequest{Project: "Team A", Name: "abcd"}, connect.CodeInvalidArgument, "project"},
			{"short name", &keyv1.CreateKeyRequest{Project: "team-a", Name: "abc"}, connect.CodeInvalidArgument, "name"},
			{"subject token in name", &keyv1.CreateKeyRequest{Project: "team-a", Name: "ab.>"}, connect.CodeInvalidArgument, "name"},
			{"long description", &keyv1.CreateKeyRequest{Project: "team-a", Name: "abcd", Description: strings.Repeat("x", 301)}, connect.CodeInvalidArgument, "description"},
			{"expiry in the past", &keyv1.CreateKeyRequest{Project: "team-a", Name: "abcd", ExpiresAt: past}, connect.CodeInvalidArgument, "expires_at"},
			{"duplicate", &keyv1.CreateKeyRequest{Project: "team-a", Name: "taken"}, connect.CodeAlreadyExists, "taken"},
		}
		for _, tt := range tests {
			_, err := e.ops.CreateKey(ctx, connect.NewRequest(tt.req))
			servicetest.WantCode(t, err, tt.code, tt.name)
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("%s: message %q does not name %q", tt.name, err, tt.field)
			}
		}
		_, err := e.ops.UpdateKey(ctx, connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "taken", Description: proto.String(strings.Repeat("x", 301))}))
		servicetest.WantCode(t, err, connect.CodeInvalidArgument, "update with a long description")
		_, err = e.ops.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "x"}))
		servicetest.WantCode(t, err, connect.CodeInvalidArgument, "get with a bad name")
		_, err = e.ops.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: "team-a", Name: "nope-nope"}))
		servicetest.WantCode(t, err, connect.CodeNotFound, "delete unknown")
		if after := e.lastSeq(t); after != before {
			t.Errorf("stream grew from %d to %d on bad input", before, after)
		}
	})
}

func TestSecretAppearsOnlyInCreateResponse(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		created := e.create(t, "team-a", "secret-keeper")
		secret := created.GetSecret()
		var responses []proto.Message
		got, err := e.ops.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "secret-keeper"}))
		if err != nil {
			t.Fatal(err)
		}
		list, err := e.ops.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: "team-a"}))
		if err != nil {
			t.Fatal(err)
		}
		upd, err := e.ops.UpdateKey(ctx, connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "secret-keeper", Description: proto.String("d")}))
		if err != nil {
			t.Fatal(err)
		}
		responses = append(responses, created.GetKey(), got.Msg, list.Msg, upd.Msg)
		// The created key's own fields (everything but the secret) too.
		for _, r := range responses {
			j, _ := protojson.Marshal(r)
			if strings.Contains(string(j), secret) || strings.Contains(string(j), secret[3:20]) {
				t.Errorf("a response contains the secret: %s", j)
			}
		}
		for what, text := range map[string]string{
			"stream":     e.b.DumpStream(t),
			"read model": e.b.DumpReadModel(t, "team-a"),
			"logs":       e.b.Logs.String(),
		} {
			if text == "" {
				t.Errorf("%s dump is empty: the check would prove nothing", what)
			}
			if strings.Contains(text, secret) || strings.Contains(text, secret[3:20]) {
				t.Errorf("the %s contains the secret", what)
			}
		}
	})
}

func TestConcurrentCreatesOneWins(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		const n = 20
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			codes = map[connect.Code]int{}
			ok    int
		)
		start := make(chan struct{})
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := e.ops.CreateKey(t.Context(), connect.NewRequest(&keyv1.CreateKeyRequest{Project: "team-a", Name: "contended"}))
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					ok++
				} else {
					codes[connect.CodeOf(err)]++
				}
			}()
		}
		close(start)
		wg.Wait()
		if ok != 1 || codes[connect.CodeAlreadyExists] != n-1 {
			t.Fatalf("%d succeeded, errors %v; want 1 and %d already_exists", ok, codes, n-1)
		}
		if seq := e.lastSeq(t); seq != 1 {
			t.Errorf("stream holds %d messages, want 1", seq)
		}
	})
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		req := connect.NewRequest(&keyv1.CreateKeyRequest{Project: "team-a", Name: "retried"})
		req.Header().Set(command.IdempotencyHeader, "req-1")
		first, err := e.ops.CreateKey(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		// The same request again is answered as the first was, but the
		// secret was shown once and is stored nowhere.
		retry := connect.NewRequest(&keyv1.CreateKeyRequest{Project: "team-a", Name: "retried"})
		retry.Header().Set(command.IdempotencyHeader, "req-1")
		again, err := e.ops.CreateKey(ctx, retry)
		if err != nil {
			t.Fatalf("retried create: %v", err)
		}
		if !again.Msg.GetReplayed() || again.Msg.GetSecret() != "" {
			t.Errorf("retried create: replayed %v, secret %q; want replayed and no secret", again.Msg.GetReplayed(), again.Msg.GetSecret())
		}
		if !proto.Equal(again.Msg.GetKey(), first.Msg.GetKey()) {
			t.Errorf("retried create shows %v, the first call %v", again.Msg.GetKey(), first.Msg.GetKey())
		}
		// Another request for the name is refused.
		_, err = e.ops.CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{Project: "team-a", Name: "retried"}))
		servicetest.WantCode(t, err, connect.CodeAlreadyExists, "another create of the name")

		for range 3 {
			upd := connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "retried", Description: proto.String("v1")})
			upd.Header().Set(command.IdempotencyHeader, "req-2")
			res, err := e.ops.UpdateKey(ctx, upd)
			if err != nil || res.Msg.GetKey().GetDescription() != "v1" {
				t.Fatalf("UpdateKey = %v, %v", res, err)
			}
		}
		// A later update with the same idempotency key is the same request:
		// not applied again.
		stale := connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "retried", Description: proto.String("v1")})
		stale.Header().Set(command.IdempotencyHeader, "req-2")
		if _, err := e.ops.UpdateKey(ctx, stale); err != nil {
			t.Fatal(err)
		}
		if seq := e.lastSeq(t); seq != 2 {
			t.Errorf("stream holds %d messages, want 2 (one create, one update)", seq)
		}
	})
}

func TestRestartKeepsAnswers(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		for _, name := range []string{"alpha", "bravo", "charlie"} {
			e.create(t, "team-a", name)
		}
		if _, err := e.ops.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: "team-a", Name: "bravo"})); err != nil {
			t.Fatal(err)
		}
		before, err := e.ops.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: "team-a"}))
		if err != nil {
			t.Fatal(err)
		}
		e.b.Restart(t)
		e.serve(t)
		after, err := e.ops.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: "team-a"}))
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(before.Msg, after.Msg) || len(after.Msg.GetKeys()) != 2 {
			t.Errorf("after restart: %v\nbefore: %v", after.Msg, before.Msg)
		}
		// And it keeps working.
		e.create(t, "team-a", "delta")
	})
}

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	e := start(t, servicetest.Memory)
	ctx := t.Context()
	e.create(t, "team-a", "exists")
	before := e.lastSeq(t)

	_, err := e.client("").GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "exists"}))
	servicetest.WantCode(t, err, connect.CodeUnauthenticated, "no token")
	_, err = e.client("igadm_wrong").CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{Project: "team-a", Name: "abcd"}))
	servicetest.WantCode(t, err, connect.CodeUnauthenticated, "wrong token")

	other := e.client(e.b.OtherToken)
	_, errExists := other.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "exists"}))
	_, errMissing := other.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "missing"}))
	servicetest.WantCode(t, errExists, connect.CodePermissionDenied, "other project, existing key")
	servicetest.WantCode(t, errMissing, connect.CodePermissionDenied, "other project, missing key")
	if errExists.Error() != errMissing.Error() {
		t.Errorf("errors differ, revealing whether the key exists: %q vs %q", errExists, errMissing)
	}
	_, err = other.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: "team-a", Name: "exists"}))
	servicetest.WantCode(t, err, connect.CodePermissionDenied, "delete in another project")
	_, err = other.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: "team-a"}))
	servicetest.WantCode(t, err, connect.CodePermissionDenied, "list another project")
	if e.lastSeq(t) != before {
		t.Error("a refused call appended events")
	}

	// A scoped token works on its own project, and its name is the actor.
	team := e.client(e.b.TeamToken)
	if _, err := team.CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{Project: "team-a", Name: "team-made"})); err != nil {
		t.Fatal(err)
	}
	recs, _, err := e.b.Events.Load(ctx, keyAggregate("team-a", "team-made"))
	if err != nil || len(recs) != 1 || recs[0].Events[0].GetActor() != "team-a-admin" {
		t.Errorf("actor of the event = %v, %v; want team-a-admin", recs, err)
	}
}

func TestGRPCAndGRPCWeb(t *testing.T) {
	t.Parallel()
	e := start(t, servicetest.Memory)
	e.create(t, "team-a", "via-connect")
	for name, opt := range map[string]connect.ClientOption{"grpc": connect.WithGRPC(), "grpc-web": connect.WithGRPCWeb()} {
		c := keyv1connect.NewKeyServiceClient(servicetest.H2CClient(), e.url, append(servicetest.ClientOptions(e.b.OpsToken), opt)...)
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		res, err := c.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "via-connect"}))
		cancel()
		if err != nil || res.Msg.GetKey().GetName() != "via-connect" {
			t.Errorf("%s GetKey = %v, %v", name, res, err)
		}
		_, err = c.GetKey(t.Context(), connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "missing"}))
		if connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("%s GetKey missing: %v", name, err)
		}
	}
}
