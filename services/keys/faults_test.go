package keys_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/readmodel"
	"github.com/infergate/infergate/services/internal/servicetest"
	"github.com/infergate/infergate/services/keys"
)

// stalled serves the key service with a read model that never catches up:
// its projector never runs.
func (e *env) stalled(t *testing.T) keyv1connect.KeyServiceClient {
	t.Helper()
	url := e.b.Serve(t, func(opts ...connect.HandlerOption) map[string]http.Handler {
		path, h, err := keys.NewHandler(keys.Config{
			Events:                e.b.Events,
			Reads:                 e.b.Reads,
			Projector:             readmodel.NewProjector(e.b.Events, readmodel.NewMemory(), nil),
			ReadYourWritesTimeout: 20 * time.Millisecond,
			Log:                   e.b.Logger(),
		}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return map[string]http.Handler{path: h}
	})
	return keyv1connect.NewKeyServiceClient(http.DefaultClient, url, servicetest.ClientOptions(e.b.OpsToken)...)
}

// TestWritesSucceedWhileReadModelBehind: once the event is appended the
// call succeeds — CreateKey with its secret — and says the read model has
// not caught up, instead of failing.
func TestWritesSucceedWhileReadModelBehind(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		ctx := t.Context()
		behind := e.stalled(t)
		created, err := behind.CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{Project: "team-a", Name: "while-behind", Description: "d0"}))
		if err != nil {
			t.Fatalf("CreateKey with the read model behind: %v", err)
		}
		m := created.Msg
		if !apikey.WellFormed(m.GetSecret()) || m.GetKey().GetHint() != apikey.Hint(m.GetSecret()) {
			t.Errorf("CreateKey returned secret %q with hint %q; want a well-formed secret and its hint", m.GetSecret(), m.GetKey().GetHint())
		}
		if !m.GetReadModelBehind() || m.GetReplayed() {
			t.Errorf("read_model_behind = %v, replayed = %v; want true, false", m.GetReadModelBehind(), m.GetReplayed())
		}
		k := m.GetKey()
		if k.GetName() != "while-behind" || k.GetProject() != "team-a" || k.GetDescription() != "d0" || k.GetId() == "" || k.GetCreatedAt() == nil {
			t.Errorf("CreateKey answered %v", k)
		}

		// The read model the other handler waits on catches up, and then
		// shows the same key.
		var got *keyv1.Key
		servicetest.WaitFor(t, "the key in the read model", func(ctx context.Context) error {
			res, err := e.ops.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "while-behind"}))
			if err == nil {
				got = res.Msg.GetKey()
			}
			return err
		})
		if !proto.Equal(got, k) {
			t.Errorf("read model shows %v, CreateKey answered %v", got, k)
		}

		upd, err := behind.UpdateKey(ctx, connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "while-behind", Description: proto.String("d1")}))
		if err != nil || !upd.Msg.GetReadModelBehind() || upd.Msg.GetKey().GetDescription() != "d1" {
			t.Errorf("UpdateKey with the read model behind = %v, %v; want description d1 and read_model_behind", upd, err)
		}
		del, err := behind.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: "team-a", Name: "while-behind"}))
		if err != nil || !del.Msg.GetReadModelBehind() {
			t.Errorf("DeleteKey with the read model behind = %v, %v; want success and read_model_behind", del, err)
		}

		// A read model that keeps up says nothing.
		if c := e.create(t, "team-a", "kept-up"); c.GetReadModelBehind() {
			t.Error("read_model_behind set with the read model keeping up")
		}
	})
}

// TestWritesUnavailableWhileNATSDown: with NATS gone, writes answer
// unavailable at once and append nothing; reads from the read model keep
// working.
func TestWritesUnavailableWhileNATSDown(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, e *env) {
		e.create(t, "team-a", "before-outage")
		e.b.NATS.Shutdown()
		servicetest.WaitFor(t, "the connection to notice", func(context.Context) error {
			if e.b.Conn.IsConnected() {
				return errNotYet
			}
			return nil
		})
		// A guard, not a measurement: the calls must end well within it.
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		began := time.Now()
		_, err := e.ops.CreateKey(ctx, connect.NewRequest(&keyv1.CreateKeyRequest{Project: "team-a", Name: "during-outage"}))
		servicetest.WantCode(t, err, connect.CodeUnavailable, "CreateKey while NATS is down")
		t.Logf("CreateKey while NATS is down answered unavailable in %s", time.Since(began)) // reported, not asserted
		_, err = e.ops.UpdateKey(ctx, connect.NewRequest(&keyv1.UpdateKeyRequest{Project: "team-a", Name: "before-outage", Description: proto.String("x")}))
		servicetest.WantCode(t, err, connect.CodeUnavailable, "UpdateKey while NATS is down")
		_, err = e.ops.DeleteKey(ctx, connect.NewRequest(&keyv1.DeleteKeyRequest{Project: "team-a", Name: "before-outage"}))
		servicetest.WantCode(t, err, connect.CodeUnavailable, "DeleteKey while NATS is down")

		if _, err := e.ops.GetKey(ctx, connect.NewRequest(&keyv1.GetKeyRequest{Project: "team-a", Name: "before-outage"})); err != nil {
			t.Errorf("GetKey while NATS is down: %v", err)
		}
		list, err := e.ops.ListKeys(ctx, connect.NewRequest(&keyv1.ListKeysRequest{Project: "team-a"}))
		if err != nil || len(list.Msg.GetKeys()) != 1 {
			t.Errorf("ListKeys while NATS is down = %v, %v; want the one key", list, err)
		}
	})
}
